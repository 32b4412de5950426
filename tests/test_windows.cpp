// SPDX-License-Identifier: MIT
// The Windows platform layer checked against the system with VirtualQuery:
// the two views of a dual_map section (neither can ever gain the other's
// access), page protections per state in both views, 64 KiB-aligned
// reservations, GetLastError translation, counted calls, and real Win64 code.
#include <windows.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "pal/pal.hpp"
#include "support/arena_util.hpp"
#include "support/maps.hpp"
#include "support/x86_code.hpp"
#include "wxarena/arena.hpp"
#include "wxarena/perf_map.hpp"

namespace wxa::test {
namespace {

MEMORY_BASIC_INFORMATION query(const void* p) {
  MEMORY_BASIC_INFORMATION m{};
  EXPECT_NE(::VirtualQuery(p, &m, sizeof m), 0u);
  return m;
}

// The protection of the page at p, 0 if it is only reserved.
DWORD protection_at(const void* p) {
  const MEMORY_BASIC_INFORMATION m = query(p);
  return m.State == MEM_COMMIT ? m.Protect : 0;
}

std::uintptr_t addr(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p);
}

Options dual(std::size_t reserve = kSmallReserve) {
  Options o;
  o.backend = Backend::dual_map;
  o.reserve_bytes = reserve;
  return o;
}

TEST(WindowsPlatform, CapabilitiesComeFromTheSystem) {
  SYSTEM_INFO si;
  ::GetSystemInfo(&si);
  const detail::Capabilities& caps = detail::system_pal().capabilities();
  EXPECT_EQ(caps.page_size, si.dwPageSize);
  EXPECT_EQ(caps.granularity, si.dwAllocationGranularity);
  EXPECT_EQ(caps.granularity, 65536u);
  EXPECT_TRUE(caps.anon_exec);
  EXPECT_TRUE(caps.shared_memory);
  EXPECT_TRUE(caps.shared_exec);
  EXPECT_TRUE(caps.barrier);
  EXPECT_FALSE(caps.vma_naming);
  EXPECT_FALSE(detail::meta_uses_mimalloc());
  EXPECT_EQ(detail::fork_generation(), 0u);
}

TEST(WindowsPlatform, ReservationsStartOnTheAllocationGranularity) {
  for (Backend b : kBothBackends) {
    Options o;
    o.backend = b;
    o.reserve_bytes = 5 * 4096 + 123;  // not a multiple of 64 KiB
    Result<Arena> arena = Arena::create(o);
    ASSERT_TRUE(Ok(arena)) << to_string(b);
    EXPECT_EQ(addr(arena->range().data()) % 65536, 0u) << to_string(b);
    EXPECT_EQ(addr(arena->rw_range().data()) % 65536, 0u) << to_string(b);
    // Chunks stay page-sized.
    Result<Chunk> c = arena->allocate(1);
    ASSERT_TRUE(Ok(c));
    EXPECT_EQ(c->size(), arena->page_size());
    EXPECT_TRUE(still_works(*arena));
  }
}

TEST(WindowsPlatform, AnAnchoredReservationLiesWithinReach) {
  static const int anchor = 0;
  for (Backend b : kBothBackends) {
    Options o;
    o.backend = b;
    o.reserve_bytes = std::size_t{16} << 20;
    o.anchor = &anchor;
    o.reach = std::size_t{512} << 20;
    Result<Arena> arena = Arena::create(o);
    ASSERT_TRUE(Ok(arena)) << to_string(b);
    const std::uintptr_t lo = addr(arena->range().data());
    const std::uintptr_t hi = lo + arena->range().size();
    const std::uintptr_t a = addr(&anchor);
    EXPECT_LT(a > lo ? a - lo : lo - a, o.reach) << to_string(b);
    EXPECT_LT(a > hi ? a - hi : hi - a, o.reach) << to_string(b);
    EXPECT_EQ(lo % 65536, 0u);
    EXPECT_GT(arena->stats().syscalls.other, 0u)
        << "the address space walk (VirtualQuery) is counted";
    EXPECT_TRUE(still_works(*arena));
  }
}

TEST(WindowsDualMap, EachViewIsOneViewOfTheWholeSection) {
  Result<Arena> arena = Arena::create(dual());
  ASSERT_TRUE(Ok(arena));
  for (const std::byte* base :
       {arena->range().data(),
        static_cast<const std::byte*>(arena->rw_range().data())}) {
    const MEMORY_BASIC_INFORMATION m = query(base + arena->range().size() - 1);
    EXPECT_EQ(m.Type, static_cast<DWORD>(MEM_MAPPED));
    EXPECT_EQ(m.AllocationBase, base);
  }
  EXPECT_NE(static_cast<const void*>(arena->range().data()),
            static_cast<const void*>(arena->rw_range().data()));
}

// The view's own access bounds what VirtualProtect may give its pages: the
// executable view can never be made to write the section, the writable view
// never executable. Proven by asking.
TEST(WindowsDualMap, NeitherViewCanGainTheOthersAccess) {
  Result<Arena> arena = Arena::create(dual());
  ASSERT_TRUE(Ok(arena));
  Result<Chunk> c = arena->allocate(64);
  ASSERT_TRUE(Ok(c));
  write_fn(*c, 7);
  std::byte* rw = c->rw().data();
  ASSERT_TRUE(Ok(arena->seal(*c)));
  void* rx = const_cast<void*>(c->rx());
  DWORD old = 0;
  // (Write-copy would give this process a private copy of the page, never
  // a way to write the section; the arena never asks for it.)
  for (DWORD p : {PAGE_READWRITE, PAGE_EXECUTE_READWRITE}) {
    EXPECT_FALSE(::VirtualProtect(rx, c->size(), p, &old)) << std::hex << p;
  }
  for (DWORD p : {PAGE_EXECUTE, PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE}) {
    EXPECT_FALSE(::VirtualProtect(rw, c->size(), p, &old)) << std::hex << p;
  }
  EXPECT_EQ(call(c->rx()), 7u);
  EXPECT_TRUE(audit_arena(*arena));
}

// Page by page, in both views, through the lifecycle: the protection the
// arena tracks is the one the system reports, and a page is never writable
// in one view while executable in the other.
TEST(WindowsDualMap, ProtectionsFollowTheLifecycleInBothViews) {
  Result<Arena> arena = Arena::create(dual());
  ASSERT_TRUE(Ok(arena));
  Result<Chunk> c = arena->allocate(64);
  ASSERT_TRUE(Ok(c));
  std::byte* rw = c->rw().data();
  const void* rx = c->rx();
  EXPECT_EQ(protection_at(rw), static_cast<DWORD>(PAGE_READWRITE));
  EXPECT_EQ(protection_at(rx), static_cast<DWORD>(PAGE_NOACCESS));

  write_fn(*c, 41);
  ASSERT_TRUE(Ok(arena->seal(*c)));
  EXPECT_EQ(protection_at(rw), static_cast<DWORD>(PAGE_NOACCESS));
  EXPECT_EQ(protection_at(rx), static_cast<DWORD>(PAGE_EXECUTE_READ));
  EXPECT_EQ(call(rx), 41u);

  Result<Chunk> again = arena->unseal(rx);
  ASSERT_TRUE(Ok(again));
  EXPECT_EQ(again->rw().data(), rw);
  EXPECT_EQ(protection_at(rw), static_cast<DWORD>(PAGE_READWRITE));
  EXPECT_EQ(protection_at(rx), static_cast<DWORD>(PAGE_NOACCESS));
  write_fn(*again, 42);  // patched through the writable view
  ASSERT_TRUE(Ok(arena->seal(rx, Seal::read_only)));
  EXPECT_EQ(protection_at(rw), static_cast<DWORD>(PAGE_NOACCESS));
  EXPECT_EQ(protection_at(rx), static_cast<DWORD>(PAGE_READONLY));
  EXPECT_EQ(*static_cast<const unsigned char*>(rx), 0xB8);  // mov eax, imm32

  ASSERT_TRUE(Ok(arena->release(rx)));
  EXPECT_EQ(protection_at(rw), static_cast<DWORD>(PAGE_NOACCESS));
  EXPECT_EQ(protection_at(rx), static_cast<DWORD>(PAGE_NOACCESS));
  EXPECT_TRUE(audit_arena(*arena));
}

TEST(WindowsDualMap, TrimDiscardsThroughTheExecutableView) {
  Options o = dual();
  o.quarantine = 0;
  Result<Arena> arena = Arena::create(o);
  ASSERT_TRUE(Ok(arena));
  Result<Chunk> c = arena->allocate(64);
  ASSERT_TRUE(Ok(c));
  write_fn(*c, 5);
  ASSERT_TRUE(Ok(arena->seal(*c)));
  ASSERT_TRUE(Ok(arena->release(*c)));
  const Stats before = arena->stats();
  ASSERT_TRUE(Ok(arena->trim()));
  const Stats after = arena->stats();
  EXPECT_GT(after.syscalls.madvise, before.syscalls.madvise)
      << "MEM_RESET is counted as madvise";
  EXPECT_EQ(after.bytes_in(State::retired), 0u);
  EXPECT_TRUE(audit_arena(*arena));
  EXPECT_TRUE(still_works(*arena));
}

TEST(WindowsAudit, TheVirtualQueryReaderSeesAWritableExecutablePage) {
  const std::size_t page = detail::system_pal().capabilities().page_size;
  void* p = ::VirtualAlloc(nullptr, page, MEM_RESERVE | MEM_COMMIT,
                           PAGE_EXECUTE_READWRITE);
  ASSERT_NE(p, nullptr);
  bool seen = false;
  for (const Mapping& m : writable_and_executable())
    seen |= m.contains(addr(p));
  EXPECT_TRUE(seen) << "an RWX page went unnoticed";
  EXPECT_EQ(mapping_at(p).protection(), "rwx");
  ASSERT_TRUE(::VirtualFree(p, 0, MEM_RELEASE));
  EXPECT_EQ(writable_and_executable().size(), 0u);
}

TEST(WindowsPal, GetLastErrorBecomesASpecificError) {
  detail::Pal& pal = detail::system_pal();
  SyscallCounts n;
  // An address where nothing is reserved any more.
  void* gone = ::VirtualAlloc(nullptr, 65536, MEM_RESERVE, PAGE_NOACCESS);
  ASSERT_NE(gone, nullptr);
  ASSERT_TRUE(::VirtualFree(gone, 0, MEM_RELEASE));
  Result<void> r = pal.protect(gone, 4096, Access::read_write, n);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::invalid_argument) << r.error().to_string();
  EXPECT_EQ(r.error().sys_errno(), ERROR_INVALID_ADDRESS);
  EXPECT_NE(r.error().to_string().find("(error 487: "), std::string::npos)
      << r.error().to_string();
  EXPECT_EQ(n.mprotect, 1u) << "a failed call counts too";
  EXPECT_EQ(n.total(), 1u);
}

TEST(WindowsPal, DecommitZeroesThePagesAndKeepsTheirProtection) {
  detail::Pal& pal = detail::system_pal();
  const std::size_t page = pal.capabilities().page_size;
  SyscallCounts n;
  Result<std::byte*> p = pal.reserve(4 * page, 0, 0, n);
  ASSERT_TRUE(Ok(p));
  ASSERT_TRUE(Ok(pal.protect(*p, 2 * page, Access::read_write, n)));
  (*p)[0] = std::byte{0x5A};
  (*p)[page] = std::byte{0x5B};
  ASSERT_TRUE(Ok(pal.decommit(*p, 2 * page, n)));
  EXPECT_EQ(protection_at(*p), static_cast<DWORD>(PAGE_READWRITE));
  EXPECT_EQ((*p)[0], std::byte{0});
  EXPECT_EQ((*p)[page], std::byte{0});
  // Inaccessible pages stay inaccessible (and are merely reserved).
  ASSERT_TRUE(Ok(pal.protect(*p, 2 * page, Access::none, n)));
  ASSERT_TRUE(Ok(pal.decommit(*p, 2 * page, n)));
  EXPECT_EQ(protection_at(*p), 0u);
  // A range of mixed protections keeps each page's own.
  ASSERT_TRUE(Ok(pal.protect(*p, page, Access::read_write, n)));
  ASSERT_TRUE(Ok(pal.protect(*p + page, page, Access::read, n)));
  (*p)[0] = std::byte{0x5C};
  ASSERT_TRUE(Ok(pal.decommit(*p, 3 * page, n)));
  EXPECT_EQ(protection_at(*p), static_cast<DWORD>(PAGE_READWRITE));
  EXPECT_EQ(protection_at(*p + page), static_cast<DWORD>(PAGE_READONLY));
  EXPECT_EQ(protection_at(*p + 2 * page), 0u);
  EXPECT_EQ((*p)[0], std::byte{0});
  // Making reserved pages inaccessible is no error: they are already.
  ASSERT_TRUE(Ok(pal.protect(*p, 4 * page, Access::none, n)));
  ASSERT_TRUE(Ok(pal.unmap(*p, 4 * page, n)));
  EXPECT_EQ(n.mmap, 1u);
  EXPECT_EQ(n.munmap, 1u);
  EXPECT_GE(n.madvise, 2u);
}

TEST(WindowsPal, TheBarrierIsFlushProcessWriteBuffersAndCounted) {
  Result<Arena> arena = Arena::create();
  ASSERT_TRUE(Ok(arena));
  Result<Chunk> c = arena->allocate(64);
  ASSERT_TRUE(Ok(c));
  write_fn(*c, 9);
  Batch batch(*arena);
  batch.seal(c->rx());
  const Stats before = arena->stats();
  Result<CommitReport> r = batch.commit(CommitFlags::barrier);
  ASSERT_TRUE(Ok(r));
  EXPECT_TRUE(r->barrier);
  EXPECT_EQ(arena->stats().syscalls.membarrier - before.syscalls.membarrier,
            1u);
  EXPECT_EQ(call(c->rx()), 9u);
}

TEST(WindowsPal, PerfMapsAreNotSupported) {
  int here = 0;
  Result<void> r = perf_map_add(&here, 4, "f");
  EXPECT_TRUE(FailsWith(r, Errc::not_supported));
  EXPECT_EQ(perf_map_path(), "");
}

// Real generated code that takes arguments: the Win64 calling convention
// (rcx, rdx), through both backends.
TEST(WindowsCode, FunctionsWithArgumentsRunInBothBackends) {
  for (Backend b : kBothBackends) {
    Options o;
    o.backend = b;
    o.reserve_bytes = kSmallReserve;
    Result<Arena> arena = Arena::create(o);
    ASSERT_TRUE(Ok(arena)) << to_string(b);
    Result<Chunk> c = arena->allocate(64);
    ASSERT_TRUE(Ok(c));
    ASSERT_EQ(write_add_args(c->rw(), c->size()), c->size());
    ASSERT_TRUE(Ok(arena->seal(*c)));
    auto* add = c->entry<int(int, int)>();
    EXPECT_EQ(add(40, 2), 42) << to_string(b);
    EXPECT_EQ(add(-5, 3), -2) << to_string(b);
  }
}

}  // namespace
}  // namespace wxa::test
