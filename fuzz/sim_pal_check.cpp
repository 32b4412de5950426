// SPDX-License-Identifier: MIT
// Checks SimPal's own semantics, one platform call at a time: what the
// fuzzer's comparison with the kernel (fuzz_equivalence) reaches only
// through the library.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "support/sim_pal.hpp"

namespace {

using wxa::Access;
using wxa::Errc;
using wxa::SyscallCounts;
using wxa::test::SimPal;
using wxa::test::SimVma;

int g_failures = 0;

void check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "SimPal check failed: %s\n", what);
  ++g_failures;
}

std::vector<SimVma> maps_of(const SimPal& sim) {
  std::vector<SimVma> out;
  sim.maps(out);
  return out;
}

// SimPal's own semantics are checked whatever this host offers: SimPal
// starts with the host's capabilities, and the checks switch them off one
// at a time.
void grant_all(SimPal& sim) {
  wxa::detail::Capabilities& caps = sim.capabilities_mut();
  caps.anon_exec = caps.shared_memory = caps.shared_exec = true;
  caps.shared_write = true;
}

void anonymous(SimPal& sim, std::size_t ps) {
  SyscallCounts n;
  auto r = sim.reserve(4 * ps, 0, 0, n);
  check(bool(r) && n.mmap == 1, "reserve");
  std::byte* p = *r;
  check(maps_of(sim).size() == 1 &&
            std::strcmp(maps_of(sim)[0].perms, "---p") == 0,
        "a reservation is one inaccessible private mapping");
  check(bool(sim.protect(p + ps, ps, Access::read_write, n)),
        "protect read_write");
  std::memset(p + ps, 0x5A, ps);
  check(maps_of(sim).size() == 3, "protecting the middle splits it in three");
  check(bool(sim.protect(p + ps, ps, Access::none, n)), "protect none");
  check(maps_of(sim).size() == 1, "the same protection again merges");
  check(bool(sim.decommit(p + ps, ps, n)) && p[ps] == std::byte{0},
        "decommit zeroes");
  check(bool(sim.protect(p, ps, Access::read_execute, n)),
        "anonymous read_execute where allowed");
  sim.capabilities_mut().anon_exec = false;
  auto denied = sim.protect(p + ps, ps, Access::read_execute, n);
  check(!denied && denied.error().code() == Errc::permission_denied,
        "anonymous read_execute refused without anon_exec");
  grant_all(sim);
  auto outside =
      sim.protect(p + 5 * ps, ps, Access::read, n);  // past the guard
  check(!outside && outside.error().code() == Errc::out_of_memory,
        "protect past the reservation: ENOMEM");
  auto bent = sim.protect(p + 1, ps, Access::read, n);
  check(!bent && bent.error().code() == Errc::invalid_argument,
        "protect of an unaligned address: EINVAL");
  check(bool(sim.unmap(p, 4 * ps, n)) && sim.reserved_pages() == 0, "unmap");
}

void shared(SimPal& sim, std::size_t ps) {
  SyscallCounts n;
  auto h = sim.create_shared(2 * ps, "check", n);
  check(bool(h) && sim.shared_objects() == 1, "create_shared");
  auto rx = sim.reserve_view(*h, 2 * ps, 0, 0, Access::read_execute, n);
  auto rw = sim.reserve_view(*h, 2 * ps, 0, 0, Access::read_write, n);
  check(bool(rx) && bool(rw), "reserve_view");
  // Written through a writable view, seen through the executable one once
  // that is mapped.
  check(bool(sim.map_shared(*rw, 2 * ps, *h, 0, Access::read_write, n)),
        "map rw");
  std::memset(*rw, 0xC3, 2 * ps);
  check(bool(sim.map_shared(*rx, ps, *h, 0, Access::read_execute, n)),
        "map rx");
  check((*rx)[10] == std::byte{0xC3}, "the rx view shows the writes");
  // Dropping the writable view keeps the bytes in the object.
  check(bool(sim.reset(*rw, 2 * ps, n)), "reset the rw view");
  check((*rw)[0] == std::byte{0}, "a dropped view's range reads zero");
  check(bool(sim.map_shared(*rx + ps, ps, *h, ps, Access::read_execute, n)),
        "map rx page 2");
  check((*rx)[ps + 7] == std::byte{0xC3}, "the object kept its bytes");
  // Consecutive pages of one object with one protection are one mapping.
  std::size_t in_rx = 0;
  for (const SimVma& v : maps_of(sim))
    in_rx += v.begin >= reinterpret_cast<std::uintptr_t>(*rx) &&
             v.end <= reinterpret_cast<std::uintptr_t>(*rx + 2 * ps);
  check(in_rx == 1, "two views of consecutive pages merge");
  // pwritev semantics: every view shows the write.
  const char code[] = "\x90\x90\xC3";
  const wxa::detail::WritePiece piece{code, 3};
  const std::uint64_t writes = n.write;
  check(
      bool(sim.write_shared(*h, ps + 5, &piece, 1, n)) && n.write == writes + 1,
      "write_shared, one call");
  check(std::memcmp(*rx + ps + 5, code, 3) == 0, "the write is visible");
  check(bool(sim.discard_shared(*h, 0, 2 * ps, *rx, n)) &&
            (*rx)[ps + 5] == std::byte{0},
        "discard_shared zeroes every view");
  Access a = Access::none;
  check(sim.access_at(*rx, a) && a == Access::read_execute, "access_at");
  check(bool(sim.close_shared(*h, n)) && sim.shared_objects() == 0,
        "close_shared");
  auto again = sim.close_shared(*h, n);
  check(!again, "closing twice is EBADF");
  check(bool(sim.unmap_view(*rx, 2 * ps, n)) &&
            bool(sim.unmap_view(*rw, 2 * ps, n)) && sim.reserved_pages() == 0,
        "unmap_view");
}

void placement(SimPal& sim, std::size_t ps) {
  SyscallCounts n;
  auto a = sim.reserve(ps, 0, 0, n);
  auto b = sim.reserve(ps, 0, 0, n);
  // Each with a guard page at either end, as on Linux.
  check(bool(a) && bool(b) && *b + 3 * ps == *a,
        "reservations go top-down, one below the other");
  const auto mid = reinterpret_cast<std::uintptr_t>(*b) - 64 * ps;
  auto w = sim.reserve(2 * ps, mid - 8 * ps, mid + 8 * ps, n);
  check(bool(w) && reinterpret_cast<std::uintptr_t>(*w) >= mid - 8 * ps &&
            reinterpret_cast<std::uintptr_t>(*w) + 2 * ps <= mid + 8 * ps,
        "a window is honoured");
  auto none = sim.reserve(ps, 0x10000, 0x20000, n);
  check(!none && none.error().code() == Errc::unreachable_anchor,
        "a window outside the buffer: unreachable_anchor");
  sim.clear();
  check(sim.reserved_pages() == 0, "clear");
  check(!sim.barrier(n) || sim.capabilities().barrier,
        "barrier without the capability fails");
}

}  // namespace

int main() {
  SimPal sim;
  grant_all(sim);
  const std::size_t ps = sim.capabilities().page_size;
  anonymous(sim, ps);
  shared(sim, ps);
  placement(sim, ps);
  if (g_failures) return 1;
  std::printf("SimPal: every check passed\n");
  return 0;
}
