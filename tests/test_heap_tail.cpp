// SPDX-License-Identifier: MIT
// A CodeHeap on kernel_write keeps putting small functions on its last page
// after that page is sealed: each new one is written in the heap's shadow
// page and copied in by the next publish, over bytes that never held code.
// What that must keep: one pwritev a publish and no fresh page, the same
// page; new code never over a released function's bytes; released ones
// trap, pending ones released before their publish never run; a failed
// publish changes nothing; and elsewhere (protect, dual_map) a sealed page
// takes nothing more.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "support/arena_util.hpp"
#include "support/backends.hpp"
#include "support/each_failure.hpp"
#include "support/fault_pal.hpp"
#include "support/native_code.hpp"
#include "support/process.hpp"
#include "wxarena/arena.hpp"
#include "wxarena/code_heap.hpp"

namespace wxa::test {
namespace {

class HeapTail : public ::testing::Test {
 protected:
  void SetUp() override { WXA_SKIP_IF_UNAVAILABLE(Backend::kernel_write); }
  static Options options() {
    Options o;
    o.backend = Backend::kernel_write;
    o.reserve_bytes = kSmallReserve;
    o.quarantine = 0;
    return o;
  }
};
using HeapTailDeathTest = HeapTail;

std::uintptr_t page_of(const void* p, std::size_t page_size) {
  return reinterpret_cast<std::uintptr_t>(p) / page_size;
}

// A function `a` (returning value) published, then `b` (value + 1) put on
// the sealed page after it, not yet published.
void publish_then_append(CodeHeap& heap, std::uint32_t value, Function& a,
                         Function& b) {
  Result<Function> fa = heap.allocate(64);
  ASSERT_TRUE(Ok(fa));
  ASSERT_NE(write_return_imm(fa->rw, value), 0u);
  ASSERT_TRUE(Ok(heap.publish()));
  Result<Function> fb = heap.allocate(64);
  ASSERT_TRUE(Ok(fb));
  ASSERT_NE(write_return_imm(fb->rw, value + 1), 0u);
  a = *fa;
  b = *fb;
}

// One function a publish, each released after its call, as a JIT that
// compiles one query at a time does: every publish after the first is one
// pwritev (the new function, and the traps of the one before it), no page
// is opened or faulted in, and the functions share the first one's page
// until it is full. (The emptied last page stays the heap's because a new
// function went on it before the publish.)
TEST_F(HeapTail, OneFunctionAPublishIsOnePwritevOnTheSamePage) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Result<CodeHeap> heap = CodeHeap::create(*made);
  ASSERT_TRUE(Ok(heap));
  const std::size_t ps = made->page_size();
  constexpr std::size_t kSize = 128;
  const void* first = nullptr;
  const void* before = nullptr;
  for (std::uint32_t i = 0; i < ps / kSize; ++i) {
    Result<Function> f = heap->allocate(kSize);
    ASSERT_TRUE(Ok(f));
    ASSERT_NE(write_return_imm(f->rw, 100 + i), 0u);
    if (!first) first = f->rx;
    EXPECT_EQ(page_of(f->rx, ps), page_of(first, ps)) << "function " << i;
    const SyscallCounts n0 = made->stats().syscalls;
    ASSERT_TRUE(Ok(heap->publish()));
    const SyscallCounts n = made->stats().syscalls;
    if (i > 0) {
      // (And the cross-thread barrier where cores may fetch stale code.)
      const unsigned barrier =
          code_copied_in_needs_barrier(Backend::kernel_write) ? 1 : 0;
      EXPECT_EQ(n.write - n0.write, 1u) << "function " << i;
      EXPECT_EQ(n.membarrier - n0.membarrier, barrier) << "function " << i;
      EXPECT_EQ(n.total() - n0.total(), 1u + barrier) << "function " << i;
      // The one before it traps now; this one runs.
      EXPECT_FALSE(holds_fn(before, 100 + i - 1));
    }
    EXPECT_EQ(call(f->rx), 100 + i);
    ASSERT_TRUE(Ok(heap->release(f->rx)));
    before = f->rx;
  }
  // The page is full: the next function goes on another one.
  Result<Function> g = heap->allocate(kSize);
  ASSERT_TRUE(Ok(g));
  EXPECT_NE(page_of(g->rx, ps), page_of(first, ps));
  ASSERT_NE(write_return_imm(g->rw, 7), 0u);
  ASSERT_TRUE(Ok(heap->publish()));
  EXPECT_EQ(call(g->rx), 7u);
  EXPECT_TRUE(audit_arena(*made));
}

// New functions go after every byte the page ever used: never over a
// released function, whose bytes stay traps, and a stale call to it traps
// after the new code landed beside it.
TEST_F(HeapTailDeathTest, NewCodeNeverLandsOnAReleasedFunction) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Result<CodeHeap> heap = CodeHeap::create(*made);
  ASSERT_TRUE(Ok(heap));
  std::vector<const void*> fns;
  for (std::uint32_t i = 0; i < 3; ++i) {
    Result<Function> f = heap->allocate(48);
    ASSERT_TRUE(Ok(f));
    ASSERT_NE(write_return_imm(f->rw, 30 + i), 0u);
    fns.push_back(f->rx);
  }
  ASSERT_TRUE(Ok(heap->publish()));
  ASSERT_TRUE(Ok(heap->release(fns[2])));  // the last: its end is not reused
  Result<Function> g = heap->allocate(48);
  ASSERT_TRUE(Ok(g));
  EXPECT_GE(static_cast<const std::byte*>(g->rx),
            static_cast<const std::byte*>(fns[2]) + 48);
  // Written in the heap's own memory, not in the code.
  const auto* rw = g->rw.data();
  EXPECT_FALSE(rw >= made->range().data() &&
               rw < made->range().data() + made->range().size());
  ASSERT_NE(write_return_imm(g->rw, 40), 0u);
  // Until its publish, the code view holds traps there.
  EXPECT_FALSE(holds_fn(g->rx, 40));
  ASSERT_TRUE(Ok(heap->publish()));
  EXPECT_EQ(call(g->rx), 40u);
  EXPECT_EQ(call(fns[0]), 30u);
  EXPECT_EQ(call(fns[1]), 31u);
  EXPECT_EXIT((void)call(fns[2]), ::testing::KilledBySignal(SIGTRAP), "");
  EXPECT_EQ(heap->stats().live_functions, 3u);
  EXPECT_EQ(heap->stats().pending_functions, 0u);
  EXPECT_TRUE(audit_arena(*made));
}

// A function put on the sealed page and released before any publish never
// becomes code: its bytes are copied in as traps (with a live neighbour) or
// not at all, and a call to its address traps.
TEST_F(HeapTailDeathTest, AppendedFunctionsReleasedBeforeThePublishNeverRun) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Result<CodeHeap> heap = CodeHeap::create(*made);
  ASSERT_TRUE(Ok(heap));
  Result<Function> a = heap->allocate(64);
  ASSERT_TRUE(Ok(a));
  ASSERT_NE(write_return_imm(a->rw, 1), 0u);
  ASSERT_TRUE(Ok(heap->publish()));
  Result<Function> b = heap->allocate(64);
  Result<Function> c = heap->allocate(64);
  ASSERT_TRUE(Ok(b) && Ok(c));
  ASSERT_EQ(page_of(b->rx, made->page_size()),
            page_of(a->rx, made->page_size()));
  ASSERT_NE(write_return_imm(b->rw, 2), 0u);
  ASSERT_NE(write_return_imm(c->rw, 3), 0u);
  EXPECT_EQ(heap->stats().pending_functions, 2u);
  ASSERT_TRUE(Ok(heap->release(b->rx)));
  EXPECT_EQ(heap->stats().pending_functions, 1u);
  EXPECT_EQ(heap->release(b->rx).error(), Errc::double_release);
  ASSERT_TRUE(Ok(heap->publish()));
  EXPECT_EQ(call(c->rx), 3u);
  EXPECT_EQ(call(a->rx), 1u);
  const auto* p = static_cast<const std::byte*>(b->rx);
  for (std::size_t i = 0; i < 64; ++i)
    ASSERT_EQ(p[i], trap_byte_at(reinterpret_cast<std::uintptr_t>(p + i)));
  EXPECT_EXIT((void)call(b->rx), ::testing::KilledBySignal(SIGTRAP), "");
  // All of them released, the page emptied: the publish retires it (a
  // last page is kept only for functions put on it before that publish),
  // and its addresses trap.
  ASSERT_TRUE(Ok(heap->release(a->rx)));
  ASSERT_TRUE(Ok(heap->release(c->rx)));
  ASSERT_TRUE(Ok(heap->publish()));
  EXPECT_EQ(heap->stats().pages, 0u);
  EXPECT_EQ(heap->stats().committed_bytes,
            heap->stats().reserve_pages * made->page_size());
  EXPECT_EXIT((void)call(c->rx), ::testing::KilledBySignal(SIGTRAP), "");
  EXPECT_EXIT((void)call(a->rx), ::testing::KilledBySignal(SIGTRAP), "");
  EXPECT_TRUE(audit_arena(*made));
}

// A publish of appended functions that fails at any of its calls changes
// nothing: the function is still pending, its address still traps, and the
// next publish copies it in.
TEST_F(HeapTail, AFailedPublishOfAppendedCodeChangesNothing) {
  std::size_t calls = 0;
  const auto run = [&calls](FaultPal& pal, Arena& arena, std::size_t fail_at) {
    Result<CodeHeap> heap = CodeHeap::create(arena);
    ASSERT_TRUE(Ok(heap));
    Result<Function> a = heap->allocate(32);
    ASSERT_TRUE(Ok(a));
    ASSERT_NE(write_return_imm(a->rw, 50), 0u);
    ASSERT_TRUE(Ok(heap->publish()));
    ASSERT_TRUE(Ok(heap->release(a->rx)));
    Result<Function> b = heap->allocate(32);
    ASSERT_TRUE(Ok(b));
    ASSERT_NE(write_return_imm(b->rw, 51), 0u);
    if (fail_at == 0) {
      pal.count_only();
      ASSERT_TRUE(Ok(heap->publish()));
      calls = pal.failable_calls();
      return;
    }
    pal.arm(fail_at, EIO);
    EXPECT_FALSE(Ok(heap->publish()));
    EXPECT_TRUE(pal.fired());
    pal.disarm();
    EXPECT_EQ(heap->stats().pending_functions, 1u);
    EXPECT_FALSE(holds_fn(b->rx, 51)) << "appended code landed anyway";
    EXPECT_TRUE(holds_fn(a->rx, 50)) << "the traps were not undone";
    ASSERT_TRUE(Ok(heap->publish()));
    EXPECT_EQ(call(b->rx), 51u);
    EXPECT_FALSE(holds_fn(a->rx, 50));
  };
  for_each_failing_call(options(), calls, run);
}

// One function published after the release of the one right before it:
// the traps of the released one and the new code lie next to each other in
// the shadow, and go in as one piece (one pwrite of both, nothing else).
TEST_F(HeapTail, APublishAfterAReleaseIsOneWriteOfOnePiece) {
  FaultPal pal;
  Result<Arena> made = detail::create_arena(options(), pal);
  ASSERT_TRUE(Ok(made));
  Result<CodeHeap> heap = CodeHeap::create(*made);
  ASSERT_TRUE(Ok(heap));
  constexpr std::size_t kSize = 64;
  Result<Function> a = heap->allocate(kSize);
  ASSERT_TRUE(Ok(a));
  ASSERT_NE(write_return_imm(a->rw, 60), 0u);
  ASSERT_TRUE(Ok(heap->publish()));
  EXPECT_EQ(call(a->rx), 60u);
  ASSERT_TRUE(Ok(heap->release(a->rx)));
  Result<Function> b = heap->allocate(kSize);
  ASSERT_TRUE(Ok(b));
  ASSERT_EQ(static_cast<const std::byte*>(b->rx),
            static_cast<const std::byte*>(a->rx) + kSize);
  ASSERT_NE(write_return_imm(b->rw, 61), 0u);
  // A stale pointer wrote code into the shadow where the released function
  // lay: the publish writes traps there, not this.
  ASSERT_NE(
      write_return_imm(std::span<std::byte>(b->rw.data() - kSize, kSize), 66),
      0u);
  pal.reset_counts();
  ASSERT_TRUE(Ok(heap->publish()));
  std::vector<PalEvent> writes;
  std::size_t barriers = 0;
  for (const PalEvent& e : pal.log()) {
    if (e.call == PalCall::barrier) {
      // Where cores may fetch stale code: after the write, never before.
      ++barriers;
      EXPECT_EQ(writes.size(), 1u) << "the barrier came before the write";
    } else if (e.call != PalCall::flush_icache) {
      writes.push_back(e);
    }
  }
  EXPECT_EQ(barriers,
            code_copied_in_needs_barrier(Backend::kernel_write) ? 1u : 0u);
  ASSERT_EQ(writes.size(), 1u);
  EXPECT_EQ(writes[0].call, PalCall::write_shared);
  EXPECT_EQ(writes[0].bytes, 2 * kSize);
  EXPECT_EQ(call(b->rx), 61u);
  EXPECT_FALSE(holds_fn(a->rx, 60));
  EXPECT_FALSE(holds_fn(a->rx, 66));
  EXPECT_TRUE(audit_arena(*made));
}

// The heap's last page released behind its back (through the arena): the
// publish of what was appended to it is refused with illegal_transition,
// nothing is written, and the arena goes on working.
TEST_F(HeapTail, APublishOntoAPageReleasedBehindTheHeapsBackIsRefused) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Result<CodeHeap> heap = CodeHeap::create(*made);
  ASSERT_TRUE(Ok(heap));
  Function a, b;
  ASSERT_NO_FATAL_FAILURE(publish_then_append(*heap, 70, a, b));
  ASSERT_TRUE(Ok(made->release(a.rx)));  // a's page: not the caller's
  Result<CommitReport> r = heap->publish();
  ASSERT_FALSE(Ok(r));
  EXPECT_EQ(r.error().code(), Errc::illegal_transition);
  EXPECT_FALSE(holds_fn(b.rx, 71));
  Result<Chunk> c = made->allocate(64);
  ASSERT_TRUE(Ok(c));
  write_fn(*c, 72);
  ASSERT_TRUE(Ok(made->seal(*c)));
  EXPECT_EQ(call(c->rx()), 72u);
  EXPECT_TRUE(audit_arena(*made));
}

// Functions appended to the sealed last page were executable bytes (traps)
// before: on AArch64 another core may have fetched them. A publish asked
// for the barrier issues it (the full commit, not the quick one); where the
// host has no membarrier SYNC_CORE it is refused and nothing changes.
TEST_F(HeapTail, AnAppendedPublishAskedForTheBarrierIssuesIt) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Result<CodeHeap> heap = CodeHeap::create(*made);
  ASSERT_TRUE(Ok(heap));
  Function a, b;
  ASSERT_NO_FATAL_FAILURE(publish_then_append(*heap, 95, a, b));
  const SyscallCounts n0 = made->stats().syscalls;
  Result<CommitReport> r = heap->publish(CommitFlags::barrier);
  if (!Ok(r)) {
    ASSERT_EQ(r.error().code(), Errc::not_supported);
    EXPECT_FALSE(holds_fn(b.rx, 96));
    EXPECT_EQ(heap->stats().pending_functions, 1u);
    GTEST_SKIP() << "no membarrier SYNC_CORE here: the barrier is refused";
  }
  EXPECT_TRUE(r->barrier);
  EXPECT_EQ(made->stats().syscalls.membarrier - n0.membarrier, 1u);
  EXPECT_EQ(call(b.rx), 96u);
  EXPECT_EQ(call(a.rx), 95u);
}

// A publish whose write fails and whose undoing fails too would leave code
// the arena cannot vouch for: fatal, as for any commit. (Re-run in a fresh
// process: an arena refuses every call in a fork() child.)
TEST_F(HeapTailDeathTest, AFailedUndoOfAnAppendedPublishIsFatal) {
#ifndef _WIN32
  if (const char* why = exec_unavailable_reason())
    GTEST_SKIP() << why << "; an arena refuses to work in a fork() child";
#endif
  struct Style {
    std::string saved = GTEST_FLAG_GET(death_test_style);
    Style() { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
    ~Style() { GTEST_FLAG_SET(death_test_style, saved); }
  } style;
  FaultPal pal;
  Result<Arena> made = detail::create_arena(options(), pal);
  ASSERT_TRUE(Ok(made));
  Result<CodeHeap> heap = CodeHeap::create(*made);
  ASSERT_TRUE(Ok(heap));
  Function a, b;
  ASSERT_NO_FATAL_FAILURE(publish_then_append(*heap, 80, a, b));
  EXPECT_DEATH(
      {
        pal.arm_persistent(1, EIO);
        (void)heap->publish();
      },
      "wxarena: fatal: cannot restore code");
  // In this process nothing happened.
  ASSERT_TRUE(Ok(heap->publish()));
  EXPECT_EQ(call(b.rx), 81u);
}

// On the defaults a user gets (Options{}, the default reservation), where
// automatic picks kernel_write: the tail page works as above, and a stale
// rw pointer into the heap's shadow page (a function already published)
// cannot reach published code: what the next publish copies in starts
// after it.
TEST(HeapTailDefaults, OnDefaultOptionsAStaleShadowPointerCannotReachCode) {
  Result<Arena> made = Arena::create(Options{});
  ASSERT_TRUE(Ok(made));
  if (made->backend() != Backend::kernel_write)
    GTEST_SKIP() << "automatic picked another backend on this host; the "
                    "tail page is kernel_write's";
  Result<CodeHeap> heap = CodeHeap::create(*made);
  ASSERT_TRUE(Ok(heap));
  const std::size_t ps = made->page_size();
  Result<Function> a = heap->allocate(64);
  ASSERT_TRUE(Ok(a));
  ASSERT_NE(write_return_imm(a->rw, 1), 0u);
  ASSERT_TRUE(Ok(heap->publish()));
  Result<Function> b = heap->allocate(64);
  ASSERT_TRUE(Ok(b));
  ASSERT_EQ(page_of(b->rx, ps), page_of(a->rx, ps));
  ASSERT_NE(write_return_imm(b->rw, 2), 0u);
  const SyscallCounts n0 = made->stats().syscalls;
  ASSERT_TRUE(Ok(heap->publish()));
  // One write (and the barrier where cores may fetch stale code).
  EXPECT_EQ(made->stats().syscalls.total() - n0.total(),
            code_copied_in_needs_barrier(Backend::kernel_write) ? 2u : 1u);
  EXPECT_EQ(call(b->rx), 2u);
  // The attack: b's old rw pointer, written after b's publish.
  ASSERT_NE(write_return_imm(b->rw, 666), 0u);
  Result<Function> c = heap->allocate(64);
  ASSERT_TRUE(Ok(c));
  ASSERT_NE(write_return_imm(c->rw, 3), 0u);
  ASSERT_TRUE(Ok(heap->publish()));
  EXPECT_EQ(call(b->rx), 2u) << "a stale shadow write reached published code";
  EXPECT_EQ(call(a->rx), 1u);
  EXPECT_EQ(call(c->rx), 3u);
  EXPECT_TRUE(audit_arena(*made));
}

// Where the backend flips protections, a sealed page takes nothing more:
// the next function goes on a fresh page.
TEST(HeapTailElsewhere, ASealedPageTakesNoMoreFunctions) {
  int ran = 0;
  for (Backend b : {Backend::protect, Backend::dual_map}) {
    if (unavailable_reason(b)) continue;
    ++ran;
    SCOPED_TRACE(b == Backend::protect ? "protect" : "dual_map");
    Options o;
    o.backend = b;
    o.reserve_bytes = kSmallReserve;
    Result<Arena> made = Arena::create(o);
    ASSERT_TRUE(Ok(made));
    Result<CodeHeap> heap = CodeHeap::create(*made);
    ASSERT_TRUE(Ok(heap));
    Result<Function> a = heap->allocate(32);
    ASSERT_TRUE(Ok(a));
    ASSERT_NE(write_return_imm(a->rw, 60), 0u);
    ASSERT_TRUE(Ok(heap->publish()));
    Result<Function> c = heap->allocate(32);
    ASSERT_TRUE(Ok(c));
    EXPECT_NE(page_of(c->rx, made->page_size()),
              page_of(a->rx, made->page_size()));
    ASSERT_NE(write_return_imm(c->rw, 61), 0u);
    ASSERT_TRUE(Ok(heap->publish()));
    EXPECT_EQ(call(a->rx), 60u);
    EXPECT_EQ(call(c->rx), 61u);
  }
  if (ran == 0) GTEST_SKIP() << "neither protect nor dual_map on this host";
}

}  // namespace
}  // namespace wxa::test
