// SPDX-License-Identifier: MIT
// All-or-nothing: a platform call failing at any position of a commit (or of
// an allocation or trim) leaves the tracked states and the kernel's maps as
// they were, and the arena usable; an undo that fails is fatal.
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "support/arena_util.hpp"
#include "support/fault_pal.hpp"
#include "support/maps.hpp"
#ifndef _WIN32
#include "support/process.hpp"
#endif
#include "wxarena/arena.hpp"

namespace wxa::test {
namespace {

struct Injected {
  int err;
  Errc code;
};
// The errnos the OS gives for these calls, and what the arena must report.
const Injected kErrnos[] = {{ENOMEM, Errc::out_of_memory},
                            {EACCES, Errc::permission_denied},
                            {EINVAL, Errc::invalid_argument}};

// The scenario: chunks in every state, and one batch that seals some (to
// code and to data), unseals others, releases others, including a chunk
// that held code before (so the commit needs the barrier, where the kernel
// has one). Its runs, lowest address first:
//   [a0 a1 a2] seal execute   [a3] seal read-only   g0 stays writable
//   [b0 b1] unseal (b0 executable, b1 read-only)     g1 stays writable
//   [c0 c1 c2] release (executable, writable, read-only)
//   g2 stays writable   [d0] release
//   [d1 (3 pages), r (2 pages)] seal execute: one run, where r was
//   executable before, unsealed and patched (so the commit needs a barrier)
struct Scenario {
  std::vector<Chunk> all;            // every chunk, in allocation order
  std::vector<std::uint32_t> value;  // what each one's function returns
  std::vector<const void*> in_batch;
  std::size_t a0, a3, b0, b1, c0, d0, d1, r, g0;
};

// Builds the scenario in `arena` and queues its batch in `batch`.
void build(Arena& arena, Batch& batch, Scenario& s) {
  const std::size_t ps = arena.page_size();
  auto add = [&](std::size_t pages) {
    Result<Chunk> c = arena.allocate(pages * ps);
    EXPECT_TRUE(Ok(c));
    const auto id = static_cast<std::uint32_t>(0x10000 + s.all.size());
    if (c) {
      EXPECT_NE(write_return_imm(c->rw(), id), 0u);
    }
    s.all.push_back(c ? *c : Chunk());
    s.value.push_back(id);
    return s.all.size() - 1;
  };
  s.a0 = add(1);
  add(1);
  add(1);
  s.a3 = add(1);
  s.g0 = add(1);
  s.b0 = add(1);
  s.b1 = add(1);
  add(1);  // g1
  s.c0 = add(1);
  add(1);
  add(1);
  add(1);  // g2 (between the c run and d0 keeps the release runs apart)
  s.d0 = add(1);
  s.d1 = add(3);
  s.r = add(2);
  auto rx = [&](std::size_t i) { return s.all[i].rx(); };

  // Set up the starting states.
  Batch pre(arena);
  pre.seal(rx(s.b0));
  pre.seal(rx(s.b1), Seal::read_only);
  pre.seal(rx(s.c0));
  pre.seal(rx(s.c0 + 2), Seal::read_only);
  pre.seal(rx(s.d0));
  pre.seal(rx(s.r));
  EXPECT_TRUE(Ok(pre.commit()));
  Result<Chunk> w = arena.unseal(rx(s.r));
  EXPECT_TRUE(Ok(w));
  s.value[s.r] = 0x2E5EA1;
  if (w) {
    EXPECT_NE(write_return_imm(w->rw(), s.value[s.r]), 0u);
  }

  for (std::size_t i = s.a0; i < s.a0 + 3; ++i) batch.seal(rx(i));
  batch.seal(rx(s.a3), Seal::read_only);
  batch.unseal(rx(s.b0));
  batch.unseal(rx(s.b1));
  for (std::size_t i = s.c0; i < s.c0 + 3; ++i) batch.release(rx(i));
  batch.release(rx(s.d0));
  batch.seal(rx(s.d1));
  batch.seal(rx(s.r));
  for (std::size_t i : {s.a0, s.a0 + 1, s.a0 + 2, s.a3, s.b0, s.b1, s.c0,
                        s.c0 + 1, s.c0 + 2, s.d0, s.d1, s.r})
    s.in_batch.push_back(rx(i));
}

// Everything observable about the arena that a failed commit must keep.
struct Snapshot {
  std::vector<std::string> states, kernel;
  std::vector<std::size_t> counts;
  std::vector<std::string> finds;

  static Snapshot of(const Arena& arena, const Scenario& s) {
    Snapshot n{
        state_map(arena), kernel_map(arena), chunk_counts(arena.stats()), {}};
    for (const Chunk& c : s.all) {
      Result<ChunkInfo> i = arena.find(c.rx());
      n.finds.push_back(i ? std::string(to_string(i->state))
                          : std::string(to_string(i.error().code())));
    }
    return n;
  }
};

void expect_same(const Snapshot& before, const Snapshot& after) {
  EXPECT_EQ(after.states, before.states) << "tracked states changed";
  EXPECT_EQ(after.kernel, before.kernel) << "kernel mappings changed";
  EXPECT_EQ(after.counts, before.counts) << "chunk counts changed";
  EXPECT_EQ(after.finds, before.finds) << "a chunk's state changed";
}

// After the scenario's commit succeeded: every chunk is where it should be
// and every function runs.
void expect_committed(Arena& arena, const Scenario& s) {
  auto state = [&](std::size_t i) -> std::string {
    Result<ChunkInfo> info = arena.find(s.all[i].rx());
    return info ? std::string(to_string(info->state))
                : std::string(to_string(info.error().code()));
  };
  for (std::size_t i : {s.a0, s.a0 + 1, s.a0 + 2, s.d1, s.r}) {
    EXPECT_EQ(state(i), "executable") << i;
    EXPECT_EQ(call(s.all[i].rx()), s.value[i]) << i;
  }
  EXPECT_EQ(state(s.a3), "read_only");
  EXPECT_EQ(state(s.b0), "writable");
  EXPECT_EQ(state(s.b1), "writable");
  EXPECT_EQ(state(s.g0), "writable");
  for (std::size_t i : {s.c0, s.c0 + 1, s.c0 + 2, s.d0})
    EXPECT_EQ(state(i), to_string(Errc::not_allocated)) << i;
  EXPECT_TRUE(audit_arena(arena));
}

// Before the commit: what ran runs, what was readable reads.
void expect_usable_before(const Arena& arena, const Scenario& s) {
  for (std::size_t i : {s.b0, s.c0, s.d0})
    EXPECT_EQ(call(s.all[i].rx()), s.value[i]) << i;
  EXPECT_TRUE(holds_fn(s.all[s.b1].rx(), s.value[s.b1]));
  // The writable ones are writable through their views.
  for (std::size_t i : {s.a0, s.g0, s.d1}) {
    Result<ChunkInfo> info = arena.find(s.all[i].rx());
    ASSERT_TRUE(Ok(info));
    ASSERT_FALSE(info->chunk.rw().empty());
    volatile std::byte* p = info->chunk.rw().data() + info->chunk.size() - 1;
    *p = std::byte{0xCC};
  }
}

using Rollback = BackendTest;

TEST_P(Rollback, EveryFailurePositionOfACommitRollsBack) {
  Options o = options();
  // Calibration: how many platform calls the commit makes.
  std::size_t calls = 0;
  std::vector<PalCall> kinds;
  {
    FaultPal pal;
    Result<Arena> made = detail::create_arena(o, pal);
    ASSERT_TRUE(Ok(made));
    Scenario s;
    Batch batch(*made);
    build(*made, batch, s);
    if (HasFailure()) return;
    pal.count_only();
    Result<CommitReport> r = batch.commit();
    ASSERT_TRUE(Ok(r));
    calls = pal.failable_calls();
    for (const PalEvent& e : pal.log())
      if (e.call != PalCall::flush_icache) kinds.push_back(e.call);
    EXPECT_EQ(r->runs, 6u);
    EXPECT_EQ(r->barrier, detail::system_pal().capabilities().barrier);
    expect_committed(*made, s);
  }
  ASSERT_GE(calls, 6u) << "one call per run at least";

  std::size_t covered = 0;
  for (std::size_t k = 1; k <= calls + 1; ++k) {
    for (const Injected& inj : kErrnos) {
      SCOPED_TRACE(::testing::Message()
                   << "failing call " << k << " of " << calls << " ("
                   << (k <= calls ? to_string(kinds[k - 1]) : "none")
                   << ") with errno " << inj.err);
      FaultPal pal;
      Result<Arena> made = detail::create_arena(o, pal);
      ASSERT_TRUE(Ok(made));
      Arena& arena = *made;
      Scenario s;
      Batch batch(arena);
      build(arena, batch, s);
      ASSERT_FALSE(HasFailure());
      const Snapshot before = Snapshot::of(arena, s);
      const Stats stats_before = arena.stats();

      pal.arm(k, inj.err);
      Result<CommitReport> r = batch.commit();
      if (k == calls + 1) {
        // One past the last call: nothing fails, so `calls` was exact.
        EXPECT_TRUE(Ok(r));
        EXPECT_FALSE(pal.fired());
        expect_committed(arena, s);
        break;
      }
      ASSERT_TRUE(pal.fired());
      ASSERT_TRUE(FailsWith(r, inj.code));
      EXPECT_EQ(r.error().sys_errno(), inj.err);
      EXPECT_NE(
          std::find(s.in_batch.begin(), s.in_batch.end(), r.error().chunk()),
          s.in_batch.end())
          << "the error names " << r.error().chunk()
          << ", not a chunk of the batch";
      expect_same(before, Snapshot::of(arena, s));
      EXPECT_TRUE(audit_arena(arena));
      const Stats after = arena.stats();
      EXPECT_EQ(after.commits, stats_before.commits);
      EXPECT_EQ(after.barriers, stats_before.barriers);
      EXPECT_EQ(after.vmas, stats_before.vmas);
      EXPECT_TRUE(vmas_agree(after.vmas, arena));
      expect_usable_before(arena, s);
      EXPECT_EQ(batch.size(), s.in_batch.size()) << "the batch is kept";

      // The same batch, without the fault, goes through.
      pal.disarm();
      Result<CommitReport> again = batch.commit();
      ASSERT_TRUE(Ok(again));
      expect_committed(arena, s);
      EXPECT_TRUE(still_works(arena));
      if (HasFailure()) return;  // one broken position is enough to read
      ++covered;
    }
  }
  EXPECT_EQ(covered, calls * std::size(kErrnos));
  std::cout << "[ figures  ] " << to_string(GetParam()) << ": commit of " << 12
            << " transitions in 6 runs makes " << calls
            << " platform calls; injected failures covered: " << covered << " ("
            << calls << " positions x " << std::size(kErrnos) << " errnos)\n";
  ::testing::Test::RecordProperty("rollback_positions", std::to_string(calls));
}

INSTANTIATE_TEST_SUITE_P(Backends, Rollback, ::testing::ValuesIn(kAllBackends),
                         backend_name);

// --- The barrier fails: everything already changed is changed back ---------

using RollbackBarrier = BackendTest;

TEST_P(RollbackBarrier, BarrierFailureAtAReusedAddressRollsBackEverything) {
  if (!detail::system_pal().capabilities().barrier)
    GTEST_SKIP() << "no membarrier SYNC_CORE: no barrier to fail";
  for (const Injected& inj : kErrnos) {
    SCOPED_TRACE(::testing::Message() << "errno " << inj.err);
    FaultPal pal;
    Options o = options();
    o.quarantine = 0;
    o.open_pages = 1;  // recycle as soon as the quarantine allows
    Result<Arena> made = detail::create_arena(o, pal);
    ASSERT_TRUE(Ok(made));
    Arena& arena = *made;

    // Code at X, released; churn until X is handed out again.
    Result<Chunk> x = arena.allocate(1);
    ASSERT_TRUE(Ok(x));
    write_fn(*x, 1);
    ASSERT_TRUE(Ok(arena.seal(*x)));
    ASSERT_TRUE(Ok(arena.release(*x)));
    std::vector<Chunk> churn;
    for (int i = 0; i < 1000; ++i) {
      Result<Chunk> c = arena.allocate(1);
      ASSERT_TRUE(Ok(c));
      churn.push_back(*c);
      if (c->rx() == x->rx()) break;
    }
    ASSERT_EQ(churn.back().rx(), x->rx()) << "the address never came back";
    const Chunk reused = churn.back();
    write_fn(reused, 0x5EC0);
    // The batch: new code at the reused address, fresh code elsewhere, and
    // the release of an executable chunk.
    // A chunk that never held code (the churn may have come back at once).
    Result<Chunk> extra = arena.allocate(1);
    ASSERT_TRUE(Ok(extra));
    const Chunk fresh = churn.size() > 1 ? churn[0] : *extra;
    write_fn(fresh, 0xF5E5);
    Result<Chunk> old = arena.allocate(1);
    ASSERT_TRUE(Ok(old));
    write_fn(*old, 0x01D);
    ASSERT_TRUE(Ok(arena.seal(*old)));
    Batch batch(arena);
    batch.seal(reused);
    batch.seal(fresh);
    batch.release(*old);

    const auto states = state_map(arena);
    const auto kernel = kernel_map(arena);
    const Stats before = arena.stats();
    pal.arm(1, inj.err, bit(PalCall::barrier));
    Result<CommitReport> r = batch.commit();
    ASSERT_TRUE(pal.fired());
    ASSERT_TRUE(FailsWith(r, inj.code));
    EXPECT_TRUE(r.error().chunk() == reused.rx() ||
                r.error().chunk() == fresh.rx() ||
                r.error().chunk() == old->rx());
    // The changes were made, then every one undone after the barrier.
    std::size_t changed = 0, undone = 0;
    bool after_barrier = false;
    for (const PalEvent& e : pal.log()) {
      if (e.call == PalCall::barrier) after_barrier = true;
      if (e.call == PalCall::barrier || e.call == PalCall::flush_icache ||
          e.call == PalCall::populate)
        continue;
      ++(after_barrier ? undone : changed);
    }
    EXPECT_GE(changed, 1u) << "the batch changed the code before the barrier";
    EXPECT_GE(undone, changed) << "every change made must be undone";
    EXPECT_EQ(state_map(arena), states);
    EXPECT_EQ(kernel_map(arena), kernel);
    EXPECT_EQ(chunk_counts(arena.stats()), chunk_counts(before));
    EXPECT_EQ(arena.stats().barriers, before.barriers);
    EXPECT_TRUE(audit_arena(arena));
    EXPECT_EQ(call(old->rx()), 0x01Du);

    pal.disarm();
    Result<CommitReport> ok = batch.commit();
    ASSERT_TRUE(Ok(ok));
    EXPECT_TRUE(ok->barrier);
    EXPECT_EQ(arena.stats().barriers, before.barriers + 1);
    EXPECT_EQ(call(reused.rx()), 0x5EC0u);
    EXPECT_EQ(call(fresh.rx()), 0xF5E5u);
    EXPECT_TRUE(audit_arena(arena));
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, RollbackBarrier,
                         ::testing::ValuesIn(kAllBackends), backend_name);

// --- Failures outside commits ----------------------------------------------

using RollbackOther = BackendTest;

// Opening pages for an allocation fails: the allocation fails with the
// mapped error and nothing changes; the next one works.
TEST_P(RollbackOther, FailureToOpenPagesChangesNothing) {
  for (const Injected& inj : kErrnos) {
    FaultPal pal;
    Result<Arena> made = detail::create_arena(options(), pal);
    ASSERT_TRUE(Ok(made));
    Arena& arena = *made;
    const auto states = state_map(arena);
    const auto kernel = kernel_map(arena);
    pal.arm(1, inj.err, kAllSyscalls);
    EXPECT_TRUE(FailsWith(arena.allocate(100), inj.code));
    EXPECT_TRUE(pal.fired());
    EXPECT_EQ(state_map(arena), states);
    EXPECT_EQ(kernel_map(arena), kernel);
    EXPECT_TRUE(vmas_agree(arena.stats().vmas, arena));
    EXPECT_EQ(arena.stats().allocations, 0u);
    pal.disarm();
    EXPECT_TRUE(still_works(arena));
    EXPECT_TRUE(audit_arena(arena));
  }
}

// Recycling quarantined pages fails: they stay retired, consistently.
TEST_P(RollbackOther, FailureToRecycleChangesNothing) {
  FaultPal pal;
  Options o = options(8 * detail::system_pal().capabilities().page_size);
  o.open_pages = 8;
  o.quarantine = 0;
  Result<Arena> made = detail::create_arena(o, pal);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  std::vector<Chunk> c;
  for (int i = 0; i < 8; ++i) {
    Result<Chunk> x = arena.allocate(1);
    ASSERT_TRUE(Ok(x));
    c.push_back(*x);
  }
  Batch b(arena);
  b.release(c[2]);
  b.release(c[3]);
  ASSERT_TRUE(Ok(b.commit()));
  const auto states = state_map(arena);
  const auto kernel = kernel_map(arena);
  if (arena.backend() == Backend::kernel_write) {
    // Retired pages already hold traps and keep their mapping: recycling
    // them makes no call, so there is nothing to fail.
    pal.count_only(kAllSyscalls);
    Result<Chunk> again = arena.allocate(1);
    ASSERT_TRUE(Ok(again));
    EXPECT_EQ(again->rx(), c[2].rx());
    EXPECT_EQ(pal.failable_calls(), 0u);
    EXPECT_TRUE(audit_arena(arena));
    return;
  }
  pal.arm(1, EACCES, kAllSyscalls);
  EXPECT_TRUE(FailsWith(arena.allocate(1), Errc::permission_denied));
  EXPECT_TRUE(pal.fired());
  EXPECT_EQ(state_map(arena), states);
  EXPECT_EQ(kernel_map(arena), kernel);
  EXPECT_EQ(arena.stats().chunks_in(State::retired), 2u);
  pal.disarm();
  Result<Chunk> again = arena.allocate(1);
  ASSERT_TRUE(Ok(again));
  EXPECT_EQ(again->rx(), c[2].rx());
  EXPECT_TRUE(audit_arena(arena));
}

// An arena with open pages in two places and ten quarantined chunks that
// may be recycled (quarantine 0): trim() has work of both kinds.
Result<Arena> trim_scenario(FaultPal& pal, Options o) {
  o.quarantine = 0;
  Result<Arena> made = detail::create_arena(o, pal);
  if (!made) return made;
  std::vector<Chunk> c;
  for (int i = 0; i < 70; ++i) {
    Result<Chunk> x = made->allocate(1);
    if (!x) return x.error();
    c.push_back(*x);
  }
  Batch b(*made);
  for (int i = 10; i < 20; ++i) b.release(c[static_cast<std::size_t>(i)]);
  b.seal(c[30]);
  if (Result<CommitReport> r = b.commit(); !r) return r.error();
  return made;
}

// trim() failing at every position of its calls: whatever it completed is
// consistent with the kernel, the arena works, and a retry finishes.
TEST_P(RollbackOther, TrimFailingAtEveryPositionStaysConsistent) {
  std::size_t calls = 0;
  {
    FaultPal pal;
    Result<Arena> a = trim_scenario(pal, options());
    ASSERT_TRUE(Ok(a));
    pal.count_only(kAllSyscalls);
    ASSERT_TRUE(Ok(a->trim()));
    calls = pal.failable_calls();
    EXPECT_EQ(a->stats().open_bytes, 0u);
    EXPECT_EQ(a->stats().bytes_in(State::retired), 0u);
    EXPECT_TRUE(audit_arena(*a));
  }
  ASSERT_GE(calls, 2u);
  for (std::size_t k = 1; k <= calls; ++k) {
    SCOPED_TRACE(::testing::Message() << "failing trim call " << k);
    FaultPal pal;
    Result<Arena> a = trim_scenario(pal, options());
    ASSERT_TRUE(Ok(a));
    pal.arm(k, ENOMEM, kAllSyscalls);
    (void)a->trim();  // whether it reports it: TrimReportsEveryFailure
    EXPECT_TRUE(pal.fired());
    EXPECT_TRUE(audit_arena(*a));
    EXPECT_TRUE(vmas_agree(a->stats().vmas, *a));
    pal.disarm();
    EXPECT_TRUE(still_works(*a));
    ASSERT_TRUE(Ok(a->trim()));
    EXPECT_EQ(a->stats().open_bytes, 0u);
    EXPECT_EQ(a->stats().bytes_in(State::retired), 0u);
    EXPECT_TRUE(audit_arena(*a));
  }
  std::cout << "[ figures  ] " << to_string(GetParam()) << ": trim makes "
            << calls << " platform calls; every one failed once\n";
}

// A failed system call is never ignored (STYLE.md rule 7): trim() that
// could not give memory back says so, whichever call failed.
TEST_P(RollbackOther, TrimReportsEveryFailure) {
  std::size_t calls = 0;
  {
    FaultPal pal;
    Result<Arena> a = trim_scenario(pal, options());
    ASSERT_TRUE(Ok(a));
    pal.count_only(kAllSyscalls);
    ASSERT_TRUE(Ok(a->trim()));
    calls = pal.failable_calls();
  }
  for (std::size_t k = 1; k <= calls; ++k) {
    FaultPal pal;
    Result<Arena> a = trim_scenario(pal, options());
    ASSERT_TRUE(Ok(a));
    pal.arm(k, ENOMEM, kAllSyscalls);
    Result<void> r = a->trim();
    ASSERT_TRUE(pal.fired());
    PalCall failed = PalCall::flush_icache;
    for (const PalEvent& e : pal.log())
      if (e.injected) failed = e.call;
    EXPECT_TRUE(FailsWith(r, Errc::out_of_memory))
        << "trim() hid the failure of call " << k << " of " << calls << " ("
        << to_string(failed) << ")";
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, RollbackOther,
                         ::testing::ValuesIn(kAllBackends), backend_name);

// --- An undo that fails is fatal --------------------------------------------

// The arena's calls must run in the process that made the arena (a dual_map
// arena refuses to change anything in a fork() child), so these death tests
// re-run the test in a fresh process ("threadsafe" style), not a fork.
// Where this process cannot start its own executable (qemu-user without
// binfmt_misc), they skip: an arena refuses every call in a fork() child.
class RollbackDeathTest : public BackendTest {
 protected:
  void SetUp() override {
    BackendTest::SetUp();
    saved_ = GTEST_FLAG_GET(death_test_style);
    if (IsSkipped()) return;
#ifndef _WIN32
    if (const char* why = exec_unavailable_reason()) {
      // An arena refuses every call in a child of the process that made
      // it (wrong_process), so a fork()-style death test cannot run.
      GTEST_SKIP() << why << "; an arena refuses to work in a fork() child, "
                   << "so this death test cannot run here";
    }
#endif
    GTEST_FLAG_SET(death_test_style, "threadsafe");
  }
  void TearDown() override { GTEST_FLAG_SET(death_test_style, saved_); }

 private:
  std::string saved_;
};

// Run 1 is changed; run 2's call fails; undoing run 1 fails too. The
// tracked state and the kernel's would disagree (code might stay
// writable), so the library aborts rather than return.
TEST_P(RollbackDeathTest, FailedRollbackOfAnEarlierRunIsFatal) {
  FaultPal pal;
  Result<Arena> made = detail::create_arena(options(), pal);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  std::vector<Chunk> c;
  for (int i = 0; i < 3; ++i) {
    Result<Chunk> x = arena.allocate(1);
    ASSERT_TRUE(Ok(x));
    write_fn(*x, static_cast<std::uint32_t>(i));
    c.push_back(*x);
  }
  Batch b(arena);
  b.seal(c[0]);
  b.seal(c[2], Seal::read_only);
  const std::size_t per_run = arena.backend() == Backend::dual_map ? 2 : 1;
  EXPECT_DEATH(
      {
        pal.arm_persistent(per_run + 1, EIO);
        (void)b.commit();
      },
      arena.backend() == Backend::kernel_write
          ? "wxarena: fatal: cannot restore code"
          : "wxarena: fatal: cannot roll back a protection change");
  // In this process nothing happened.
  ASSERT_TRUE(Ok(b.commit()));
  EXPECT_EQ(call(c[0].rx()), 0u);
}

// dual_map: a run's second view fails and undoing its first view fails.
TEST_P(RollbackDeathTest, FailedUndoWithinARunIsFatal) {
  if (GetParam() != Backend::dual_map)
    GTEST_SKIP() << "one call per run in the protect backend: nothing to undo "
                    "within a run";
  FaultPal pal;
  Result<Arena> made = detail::create_arena(options(), pal);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  Result<Chunk> x = arena.allocate(1);
  ASSERT_TRUE(Ok(x));
  write_fn(*x, 7);
  EXPECT_DEATH(
      {
        pal.arm_persistent(2, EIO);
        (void)arena.seal(*x);
      },
      "wxarena: fatal: cannot roll back a protection change");
  ASSERT_TRUE(Ok(arena.seal(*x)));
  EXPECT_EQ(call(x->rx()), 7u);
}

INSTANTIATE_TEST_SUITE_P(Backends, RollbackDeathTest,
                         ::testing::ValuesIn(kAllBackends), backend_name);

}  // namespace
}  // namespace wxa::test
