// SPDX-License-Identifier: MIT
// Shared pieces of the arena tests: the backend-parameterised fixture, result
// matchers, calling generated code, and snapshots that prove "nothing changed".
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "pal/cpu.hpp"
#include "support/backends.hpp"
#include "support/maps.hpp"
#include "support/native_code.hpp"
#include "wxarena/arena.hpp"
#include "wxarena/result.hpp"

namespace wxa::test {

/// Small enough to be fast, large enough for every test in this suite.
inline constexpr std::size_t kSmallReserve = std::size_t{64} << 20;

/// The two concrete backends; tests parameterised over them skip the one
/// this run cannot create (see backends.hpp).
inline const Backend kBothBackends[] = {Backend::protect, Backend::dual_map};
/// Every concrete backend; tests parameterised over them skip those this
/// host cannot create (see backends.hpp).
inline const Backend kAllBackends[] = {Backend::protect, Backend::dual_map,
                                       Backend::kernel_write};

inline std::string backend_name(const ::testing::TestParamInfo<Backend>& info) {
  return std::string(to_string(info.param));
}

/// Whether a commit that copies code into `backend`'s pages issues the
/// cross-thread barrier by itself, fresh pages or not: kernel_write's pages
/// are executable while they hold traps, and where cores may fetch stale
/// instructions (AArch64) one may have fetched those traps ahead. Where the
/// host has no membarrier SYNC_CORE there is no barrier to issue.
inline bool code_copied_in_needs_barrier(Backend backend) noexcept {
  return detail::kStaleFetchAcrossCores && backend == Backend::kernel_write &&
         detail::system_pal().capabilities().barrier;
}

/// The OS page size as the library sees it: 4 KiB on x86-64, 4, 16 or
/// 64 KiB on AArch64. Never assume one.
inline std::size_t os_page_size() noexcept {
  return detail::system_pal().capabilities().page_size;
}

/// Success, or a failure that prints the error.
template <class T>
::testing::AssertionResult Ok(const Result<T>& r) {
  if (r) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << r.error().to_string();
}

/// Failure with exactly `code`.
template <class T>
::testing::AssertionResult FailsWith(const Result<T>& r, Errc code) {
  if (r)
    return ::testing::AssertionFailure()
           << "succeeded; expected " << to_string(code);
  if (r.error().code() != code)
    return ::testing::AssertionFailure()
           << "failed with '" << r.error().to_string() << "'; expected '"
           << to_string(code) << "'";
  return ::testing::AssertionSuccess();
}

/// Calls `unsigned f()` at `rx`.
inline unsigned call(const void* rx) {
  return reinterpret_cast<unsigned (*)()>(const_cast<void*>(rx))();
}

/// Writes `unsigned f()` returning `value` at the start of a writable chunk
/// (support/native_code.hpp: `mov eax, value; ret` on x86-64).
inline void write_fn(const Chunk& c, std::uint32_t value) {
  ASSERT_FALSE(c.rw().empty()) << "chunk has no writable view";
  ASSERT_NE(write_return_imm(c.rw(), value), 0u);
}

/// True if `p` holds exactly the function write_fn(·, value) writes (read
/// through any readable view, not run).
inline bool holds_fn(const void* p, std::uint32_t value) {
  std::byte code[return_imm_size];
  if (write_return_imm(code, value) != sizeof code) return false;
  return std::memcmp(p, code, sizeof code) == 0;
}

/// The tracked state map, as a comparable value.
inline std::vector<std::string> state_map(const Arena& arena) {
  std::vector<std::string> out;
  for (const RunInfo& r : arena.runs()) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%p+%zu %s%s rx=%s rw=%s", r.rx, r.bytes,
                  std::string(to_string(r.state)).c_str(),
                  r.open ? "(open)" : "",
                  std::string(to_string(r.rx_access)).c_str(),
                  std::string(to_string(r.rw_access)).c_str());
    out.push_back(buf);
  }
  return out;
}

/// The kernel's view of the arena: every /proc/self/maps line that
/// intersects range() or (dual_map) rw_range(), as comparable strings.
inline std::vector<std::string> kernel_map(const Arena& arena) {
  const auto rx = reinterpret_cast<std::uintptr_t>(arena.range().data());
  const auto rw = reinterpret_cast<std::uintptr_t>(arena.rw_range().data());
  const std::uintptr_t n = arena.range().size();
  std::vector<std::string> out;
  for (const Mapping& m : read_maps()) {
    const bool in_rx = m.begin < rx + n && rx < m.end;
    const bool in_rw = m.begin < rw + n && rw < m.end;
    if (!in_rx && !in_rw) continue;
    char buf[200];
    std::snprintf(buf, sizeof buf, "%s %#zx-%#zx %s off=%#llx ino=%llu %s",
                  in_rx ? "rx" : "rw", static_cast<std::size_t>(m.begin),
                  static_cast<std::size_t>(m.end), m.perms().c_str(),
                  static_cast<unsigned long long>(m.offset),
                  static_cast<unsigned long long>(m.inode), m.name.c_str());
    out.push_back(buf);
  }
  return out;
}

/// VMAs the kernel has in the arena's ranges: lines of /proc/self/maps
/// intersecting range(), plus those intersecting rw_range() in dual_map. A
/// line that straddles a range's edge (merged with a neighbouring mapping
/// of the same kind) counts once per range it touches, which is how the
/// arena counts too: its figure is per reservation, and may exceed the
/// process-wide total by such merges, never fall short of it.
inline std::size_t kernel_vmas(const Arena& arena) {
  auto count = [](const void* p, std::size_t n) {
    return count_vmas(p, static_cast<const std::byte*>(p) + n);
  };
  std::size_t v = count(arena.range().data(), arena.range().size());
  if (arena.backend() != Backend::protect)  // the writable views or staging
    v += count(arena.rw_range().data(), arena.rw_range().size());
  return v;
}

/// The arena's VMA figure `tracked` agrees with /proc/self/maps: equal
/// where the file is exact; where it merges r-- pages with r-x neighbours
/// (maps_tell_read_from_execute() is false: qemu-user) it can only show
/// fewer, never more.
inline ::testing::AssertionResult vmas_agree(std::size_t tracked,
                                             const Arena& arena) {
  const std::size_t kernel = kernel_vmas(arena);
  if (kernel == tracked || (kernel < tracked && !maps_tell_read_from_execute()))
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "the arena counts " << tracked << " VMAs, /proc/self/maps shows "
         << kernel;
}

/// Chunk counts by state, as one comparable value.
inline std::vector<std::size_t> chunk_counts(const Stats& s) {
  return std::vector<std::size_t>(std::begin(s.chunks), std::end(s.chunks));
}

/// The arena still does its whole job: allocate, write, seal, call, release.
inline ::testing::AssertionResult still_works(
    Arena& arena, std::uint32_t value = 0x600DF00D) {
  Result<Chunk> c = arena.allocate(64);
  if (!c)
    return ::testing::AssertionFailure()
           << "allocate: " << c.error().to_string();
  if (write_return_imm(c->rw(), value) == 0)
    return ::testing::AssertionFailure() << "no writable view";
  if (Result<void> r = arena.seal(*c); !r)
    return ::testing::AssertionFailure() << "seal: " << r.error().to_string();
  if (unsigned got = call(c->rx()); got != value)
    return ::testing::AssertionFailure() << "call returned " << got;
  if (Result<void> r = arena.release(*c); !r)
    return ::testing::AssertionFailure()
           << "release: " << r.error().to_string();
  return ::testing::AssertionSuccess();
}

/// Options for `backend` over a reservation of `reserve` bytes.
[[nodiscard]] inline Options small_options(
    Backend backend, std::size_t reserve = kSmallReserve) noexcept {
  Options o;
  o.backend = backend;
  o.reserve_bytes = reserve;
  return o;
}

/// Fixture parameterised over the backend; skips what this run cannot make.
class BackendTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override { WXA_SKIP_IF_UNAVAILABLE(GetParam()); }

  [[nodiscard]] Options options(std::size_t reserve = kSmallReserve) const {
    return small_options(GetParam(), reserve);
  }
};

}  // namespace wxa::test
