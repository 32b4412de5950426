// SPDX-License-Identifier: MIT
// Edges of the contract that attacks on it found: a barrier asked for where
// there is none, exhaustion that one backend or lane survives and another
// does not, and small defects (a patch of read-only data, a release after
// its page was retired, a patch over 4 GiB, a moved-from arena, an anchor
// reaching everything, a heap whose page was released behind its back).
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support/arena_util.hpp"
#include "support/backends.hpp"
#include "support/fault_pal.hpp"
#include "support/native_code.hpp"
#include "wxarena/arena.hpp"
#include "wxarena/code_heap.hpp"

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || \
    __has_feature(undefined_behavior_sanitizer)
#define WXA_TEST_UNDER_SANITIZER 1
#endif
#endif

namespace wxa::test {
namespace {

class Edges : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override { WXA_SKIP_IF_UNAVAILABLE(GetParam()); }
  Result<Arena> make() {
    Options o;
    o.backend = GetParam();
    o.reserve_bytes = kSmallReserve;
    return Arena::create(o);
  }
};

// `unsigned f()` returning `value` followed by traps, `n` bytes.
std::vector<std::byte> fn_bytes(std::uint32_t value, std::size_t n = 16) {
  std::vector<std::byte> out(n);
  EXPECT_EQ(write_return_imm(out, value, out.size()), out.size());
  return out;
}

// --- 7. Small defects
// ----------------------------------------------------------

// arena.hpp: patch needs an executable chunk. Read-only data is refused
// with illegal_transition, through Arena::patch and Batch::patch alike, and
// its bytes stay as they were.
TEST_P(Edges, PatchOfReadOnlyDataIsRefused) {
  Result<Arena> a = make();
  ASSERT_TRUE(Ok(a));
  Result<Chunk> c = a->allocate(64);
  ASSERT_TRUE(Ok(c));
  std::memset(c->rw().data(), 0x5A, 64);
  ASSERT_TRUE(Ok(a->seal(*c, Seal::read_only)));
  const std::vector<std::byte> bytes = fn_bytes(7);
  EXPECT_TRUE(FailsWith(a->patch(c->rx(), bytes), Errc::illegal_transition));
  Batch b(*a);
  b.patch(c->rx(), bytes);
  EXPECT_TRUE(FailsWith(b.commit(), Errc::illegal_transition));
  const auto* p = static_cast<const unsigned char*>(c->rx());
  for (int i = 0; i < 64; ++i) ASSERT_EQ(p[i], 0x5A) << "byte " << i;
  Result<ChunkInfo> info = a->find(c->rx());
  ASSERT_TRUE(Ok(info));
  EXPECT_EQ(info->state, State::read_only);
}

// A patch longer than 4 GiB (never a chunk's size) is one error, whichever
// way it is asked: out_of_bounds, and nothing is read from the bytes.
TEST_P(Edges, PatchOver4GiBIsOutOfBoundsBothWays) {
  Result<Arena> a = make();
  ASSERT_TRUE(Ok(a));
  Result<Chunk> c = a->allocate(64);
  ASSERT_TRUE(Ok(c));
  write_fn(*c, 42);
  ASSERT_TRUE(Ok(a->seal(*c)));
  // Only the size matters: a span that claims 5 GiB over a small buffer.
  std::byte small[16] = {};
  const std::span<const std::byte> huge(small, std::size_t{5} << 30);
  EXPECT_TRUE(FailsWith(a->patch(c->rx(), huge), Errc::out_of_bounds));
  Batch b(*a);
  b.patch(c->rx(), huge);
  EXPECT_TRUE(FailsWith(b.commit(), Errc::out_of_bounds));
  EXPECT_EQ(call(c->rx()), 42u);
}

// A moved-from arena answers every call with an error (or empty
// results), never by dereferencing null.
TEST_P(Edges, AMovedFromArenaReturnsErrors) {
  Result<Arena> a = make();
  ASSERT_TRUE(Ok(a));
  Result<Chunk> c = a->allocate(64);
  ASSERT_TRUE(Ok(c));
  Arena moved = std::move(*a);
  Arena& gone = *a;
  EXPECT_TRUE(FailsWith(gone.allocate(64), Errc::invalid_argument));
  EXPECT_TRUE(FailsWith(gone.seal(c->rx()), Errc::invalid_argument));
  EXPECT_TRUE(FailsWith(gone.unseal(c->rx()), Errc::invalid_argument));
  EXPECT_TRUE(FailsWith(gone.release(c->rx()), Errc::invalid_argument));
  EXPECT_TRUE(
      FailsWith(gone.patch(c->rx(), fn_bytes(7)), Errc::invalid_argument));
  EXPECT_TRUE(FailsWith(gone.find(c->rx()), Errc::invalid_argument));
  EXPECT_TRUE(FailsWith(gone.trim(), Errc::invalid_argument));
  EXPECT_EQ(gone.stats().reserved_bytes, 0u);
  EXPECT_EQ(gone.page_size(), 0u);
  EXPECT_TRUE(gone.range().empty());
  EXPECT_TRUE(gone.rw_range().empty());
  EXPECT_TRUE(gone.runs().empty());
  {
    Batch b(gone);
    b.seal(c->rx());
    EXPECT_TRUE(FailsWith(b.commit(), Errc::invalid_argument));
  }
  EXPECT_TRUE(FailsWith(CodeHeap::create(gone), Errc::invalid_argument));
  // The arena it moved to works.
  write_fn(*c, 42);
  ASSERT_TRUE(Ok(moved.seal(*c)));
  EXPECT_EQ(call(c->rx()), 42u);
}

// CodeHeap: releasing a function again after publish() retired its page
// (its only function was released) is a double release, not a pointer
// foreign to the heap.
TEST_P(Edges, ReleaseAfterThePageWasRetiredIsADoubleRelease) {
  Result<Arena> a = make();
  ASSERT_TRUE(Ok(a));
  Result<CodeHeap> heap = CodeHeap::create(*a);
  ASSERT_TRUE(Ok(heap));
  Result<Function> f = heap->allocate(64);
  ASSERT_TRUE(Ok(f));
  ASSERT_NE(write_return_imm(f->rw, 42), 0u);
  ASSERT_TRUE(Ok(heap->publish()));
  ASSERT_TRUE(Ok(heap->release(f->rx)));
  ASSERT_TRUE(Ok(heap->publish()));  // retires the emptied page
  EXPECT_EQ(heap->stats().pages, 0u);
  EXPECT_TRUE(FailsWith(heap->release(f->rx), Errc::double_release));
  // Still a foreign pointer: one that never was in the arena.
  static const int elsewhere = 0;
  EXPECT_TRUE(FailsWith(heap->release(&elsewhere), Errc::foreign_pointer));
}

// Destroying a heap after one of its pages was released through the arena,
// behind its back: every other page the heap held still goes back.
TEST_P(Edges, HeapDestroyAfterAPageWasReleasedBehindItsBack) {
  Result<Arena> a = make();
  ASSERT_TRUE(Ok(a));
  const std::size_t ps = a->page_size();
  std::vector<const void*> fns;
  {
    Result<CodeHeap> heap = CodeHeap::create(*a);
    ASSERT_TRUE(Ok(heap));
    // Functions of most of a page each: one page per function.
    for (int i = 0; i < 4; ++i) {
      Result<Function> f = heap->allocate(ps - ps / 4);
      ASSERT_TRUE(Ok(f));
      ASSERT_NE(write_return_imm(f->rw, 40u + unsigned(i)), 0u);
      fns.push_back(f->rx);
    }
    ASSERT_TRUE(Ok(heap->publish()));
    ASSERT_GE(heap->stats().pages, 4u);
    ASSERT_TRUE(Ok(a->release(fns[1])));  // behind the heap's back
  }
  const Stats s = a->stats();
  EXPECT_EQ(s.chunks_in(State::executable), 0u);
  EXPECT_EQ(s.chunks_in(State::writable), 0u);
  EXPECT_EQ(s.chunks_in(State::read_only), 0u);
  EXPECT_TRUE(audit_arena(*a));
}

INSTANTIATE_TEST_SUITE_P(Backends, Edges, ::testing::ValuesIn(kAllBackends),
                         backend_name);

// kernel_write: a write through a chunk's rw() after its seal lands in
// the staging memory it had (never executable), not in its code: the
// sealed function is unchanged. (That the write may then corrupt the next
// chunk staged there is docs/security.md's "stale pointers".)
TEST(EdgesStale, KernelWriteStaleRwLeavesSealedCodeAlone) {
  WXA_SKIP_IF_UNAVAILABLE(Backend::kernel_write);
  Options o;
  o.backend = Backend::kernel_write;
  o.reserve_bytes = kSmallReserve;
  Result<Arena> a = Arena::create(o);
  ASSERT_TRUE(Ok(a));
  Result<Chunk> c = a->allocate(64);
  ASSERT_TRUE(Ok(c));
  write_fn(*c, 42);
  ASSERT_TRUE(Ok(a->seal(*c)));
  ASSERT_NE(write_return_imm(c->rw(), 7), 0u);  // the stale write
  EXPECT_EQ(call(c->rx()), 42u);
  EXPECT_TRUE(holds_fn(c->rx(), 42));
}

// An anchor whose reach covers the whole address space: any free range
// will do (the gap between user space and [vsyscall] is not one).
TEST(EdgesAnchor, ReachOfEverythingFindsARange) {
  static const int here = 0;
  Options o;
  o.reserve_bytes = kSmallReserve;
  o.anchor = &here;
  o.reach = std::numeric_limits<std::size_t>::max();
  Result<Arena> a = Arena::create(o);
  ASSERT_TRUE(Ok(a));
  EXPECT_TRUE(still_works(*a, 0xABCD));
}

// --- 4. A barrier asked for where there is none
// --------------------------------

// CommitFlags::barrier on a host without membarrier SYNC_CORE (here its
// registration fails) is refused with not_supported before anything
// changes: the caller asked for every thread to be synchronised, and the
// library cannot do it.
TEST_P(Edges, BarrierAskedForWithoutMembarrierIsRefused) {
  FaultPal pal;
  pal.arm_persistent(1, EPERM,
                     bit(PalCall::register_barrier) | bit(PalCall::barrier));
  Options o;
  o.backend = GetParam();
  o.reserve_bytes = kSmallReserve;
  Result<Arena> a = detail::create_arena(o, pal);
  ASSERT_TRUE(Ok(a));
  Result<Chunk> c = a->allocate(64);
  ASSERT_TRUE(Ok(c));
  write_fn(*c, 42);
  Batch b(*a);
  b.seal(*c);
  Result<CommitReport> r = b.commit(CommitFlags::barrier);
  ASSERT_TRUE(FailsWith(r, Errc::not_supported));
  Result<ChunkInfo> info = a->find(c->rx());
  ASSERT_TRUE(Ok(info));
  EXPECT_EQ(info->state, State::writable) << "a refused commit changed state";
  // Without the flag the commit goes through.
  ASSERT_TRUE(Ok(b.commit()));
  EXPECT_EQ(call(c->rx()), 42u);
}

// A rollback that rewrites code (kernel_write: the old bytes copied back
// over a failed patch) makes them visible to instruction fetch as a forward
// write does: a flush of the rewritten range after the rewrite.
TEST(EdgesRollback, RestoredCodeIsFlushedLikeWrittenCode) {
  WXA_SKIP_IF_UNAVAILABLE(Backend::kernel_write);
  if (!host().barrier)
    GTEST_SKIP() << "no membarrier SYNC_CORE here (probe: barrier): a patch "
                    "makes no barrier call whose failure would roll back";
  FaultPal pal;
  Options o;
  o.backend = Backend::kernel_write;
  o.reserve_bytes = kSmallReserve;
  Result<Arena> a = detail::create_arena(o, pal);
  ASSERT_TRUE(Ok(a));
  Result<Chunk> c = a->allocate(64);
  ASSERT_TRUE(Ok(c));
  write_fn(*c, 42);
  ASSERT_TRUE(Ok(a->seal(*c)));
  pal.reset_counts();
  pal.arm(1, EPERM, bit(PalCall::barrier));
  ASSERT_FALSE(a->patch(c->rx(), fn_bytes(7)));
  ASSERT_TRUE(pal.fired());
  EXPECT_EQ(call(c->rx()), 42u);
  // The log: the patch's write, its flush, the failed barrier, the write
  // of the old bytes back, and then a flush over them.
  const std::vector<PalEvent>& log = pal.log();
  std::size_t last_write = log.size();
  for (std::size_t k = 0; k < log.size(); ++k)
    if (log[k].call == PalCall::write_shared) last_write = k;
  ASSERT_LT(last_write, log.size()) << "no write";
  bool flushed = false;
  const auto* at = static_cast<const std::byte*>(c->rx());
  for (std::size_t k = last_write + 1; k < log.size(); ++k) {
    const auto* p = static_cast<const std::byte*>(log[k].p);
    flushed |= log[k].call == PalCall::flush_icache && p <= at &&
               at + 16 <= p + log[k].bytes;
  }
  EXPECT_TRUE(flushed) << "the restored bytes were not flushed";
}

// --- 5. Exhaustion that another backend or lane survives
// -------------------------

// Runs `body` in a fork()ed child; its exit code, or 100 + signal.
int in_child(const std::function<int()>& body) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) ::_exit(body());
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return WIFSIGNALED(status) ? 100 + WTERMSIG(status) : -1;
}

// The address space this process maps now (VmSize), in bytes.
std::size_t address_space_in_use() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  std::size_t kib = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "VmSize: %zu kB", &kib) == 1) break;
  std::fclose(f);
  return kib << 10;
}

// Under an address-space limit that leaves room for the default 1 GiB
// reservation once but not three times, Backend::automatic with default
// options still makes an arena that works (protect does).
TEST(EdgesExhaustion, AutomaticFitsUnderAnAddressSpaceLimit) {
  WXA_SKIP_IF_UNAVAILABLE(Backend::protect);
  const int rc = in_child([] {
    const std::size_t used = address_space_in_use();
    if (used == 0) return 1;
    const rlimit lim{used + (std::size_t{3} << 29),
                     used + (std::size_t{3} << 29)};  // + 1.5 GiB
    if (::setrlimit(RLIMIT_AS, &lim) != 0) return 1;
    {
      Options o;
      o.backend = Backend::protect;
      Result<Arena> p = Arena::create(o);
      if (!p) return 2;  // the limit leaves no room at all
    }
    Result<Arena> a = Arena::create();
    if (!a) return 3;
    Result<Chunk> c = a->allocate(64);
    if (!c) return 4;
    if (write_return_imm(c->rw(), 42) == 0 || !a->seal(*c)) return 4;
    return call(c->rx()) == 42 ? 0 : 5;
  });
  EXPECT_EQ(rc, 0) << "1: setup; 2: protect alone does not fit; 3: automatic "
                      "fails; 4/5: its arena does not work";
}

// kernel_write with lanes: a thread whose lane's memfd cannot be made (no
// descriptor left: EMFILE) allocates from a lane that exists.
TEST(EdgesExhaustion, ALaneWithoutAMemfdFallsBackToAnother) {
  WXA_SKIP_IF_UNAVAILABLE(Backend::kernel_write);
#if defined(__SANITIZE_ADDRESS__) || defined(WXA_TEST_UNDER_SANITIZER)
  GTEST_SKIP() << "the sanitizers' runtime opens descriptors of its own (a "
                  "pipe to check that memory is readable), which this test "
                  "takes away";
#endif
  const int rc = in_child([] {
    Options o;
    o.backend = Backend::kernel_write;
    o.reserve_bytes = kSmallReserve;
    o.lanes = 4;
    Result<Arena> a = Arena::create(o);
    if (!a) return 1;
    Result<Chunk> first = a->allocate(64);  // this thread's lane
    if (!first) return 1;
    rlimit old{};
    if (::getrlimit(RLIMIT_NOFILE, &old) != 0) return 1;
    const int next = ::dup(0);
    if (next < 0 || ::close(next) != 0) return 1;
    rlimit none = old;
    none.rlim_cur = static_cast<rlim_t>(next);
    if (::setrlimit(RLIMIT_NOFILE, &none) != 0) return 1;
    int result = 0;
    // Another thread, alive while this one holds its slot: another lane.
    std::thread t([&] {
      Result<Chunk> c = a->allocate(64);
      if (!c) {
        result = c.error() == Errc::os_error ? 2 : 3;
        return;
      }
      if (write_return_imm(c->rw(), 42) == 0 || !a->seal(*c)) {
        result = 4;
        return;
      }
      result = call(c->rx()) == 42 ? 0 : 5;
    });
    t.join();
    return result;
  });
  EXPECT_EQ(rc, 0) << "1: setup; 2: the allocation failed with EMFILE "
                      "although lane 0 has room; 3: another error; 4/5: the "
                      "chunk does not work";
}

}  // namespace
}  // namespace wxa::test
