// SPDX-License-Identifier: MIT
// What the kernel_write backend promises beyond the common lifecycle: stale
// calls trap (chunks and heap functions, before and after their pages are
// reused), trimmed code is inaccessible rather than zeros, staging memory is
// recycled instead of faulted in afresh, and fresh code is mapped in before
// the first call.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>

#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <functional>
#include <latch>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "support/arena_util.hpp"
#include "support/backends.hpp"
#include "support/each_failure.hpp"
#include "support/fault_pal.hpp"
#include "support/maps.hpp"
#include "support/memory_fault.hpp"
#include "support/native_code.hpp"
#include "support/resident.hpp"
#include "wxarena/arena.hpp"
#include "wxarena/code_heap.hpp"

namespace wxa::test {
namespace {

class KernelWrite : public ::testing::Test {
 protected:
  void SetUp() override { WXA_SKIP_IF_UNAVAILABLE(Backend::kernel_write); }
  static Options options(std::size_t quarantine = 16) {
    Options o;
    o.backend = Backend::kernel_write;
    o.reserve_bytes = kSmallReserve;
    o.quarantine = quarantine;
    return o;
  }
};

// The memfds (by inode) mapped in the arena's code range.
std::set<std::uint64_t> code_memfds(const Arena& arena) {
  const auto lo = reinterpret_cast<std::uintptr_t>(arena.range().data());
  const std::uintptr_t hi = lo + arena.range().size();
  std::set<std::uint64_t> inodes;
  for (const Mapping& m : read_maps())
    if (m.begin < hi && lo < m.end &&
        m.name.rfind("/memfd:wxarena-code", 0) == 0)
      inodes.insert(m.inode);
  return inodes;
}

using KernelWriteDeathTest = KernelWrite;

// A scenario's publish under for_each_failing_call(): on the counting pass
// (fail_at 0) it goes through and `calls` becomes its failable calls;
// otherwise its fail_at-th failable call fails. True when that happened.
bool publish_failing_at(FaultPal& pal, CodeHeap& heap, std::size_t fail_at,
                        std::size_t& calls) {
  if (fail_at == 0) {
    pal.count_only();
    EXPECT_TRUE(Ok(heap.publish()));
    calls = pal.failable_calls();
    return false;
  }
  pal.arm(fail_at, ENOMEM);
  EXPECT_FALSE(Ok(heap.publish()));
  EXPECT_TRUE(pal.fired());
  pal.disarm();
  return true;
}

TEST_F(KernelWriteDeathTest, StaleCallsTrapBeforeAndAfterThePagesAreReused) {
  Options o = options(0);
  o.open_pages = 1;  // recycle as soon as the quarantine allows
  Result<Arena> made = Arena::create(o);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  Result<Chunk> c = arena.allocate(64);
  ASSERT_TRUE(Ok(c));
  write_fn(*c, 0x51);
  ASSERT_TRUE(Ok(arena.seal(*c)));
  ASSERT_EQ(call(c->rx()), 0x51u);
  ASSERT_TRUE(Ok(arena.release(*c)));
  EXPECT_EXIT((void)call(c->rx()), ::testing::KilledBySignal(SIGTRAP), "")
      << "a stale call into released code";
  // The page comes back (quarantine 0) to a new, still writable chunk: the
  // new bytes are staged elsewhere, so a stale call still traps.
  Result<Chunk> again = arena.allocate(64);
  for (int i = 0; i < 1000 && again && again->rx() != c->rx(); ++i)
    again = arena.allocate(64);
  ASSERT_TRUE(Ok(again));
  ASSERT_EQ(again->rx(), c->rx()) << "the page never came back";
  write_fn(*again, 0x52);
  EXPECT_EXIT((void)call(c->rx()), ::testing::KilledBySignal(SIGTRAP), "")
      << "a stale call into a reused, not yet sealed page";
  ASSERT_TRUE(Ok(arena.seal(*again)));
  EXPECT_EQ(call(again->rx()), 0x52u);
  EXPECT_TRUE(audit_arena(arena));
}

TEST_F(KernelWriteDeathTest, StaleHeapFunctionsTrap) {
  Result<Arena> made = Arena::create(options(0));
  ASSERT_TRUE(Ok(made));
  Result<CodeHeap> heap = CodeHeap::create(*made);
  ASSERT_TRUE(Ok(heap));
  std::vector<const void*> fns;
  for (std::uint32_t i = 0; i < 8; ++i) {
    Result<Function> f = heap->allocate(32);
    ASSERT_TRUE(Ok(f));
    ASSERT_NE(write_return_imm(f->rw, i), 0u);
    fns.push_back(f->rx);
  }
  ASSERT_TRUE(Ok(heap->publish()));
  for (std::uint32_t i = 0; i < 8; ++i) ASSERT_EQ(call(fns[i]), i);
  for (const void* f : fns) ASSERT_TRUE(Ok(heap->release(f)));
  ASSERT_TRUE(Ok(heap->publish()));  // the emptied page is retired
  for (const void* f : {fns[0], fns[5]})
    EXPECT_EXIT((void)call(f), ::testing::KilledBySignal(SIGTRAP), "");
  // New functions: their page (perhaps the same one, reused) is writable
  // until the next publish; the old addresses still trap meanwhile.
  Result<Function> g = heap->allocate(32);
  ASSERT_TRUE(Ok(g));
  ASSERT_NE(write_return_imm(g->rw, 77), 0u);
  EXPECT_EXIT((void)call(fns[3]), ::testing::KilledBySignal(SIGTRAP), "");
  ASSERT_TRUE(Ok(heap->publish()));
  EXPECT_EQ(call(g->rx), 77u);
  EXPECT_TRUE(audit_arena(*made));
}

// A released heap function traps from the next publish() on, while its
// page stays executable and the functions beside it keep running: its
// bytes become traps in that publish's write, with the new pages it seals.
TEST_F(KernelWriteDeathTest, ReleasedHeapFunctionTrapsFromTheNextPublish) {
  Result<Arena> made = Arena::create(options(0));
  ASSERT_TRUE(Ok(made));
  Result<CodeHeap> heap = CodeHeap::create(*made);
  ASSERT_TRUE(Ok(heap));
  std::vector<const void*> fns;
  for (std::uint32_t i = 0; i < 5; ++i) {
    Result<Function> f = heap->allocate(32);
    ASSERT_TRUE(Ok(f));
    ASSERT_NE(write_return_imm(f->rw, 10 + i), 0u);
    fns.push_back(f->rx);
  }
  const auto page_of = [&](const void* p) {
    return reinterpret_cast<std::uintptr_t>(p) / made->page_size();
  };
  for (const void* f : fns) ASSERT_EQ(page_of(f), page_of(fns[0]));
  ASSERT_TRUE(Ok(heap->publish()));
  // Two functions apart and two side by side released; until the next
  // publish they still hold their code.
  for (std::size_t i : {1u, 3u, 4u}) ASSERT_TRUE(Ok(heap->release(fns[i])));
  EXPECT_EQ(call(fns[1]), 11u);
  // The next publish seals a new function as well.
  Result<Function> g = heap->allocate(32);
  ASSERT_TRUE(Ok(g));
  ASSERT_NE(write_return_imm(g->rw, 77), 0u);
  ASSERT_TRUE(Ok(heap->publish()));
  EXPECT_EQ(call(g->rx), 77u);
  for (std::size_t i : {1u, 3u, 4u})
    EXPECT_EXIT((void)call(fns[i]), ::testing::KilledBySignal(SIGTRAP), "")
        << "released function " << i;
  // The page is still executable: the others run as before.
  EXPECT_EQ(mapping_at(fns[0]).protection(), "r-x");
  EXPECT_EQ(call(fns[0]), 10u);
  EXPECT_EQ(call(fns[2]), 12u);
  // A release with nothing else to publish is trapped too.
  ASSERT_TRUE(Ok(heap->release(fns[0])));
  ASSERT_TRUE(Ok(heap->publish()));
  EXPECT_EXIT((void)call(fns[0]), ::testing::KilledBySignal(SIGTRAP), "");
  EXPECT_EQ(call(fns[2]), 12u);
  // One released before the publish that seals its page (with a live one)
  // is sealed as traps.
  Result<Function> h = heap->allocate(32);
  Result<Function> k = heap->allocate(32);
  ASSERT_TRUE(Ok(h) && Ok(k));
  ASSERT_EQ(page_of(h->rx), page_of(k->rx));
  ASSERT_NE(write_return_imm(h->rw, 88), 0u);
  ASSERT_NE(write_return_imm(k->rw, 89), 0u);
  ASSERT_TRUE(Ok(heap->release(h->rx)));
  ASSERT_TRUE(Ok(heap->publish()));
  EXPECT_EXIT((void)call(h->rx), ::testing::KilledBySignal(SIGTRAP), "");
  EXPECT_EQ(call(k->rx), 89u);
  EXPECT_EQ(call(g->rx), 77u);
  EXPECT_EQ(heap->stats().live_functions, 3u);
  EXPECT_TRUE(audit_arena(*made));
}

// A publish that fails at any of its calls leaves a released function's
// bytes as they were (its traps undone with the rest), the heap as it was;
// the next publish traps it.
TEST_F(KernelWrite, FailedPublishRestoresReleasedFunctionBytes) {
  std::size_t calls = 0;  // the failable calls of the publish
  const auto run = [&calls](FaultPal& pal, Arena& arena, std::size_t fail_at) {
    Result<CodeHeap> heap = CodeHeap::create(arena);
    ASSERT_TRUE(Ok(heap));
    std::vector<const void*> fns;
    for (std::uint32_t i = 0; i < 3; ++i) {
      Result<Function> f = heap->allocate(32);
      ASSERT_TRUE(Ok(f));
      ASSERT_NE(write_return_imm(f->rw, 20 + i), 0u);
      fns.push_back(f->rx);
    }
    ASSERT_TRUE(Ok(heap->publish()));
    ASSERT_TRUE(Ok(heap->release(fns[1])));
    Result<Function> g = heap->allocate(32);
    ASSERT_TRUE(Ok(g));
    ASSERT_NE(write_return_imm(g->rw, 99), 0u);
    if (!publish_failing_at(pal, *heap, fail_at, calls)) return;
    EXPECT_TRUE(holds_fn(fns[1], 21)) << "the traps were not undone";
    EXPECT_EQ(call(fns[0]), 20u);
    EXPECT_EQ(call(fns[2]), 22u);
    ASSERT_TRUE(Ok(heap->publish()));
    const auto* p = static_cast<const std::byte*>(fns[1]);
    for (std::size_t i = 0; i < 32; ++i)
      EXPECT_EQ(p[i], trap_byte_at(reinterpret_cast<std::uintptr_t>(p + i)));
    EXPECT_EQ(call(fns[2]), 22u);
    EXPECT_EQ(call(g->rx), 99u);
  };
  for_each_failing_call(options(0), calls, run);
}

// A mass release keeps all the code it retires for undo, more than a plan
// keeps from one commit to the next: a write failing part way brings every
// function back, and the same release then goes through.
TEST_F(KernelWrite, AFailedMassReleaseRestoresEveryFunction) {
  constexpr std::uint32_t kFns = 2048;  // 128 pages of 256-byte functions
  std::size_t calls = 0;
  const auto run = [&calls](FaultPal& pal, Arena& arena, std::size_t fail_at) {
    Result<CodeHeap> heap = CodeHeap::create(arena);
    ASSERT_TRUE(Ok(heap));
    std::vector<const void*> fns;
    for (std::uint32_t i = 0; i < kFns; ++i) {
      Result<Function> f = heap->allocate(256);
      ASSERT_TRUE(Ok(f));
      ASSERT_NE(write_return_imm(f->rw, i), 0u);
      fns.push_back(f->rx);
    }
    ASSERT_TRUE(Ok(heap->publish()));
    for (const void* f : fns) ASSERT_TRUE(Ok(heap->release(f)));
    if (!publish_failing_at(pal, *heap, fail_at, calls)) return;
    for (std::uint32_t i = 0; i < kFns; ++i)
      ASSERT_TRUE(holds_fn(fns[i], i)) << "function " << i << " not restored";
    EXPECT_EQ(call(fns[kFns - 1]), kFns - 1);
    ASSERT_TRUE(Ok(heap->publish()));
    EXPECT_EQ(heap->stats().live_functions, 0u);
    for (std::uint32_t i = 0; i < kFns; i += 97) {
      Result<ChunkInfo> info = arena.find(fns[i]);
      EXPECT_FALSE(Ok(info) && info->state == State::executable) << i;
    }
  };
  for_each_failing_call(options(0), calls, run);
}

TEST_F(KernelWriteDeathTest, TrimmedCodeIsInaccessibleNotZeros) {
  Result<Arena> made = Arena::create(options(0));
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  Result<Chunk> c = arena.allocate(64);
  ASSERT_TRUE(Ok(c));
  write_fn(*c, 0x61);
  ASSERT_TRUE(Ok(arena.seal(*c)));
  ASSERT_TRUE(Ok(arena.release(*c)));
  const Stats before = arena.stats();
  ASSERT_TRUE(Ok(arena.trim()));
  const Stats after = arena.stats();
  EXPECT_EQ(after.chunks_in(State::retired), 0u);
  EXPECT_EQ(after.committed_bytes, 0u);
  EXPECT_GT(after.syscalls.other, before.syscalls.other)
      << "the memfd's pages were given back (fallocate)";
  // A hole in the memfd would read as zeros, and zeros execute: the page
  // is inaccessible instead, so a stale call faults.
  EXPECT_EQ(mapping_at(c->rx()).protection(), "---");
  EXPECT_EXIT(
      {
        expect_fault_in(c->rx(), c->size());
        (void)call(c->rx());
      },
      ::testing::ExitedWithCode(kFaultExitCode), kFaultInChunk);
  EXPECT_TRUE(audit_arena(arena));
  EXPECT_TRUE(vmas_agree(arena.stats().vmas, arena));
  // The arena goes on: the same pages are opened and used again.
  EXPECT_TRUE(still_works(arena));
}

// The code view is mapped from a read-only descriptor of the memfd where
// /proc/self/fd lets the library open one: then not even mprotect() can
// make it writable.
TEST_F(KernelWrite, TheCodeViewCannotBeMadeWritable) {
  if (::access("/proc/self/fd", R_OK) != 0)
    GTEST_SKIP() << "no /proc/self/fd here: the view is mapped through the "
                    "read-write descriptor";
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Result<Chunk> c = made->allocate(64);
  ASSERT_TRUE(Ok(c));
  write_fn(*c, 0x71);
  ASSERT_TRUE(Ok(made->seal(*c)));
  void* page = const_cast<void*>(c->rx());
  EXPECT_NE(::mprotect(page, made->page_size(), PROT_READ | PROT_WRITE), 0);
  EXPECT_EQ(errno, EACCES);
  EXPECT_EQ(call(c->rx()), 0x71u);
  EXPECT_TRUE(audit_arena(*made));
}

// A seal copies a chunk's bytes up to the last that is not a trap (the rest
// of a page written before holds traps already), and a release traps only
// what held code. Whatever the mix, no byte of old code is ever left behind.
TEST_F(KernelWrite, PartialCopiesLeaveOnlyTrapsAroundTheCode) {
  Options o = options(0);
  o.open_pages = 1;  // recycle as soon as the quarantine allows
  Result<Arena> made = Arena::create(o);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  const std::size_t ps = arena.page_size();
  std::vector<std::byte> traps(2 * ps);
  fill_traps(traps);
  auto only_traps_after = [&](const void* rx, std::size_t from,
                              std::size_t to) {
    return std::memcmp(static_cast<const std::byte*>(rx) + from, traps.data(),
                       to - from) == 0;
  };
  // Long code on a page, released; the page comes back for short code.
  Result<Chunk> x = arena.allocate(ps);
  ASSERT_TRUE(Ok(x));
  ASSERT_EQ(write_return_imm(x->rw(), 1, 3000), 3000u);  // code, padding
  std::memset(x->rw().data() + 6, 0x90, 3000 - 6);       // nops, not traps
  ASSERT_TRUE(Ok(arena.seal(*x)));
  ASSERT_TRUE(Ok(arena.release(*x)));
  EXPECT_TRUE(only_traps_after(x->rx(), 0, ps)) << "release left code";
  Result<Chunk> y = arena.allocate(ps);
  for (int i = 0; i < 1000 && y && y->rx() != x->rx(); ++i)
    y = arena.allocate(ps);
  ASSERT_TRUE(Ok(y));
  ASSERT_EQ(y->rx(), x->rx()) << "the page never came back";
  write_fn(*y, 2);
  const Stats s0 = arena.stats();
  ASSERT_TRUE(Ok(arena.seal(*y)));
  EXPECT_EQ(arena.stats().syscalls.write - s0.syscalls.write, 1u);
  EXPECT_EQ(call(y->rx()), 2u);
  EXPECT_TRUE(only_traps_after(y->rx(), return_imm_size, ps))
      << "old code left behind the new";
  // Unseal, shorten the code: the old, longer code goes too.
  Result<Chunk> u = arena.unseal(y->rx());
  ASSERT_TRUE(Ok(u));
  std::memset(u->rw().data() + return_imm_size, 0x90, 500);
  ASSERT_TRUE(Ok(arena.seal(*u)));
  u = arena.unseal(y->rx());
  ASSERT_TRUE(Ok(u));
  fill_traps(u->rw());
  write_fn(*u, 3);
  ASSERT_TRUE(Ok(arena.seal(*u)));
  EXPECT_EQ(call(y->rx()), 3u);
  EXPECT_TRUE(only_traps_after(y->rx(), return_imm_size, ps))
      << "the longer code of the last seal was left behind";
  EXPECT_TRUE(audit_arena(arena));
}

// Beyond 64 MiB the pool is smaller than the reservation (the default
// reservation's is an eighth of it): writable chunks not yet sealed hold at
// most the pool, and beyond it allocate() says exhausted though code pages
// are free. Nothing already there is lost, and a seal gives the room back.
TEST_F(KernelWrite, AFullStagingPoolRefusesUntilAChunkIsSealed) {
  Options o = options(0);
  o.reserve_bytes = Options{}.reserve_bytes;
  Result<Arena> made = Arena::create(o);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  constexpr std::size_t kChunk = std::size_t{8} << 20;
  std::vector<Chunk> held;
  Result<Chunk> c = arena.allocate(kChunk);
  for (std::uint32_t i = 0; c && i < 64; ++i) {
    ASSERT_NE(write_return_imm(c->rw(), i), 0u);
    held.push_back(*c);
    c = arena.allocate(kChunk);
  }
  ASSERT_TRUE(FailsWith(c, Errc::exhausted));
  EXPECT_NE(c.error().to_string().find("staging pool"), std::string::npos)
      << c.error().to_string();
  const std::size_t staged = held.size() * kChunk;
  EXPECT_LE(staged, o.reserve_bytes / 2) << "the pool took no part";
  EXPECT_EQ(arena.stats().staging_bytes, staged);
  EXPECT_TRUE(FailsWith(arena.allocate(1), Errc::exhausted));
  ASSERT_TRUE(Ok(arena.seal(held[0])));
  EXPECT_EQ(call(held[0].rx()), 0u);
  Result<Chunk> after = arena.allocate(kChunk);
  ASSERT_TRUE(Ok(after)) << "a seal gave no staging back";
  for (std::uint32_t i = 1; i < held.size(); ++i) {
    Result<ChunkInfo> info = arena.find(held[i].rx());
    ASSERT_TRUE(Ok(info) && info->state == State::writable) << i;
    ASSERT_TRUE(Ok(arena.seal(held[i])));
    EXPECT_EQ(call(held[i].rx()), i);
  }
  EXPECT_TRUE(audit_arena(arena));
}

// Staging memory never runs out while code pages are free in a reservation
// the pool covers whole (up to 64 MiB): a fragmented pool still holds a
// chunk as large as the free code pages.
TEST_F(KernelWrite, FragmentedStagingStillHoldsEveryChunk) {
  const std::size_t ps = os_page_size();
  Options o = options(0);
  o.reserve_bytes = 16 * ps;
  Result<Arena> made = Arena::create(o);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  Result<Chunk> a = arena.allocate(4 * ps);
  Result<Chunk> b = arena.allocate(4 * ps);
  Result<Chunk> c = arena.allocate(4 * ps);
  ASSERT_TRUE(Ok(a) && Ok(b) && Ok(c));
  ASSERT_TRUE(Ok(arena.release(*b)));
  ASSERT_TRUE(Ok(arena.release(*a)));
  Result<Chunk> one = arena.allocate(ps);  // the pool's first page
  ASSERT_TRUE(Ok(one));
  // 8 code pages are free (a's and b's, quarantine 0); the pool has no run
  // of 8 left.
  Result<Chunk> big = arena.allocate(8 * ps);
  ASSERT_TRUE(Ok(big)) << "staging ran out though code pages were free";
  write_fn(*big, 0x88);
  write_fn(*one, 0x11);
  ASSERT_TRUE(Ok(arena.seal(*big)));
  ASSERT_TRUE(Ok(arena.seal(*one)));
  EXPECT_EQ(call(big->rx()), 0x88u);
  EXPECT_EQ(call(one->rx()), 0x11u);
  EXPECT_TRUE(audit_arena(arena));
}

TEST_F(KernelWrite, StagingIsRecycledNotFaultedInAfresh) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  Result<CodeHeap> heap = CodeHeap::create(arena);
  ASSERT_TRUE(Ok(heap));
  const std::size_t ps = arena.page_size();
  // 200 publishes of a page of functions each: 200 code pages, but the
  // staging memory written is the same page or two, over and over.
  for (std::uint32_t round = 0; round < 200; ++round) {
    for (std::size_t i = 0; i < ps / 256; ++i) {
      Result<Function> f = heap->allocate(256);
      ASSERT_TRUE(Ok(f));
      ASSERT_NE(write_return_imm(f->rw, round), 0u);
    }
    ASSERT_TRUE(Ok(heap->publish()));
  }
  EXPECT_EQ(heap->stats().pages, 200u);
  const std::span<std::byte> staging = arena.rw_range();
  const std::size_t touched = resident(staging.data(), staging.size());
  EXPECT_GE(touched, 1u);
  // A page or two in use, and up to 16 the heap holds ahead of need.
  EXPECT_LE(touched, 4u + 16u) << "staging pages: one per publish would be 200";
  std::printf(
      "[ figures  ] kernel_write: 200 publishes of one page each "
      "touched %zu staging page(s)\n",
      touched);
  // trim() gives the staging memory back too, except the heap's reserve
  // (writable chunks it holds).
  const std::size_t held = heap->stats().reserve_pages;
  ASSERT_TRUE(Ok(arena.trim()));
  EXPECT_EQ(resident(staging.data(), staging.size()), held);
}

// Every code page here was executable before its code was copied in: it
// held traps, read+execute, from the start. Where another core may have
// fetched those traps ahead and run them after the copy (AArch64), every
// commit that copies code in issues the cross-thread barrier: a Batch's
// seal of fresh chunks, a CodeHeap's first publish on a fresh page and its
// functions appended to that page once sealed. Where fetch is coherent
// (x86-64) none does: the barrier there costs a membarrier per publish for
// nothing. Traps written over released code need none either way.
TEST_F(KernelWrite, CodeCopiedInGetsTheBarrierWhereCoresMayFetchStale) {
  const bool expected = code_copied_in_needs_barrier(Backend::kernel_write);
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  auto barriers = [&] { return arena.stats().barriers; };
  auto membarriers = [&] { return arena.stats().syscalls.membarrier; };

  Result<Chunk> c = arena.allocate(1);
  ASSERT_TRUE(Ok(c));
  write_fn(*c, 0x51);
  Batch seal(arena);
  seal.seal(*c);
  std::uint64_t b0 = barriers(), m0 = membarriers();
  Result<CommitReport> r = seal.commit();
  ASSERT_TRUE(Ok(r));
  EXPECT_EQ(r->barrier, expected) << "a Batch's seal of a fresh chunk";
  EXPECT_EQ(barriers() - b0, expected ? 1u : 0u);
  EXPECT_EQ(membarriers() - m0, expected ? 1u : 0u);
  EXPECT_EQ(call(c->rx()), 0x51u);

  Result<CodeHeap> heap = CodeHeap::create(arena);
  ASSERT_TRUE(Ok(heap));
  auto publish_one = [&](std::uint32_t value,
                         const void*& rx) -> Result<CommitReport> {
    Result<Function> f = heap->allocate(64);
    if (!f) return f.error();
    EXPECT_NE(write_return_imm(f->rw, value), 0u);
    rx = f->rx;
    return heap->publish();
  };
  const void* first = nullptr;
  const void* second = nullptr;
  b0 = barriers();
  r = publish_one(0x52, first);
  ASSERT_TRUE(Ok(r));
  EXPECT_EQ(r->barrier, expected) << "a CodeHeap's publish on a fresh page";
  r = publish_one(0x53, second);
  ASSERT_TRUE(Ok(r));
  EXPECT_EQ(static_cast<const std::byte*>(second) -
                static_cast<const std::byte*>(first),
            64)
      << "not appended to the sealed page";
  EXPECT_EQ(r->barrier, expected) << "functions appended to a sealed page";
  EXPECT_EQ(barriers() - b0, expected ? 2u : 0u);
  EXPECT_EQ(call(first), 0x52u);
  EXPECT_EQ(call(second), 0x53u);

  // Traps over released code: nothing new to fetch.
  ASSERT_TRUE(Ok(heap->release(first)));
  b0 = barriers();
  r = heap->publish();
  ASSERT_TRUE(Ok(r));
  EXPECT_FALSE(r->barrier) << "traps written over a released function";
  EXPECT_EQ(barriers(), b0);
  EXPECT_EQ(call(second), 0x53u);
  EXPECT_TRUE(audit_arena(arena));
}

TEST_F(KernelWrite, FreshCodeIsMappedInBeforeTheFirstCall) {
  if (!detail::system_pal().capabilities().populate_read)
    GTEST_SKIP() << "no MADV_POPULATE_READ here (Linux < 5.14): fresh code "
                    "pages fault in on their first call instead";
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  const std::size_t ps = arena.page_size();
  std::vector<Chunk> c;
  Batch b(arena);
  for (std::uint32_t i = 0; i < 16; ++i) {
    Result<Chunk> x = arena.allocate(ps);
    ASSERT_TRUE(Ok(x));
    write_fn(*x, i);
    b.seal(*x);
    c.push_back(*x);
  }
  const Stats s0 = arena.stats();
  ASSERT_TRUE(Ok(b.commit()));
  const Stats s1 = arena.stats();
  EXPECT_EQ(s1.syscalls.madvise - s0.syscalls.madvise, 1u)
      << "one populate for the whole run";
  // Calling into 16 fresh pages takes no page fault: they were mapped in.
  rusage r0{}, r1{};
  ASSERT_EQ(::getrusage(RUSAGE_THREAD, &r0), 0);
  unsigned sum = 0;
  for (std::uint32_t i = 0; i < 16; ++i) sum += call(c[i].rx());
  ASSERT_EQ(::getrusage(RUSAGE_THREAD, &r1), 0);
  EXPECT_EQ(sum, 120u);
  EXPECT_LE(r1.ru_minflt - r0.ru_minflt, 2)
      << "calls into freshly sealed pages faulted them in one by one";
}

}  // namespace
}  // namespace wxa::test

namespace wxa::test {
namespace {

// Lanes (Options::lanes): each lane of the reservation has a memfd of its
// own, and each thread allocates from its own lane first, so that threads
// publishing side by side write to different files.
class KernelWriteLanes : public KernelWrite {
 protected:
  // 2 lanes of 64 pages.
  static Options lane_options() {
    Options o = options(0);
    o.lanes = 2;
    o.reserve_bytes = 128 * os_page_size();
    o.open_pages = 8;
    return o;
  }
};

TEST_F(KernelWriteLanes, AChunkAcrossTheLaneEdgeIsWrittenToBothMemfds) {
  Result<Arena> made = Arena::create(lane_options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  const std::size_t ps = arena.page_size();
  EXPECT_EQ(code_memfds(arena).size(), 0u) << "no page is open yet";
  // 100 pages: more than a lane, so the chunk crosses the edge.
  Result<Chunk> big = arena.allocate(100 * ps);
  ASSERT_TRUE(Ok(big));
  write_fn(*big, 0x1a);
  ASSERT_NE(write_return_imm(big->rw().subspan(99 * ps), 0x2b), 0u);
  ASSERT_TRUE(Ok(arena.seal(*big)));
  const auto* rx = static_cast<const std::byte*>(big->rx());
  EXPECT_EQ(call(rx), 0x1au);
  EXPECT_EQ(call(rx + 99 * ps), 0x2bu);
  EXPECT_EQ(code_memfds(arena).size(), 2u) << "a memfd per lane in use";
  EXPECT_TRUE(vmas_agree(arena.stats().vmas, arena));
  EXPECT_TRUE(audit_arena(arena));
  // Retired: traps on both sides of the edge.
  ASSERT_TRUE(Ok(arena.release(*big)));
  EXPECT_FALSE(holds_fn(rx, 0x1a));
  EXPECT_FALSE(holds_fn(rx + 99 * ps, 0x2b));
  EXPECT_TRUE(vmas_agree(arena.stats().vmas, arena));
  EXPECT_TRUE(audit_arena(arena));
  EXPECT_TRUE(still_works(arena));
}

// Sealing a chunk across the lane edge makes a write to each memfd; a
// failure at any call leaves the chunk writable and its code view as it
// was, and the arena usable.
TEST_F(KernelWriteLanes, FailureAtEveryCallOfACommitAcrossTheEdgeRollsBack) {
  const std::size_t ps = os_page_size();
  std::size_t calls = 0, writes = 0;
  {
    FaultPal pal;
    Result<Arena> made = detail::create_arena(lane_options(), pal);
    ASSERT_TRUE(Ok(made));
    Result<Chunk> big = made->allocate(100 * ps);
    ASSERT_TRUE(Ok(big));
    write_fn(*big, 0x3c);
    pal.count_only();
    ASSERT_TRUE(Ok(made->seal(*big)));
    calls = pal.failable_calls();
    writes = pal.calls(PalCall::write_shared);
  }
  EXPECT_GE(writes, 2u) << "one pwritev per memfd";
  for (std::size_t k = 1; k <= calls; ++k) {
    SCOPED_TRACE(::testing::Message()
                 << "failing call " << k << " of " << calls);
    FaultPal pal;
    Result<Arena> made = detail::create_arena(lane_options(), pal);
    ASSERT_TRUE(Ok(made));
    Arena& arena = *made;
    Result<Chunk> big = arena.allocate(100 * ps);
    ASSERT_TRUE(Ok(big));
    write_fn(*big, 0x3c);
    ASSERT_NE(write_return_imm(big->rw().subspan(99 * ps), 0x4d), 0u);
    const auto states = state_map(arena);
    pal.arm(k, ENOMEM);
    EXPECT_TRUE(FailsWith(arena.seal(*big), Errc::out_of_memory));
    EXPECT_TRUE(pal.fired());
    pal.disarm();
    EXPECT_EQ(state_map(arena), states);
    const auto* rx = static_cast<const std::byte*>(big->rx());
    EXPECT_FALSE(holds_fn(rx, 0x3c)) << "code left behind on one side";
    EXPECT_FALSE(holds_fn(rx + 99 * ps, 0x4d)) << "code left on the other";
    EXPECT_TRUE(vmas_agree(arena.stats().vmas, arena));
    EXPECT_TRUE(audit_arena(arena));
    // The staged bytes are intact: sealing again publishes them.
    ASSERT_TRUE(Ok(arena.seal(*big)));
    EXPECT_EQ(call(rx), 0x3cu);
    EXPECT_EQ(call(rx + 99 * ps), 0x4du);
    EXPECT_TRUE(audit_arena(arena));
  }
}

// A thread that runs what it is given, one task at a time, and stays alive
// (holding its lane) until destroyed.
class Worker {
 public:
  Worker() : thread_([this] { loop(); }) {}
  ~Worker() {
    {
      std::lock_guard g(m_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void run(std::function<void()> f) {
    std::unique_lock l(m_);
    task_ = std::move(f);
    cv_.notify_all();
    cv_.wait(l, [this] { return !task_; });
  }

 private:
  void loop() {
    std::unique_lock l(m_);
    for (;;) {
      cv_.wait(l, [this] { return stop_ || bool(task_); });
      if (stop_) return;
      task_();
      task_ = nullptr;
      cv_.notify_all();
    }
  }
  std::mutex m_;
  std::condition_variable cv_;
  std::function<void()> task_;
  bool stop_ = false;
  std::thread thread_;
};

// Opening the first pages of a lane above the first takes them out of the
// middle of a free run; when the OS refuses, the run is whole again and
// nothing else changed.
TEST_F(KernelWriteLanes, FailureToOpenPagesInALaneFallsBackToAnother) {
  const std::size_t ps = os_page_size();
  Worker workers[2];
  // Which worker allocates in which lane (two live threads: two lanes).
  std::size_t lane_of[2] = {};
  {
    Result<Arena> made = Arena::create(lane_options());
    ASSERT_TRUE(Ok(made));
    const auto base = reinterpret_cast<std::uintptr_t>(made->range().data());
    for (int w = 0; w < 2; ++w)
      workers[w].run([&, w] {
        Result<Chunk> c = made->allocate(ps);
        if (c)
          lane_of[w] =
              (reinterpret_cast<std::uintptr_t>(c->rx()) - base) / ps / 64;
      });
    ASSERT_NE(lane_of[0], lane_of[1]);
  }
  Worker& first = workers[lane_of[0] == 0 ? 0 : 1];
  Worker& second = workers[lane_of[0] == 0 ? 1 : 0];
  for (const int err : {ENOMEM, EACCES}) {
    FaultPal pal;
    Result<Arena> made = detail::create_arena(lane_options(), pal);
    ASSERT_TRUE(Ok(made));
    Arena& arena = *made;
    first.run([&] { EXPECT_TRUE(Ok(arena.allocate(ps))); });
    const auto states = state_map(arena);
    const auto kernel = kernel_map(arena);
    const Stats before = arena.stats();
    pal.arm(1, err, kAllSyscalls);
    // The lane's pages cannot be opened (its memfd not made): the chunk
    // comes from the lane that has room, and the failing lane is as it was.
    const void* fallback = nullptr;
    second.run([&] {
      Result<Chunk> c = arena.allocate(ps);
      ASSERT_TRUE(Ok(c));
      fallback = c->rx();
    });
    EXPECT_TRUE(pal.fired());
    pal.disarm();
    EXPECT_LT(static_cast<const std::byte*>(fallback),
              arena.range().data() + 64 * ps)
        << "not from lane 0";
    EXPECT_EQ(arena.stats().allocations, before.allocations + 1);
    ASSERT_TRUE(Ok(arena.release(fallback)));
    EXPECT_EQ(state_map(arena).back(), states.back()) << "lane 1 changed";
    (void)kernel;
    EXPECT_TRUE(vmas_agree(arena.stats().vmas, arena));
    // The run is whole again: the lane opens as if nothing had happened.
    second.run([&] {
      Result<Chunk> c = arena.allocate(ps);
      ASSERT_TRUE(Ok(c));
      EXPECT_EQ(static_cast<const std::byte*>(c->rx()),
                arena.range().data() + 64 * ps);
      write_fn(*c, 0x5e);
      ASSERT_TRUE(Ok(arena.seal(*c)));
      EXPECT_EQ(call(c->rx()), 0x5eu);
    });
    EXPECT_TRUE(audit_arena(arena));
  }
}

TEST_F(KernelWriteLanes, ThreadsAllocateInLanesOfTheirOwn) {
  Result<Arena> made = Arena::create(lane_options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  const std::size_t ps = arena.page_size();
  const auto base = reinterpret_cast<std::uintptr_t>(arena.range().data());
  // Two threads alive at the same time hold different lanes, whichever
  // allocates first; each stays until both are done. A chunk's writable
  // bytes are staged beside its lane too (the staging pool is split the
  // same way), so threads do not share staging pages either.
  std::vector<Chunk> chunks[2];
  std::vector<std::uintptr_t> staged[2];
  std::latch done(2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      for (std::uint32_t i = 0; i < 10; ++i) {
        Result<Chunk> c = arena.allocate(ps);
        if (!c) break;
        write_fn(*c, 0x100 * (t + 1) + i);
        staged[t].push_back(reinterpret_cast<std::uintptr_t>(c->rw().data()));
        if (!arena.seal(*c)) break;
        chunks[t].push_back(*c);
      }
      done.arrive_and_wait();
    });
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < 2; ++t)
    ASSERT_EQ(chunks[t].size(), 10u) << "thread " << t;
  auto lane = [&](const Chunk& c) {
    return (reinterpret_cast<std::uintptr_t>(c.rx()) - base) / ps / 64;
  };
  // The staging pool is split into as many parts as there are lanes, one
  // after the other.
  const auto rw_base =
      reinterpret_cast<std::uintptr_t>(arena.rw_range().data());
  const std::size_t part = arena.rw_range().size() / ps / 2;
  auto staging_lane = [&](std::uintptr_t rw) {
    return (rw - rw_base) / ps / part;
  };
  for (int t = 0; t < 2; ++t)
    for (std::uint32_t i = 0; i < 10; ++i) {
      EXPECT_EQ(lane(chunks[t][i]), lane(chunks[t][0])) << "thread " << t;
      EXPECT_EQ(staging_lane(staged[t][i]), lane(chunks[t][i]))
          << "thread " << t << ", chunk " << i;
      EXPECT_EQ(call(chunks[t][i].rx()), 0x100u * (t + 1) + i);
    }
  EXPECT_NE(lane(chunks[0][0]), lane(chunks[1][0]))
      << "both threads allocated in one lane";
  EXPECT_EQ(code_memfds(arena).size(), 2u);
  EXPECT_TRUE(vmas_agree(arena.stats().vmas, arena));
  EXPECT_TRUE(audit_arena(arena));
}

}  // namespace
}  // namespace wxa::test
