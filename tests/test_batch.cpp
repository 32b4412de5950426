// SPDX-License-Identifier: MIT
// Batch::commit(): coalescing into runs, the exact number of protection
// calls, flush-before-execute, when the barrier is (not) issued, and
// refusals of whole batches.
#include <gtest/gtest.h>

#include <cstdint>
#include <iostream>
#include <string>
#include <tuple>
#include <vector>

#include "support/arena_util.hpp"
#include "support/fault_pal.hpp"
#include "support/maps.hpp"
#include "wxarena/arena.hpp"

namespace wxa::test {
namespace {

bool has_barrier() { return detail::system_pal().capabilities().barrier; }

// Protection calls one run costs: protect changes one mapping; dual_map
// changes both views of the run (the writable view is dropped or mapped,
// the executable view is mapped or dropped).
std::size_t calls_per_run(const Arena& arena) {
  return arena.backend() == Backend::dual_map ? 2 : 1;
}

// kernel_write changes no protection to seal code or to retire it: the
// kernel copies the bytes in, one pwritev per contiguous stretch of
// changed chunks.
bool copies(const Arena& arena) {
  return arena.backend() == Backend::kernel_write;
}

// System calls of a commit: its protection changes, its copies, and the
// populate of fresh code pages (kernel_write, where the kernel has it).
std::uint64_t commit_calls(const CommitReport& r, const Arena& arena,
                           bool fresh_code) {
  const bool populate = copies(arena) && fresh_code &&
                        detail::system_pal().capabilities().populate_read;
  return r.protection_calls + r.writes + (populate ? 1 : 0) +
         (r.barrier ? 1 : 0);
}

// --- N adjacent fresh chunks -------------------------------------------------

class BatchFresh
    : public ::testing::TestWithParam<std::tuple<Backend, std::size_t>> {
 protected:
  void SetUp() override { WXA_SKIP_IF_UNAVAILABLE(std::get<0>(GetParam())); }
};

// Chunks allocated one after another are adjacent, so sealing N of them in
// one batch is one run and one protection call (two in dual_map, one per
// view), whatever N; releasing them together is one run again.
TEST_P(BatchFresh, AdjacentFreshChunksSealAndReleaseAsOneRun) {
  const auto [backend, n] = GetParam();
  Options o;
  o.backend = backend;
  o.reserve_bytes = kSmallReserve;
  Result<Arena> made = Arena::create(o);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  const std::size_t ps = arena.page_size();

  const Stats s0 = arena.stats();
  std::vector<Chunk> chunks;
  for (std::size_t i = 0; i < n; ++i) {
    Result<Chunk> c = arena.allocate(256);
    ASSERT_TRUE(Ok(c));
    if (i > 0) {
      ASSERT_EQ(c->rx(), static_cast<const std::byte*>(chunks.back().rx()) + ps)
          << "allocation " << i << " is not adjacent to the previous one";
    }
    write_fn(*c, static_cast<std::uint32_t>(i * 3 + 1));
    chunks.push_back(*c);
  }
  const Stats s1 = arena.stats();
  // Pages are opened 64 at a time (Options::open_pages), one call each.
  const std::size_t opens = (n + o.open_pages - 1) / o.open_pages;
  EXPECT_EQ(s1.protection_calls - s0.protection_calls, opens);

  Batch batch(arena);
  for (const Chunk& c : chunks) batch.seal(c);
  Result<CommitReport> r = batch.commit();
  ASSERT_TRUE(Ok(r));
  const Stats s2 = arena.stats();
  EXPECT_EQ(r->chunks, n);
  EXPECT_EQ(r->runs, 1u);
  EXPECT_EQ(r->protection_calls, copies(arena) ? 0u : calls_per_run(arena));
  EXPECT_EQ(r->writes, copies(arena) ? 1u : 0u);
  EXPECT_EQ(r->flushes, 1u);
  // Fresh code at fresh addresses needs no barrier, but where it is copied
  // into pages that were executable (holding traps) and cores may fetch
  // stale code: one for the whole batch.
  const bool barrier = code_copied_in_needs_barrier(backend);
  EXPECT_EQ(r->barrier, barrier);
  EXPECT_EQ(s2.syscalls.total() - s1.syscalls.total(),
            commit_calls(*r, arena, true));
  EXPECT_EQ(s2.syscalls.membarrier - s1.syscalls.membarrier, barrier ? 1u : 0u);
  EXPECT_TRUE(batch.empty()) << "a committed batch is emptied";
  std::cout << "[ figures  ] " << to_string(backend) << ": sealing " << n
            << " fresh chunks in one batch: " << r->runs << " run, "
            << r->protection_calls << " protection call(s), "
            << s2.syscalls.total() - s1.syscalls.total() << " system call(s)\n";
  ::testing::Test::RecordProperty(
      "seal_" + std::to_string(n) + "_protection_calls",
      std::to_string(r->protection_calls));

  for (std::size_t i = 0; i < n; ++i)
    ASSERT_EQ(call(chunks[i].rx()), i * 3 + 1) << i;
  EXPECT_TRUE(audit_arena(arena));

  Batch release(arena);
  for (const Chunk& c : chunks) release.release(c);
  Result<CommitReport> q = release.commit();
  ASSERT_TRUE(Ok(q));
  EXPECT_EQ(q->runs, 1u);
  // Only the executable view exists, in either backend: one call.
  // kernel_write: no protection change; one copy of traps over the run,
  // flushed so that no core runs the old code from its cache.
  EXPECT_EQ(q->protection_calls, copies(arena) ? 0u : 1u);
  EXPECT_EQ(q->writes, copies(arena) ? 1u : 0u);
  EXPECT_EQ(q->flushes, copies(arena) ? 1u : 0u);
  EXPECT_FALSE(q->barrier);
  EXPECT_EQ(arena.stats().syscalls.total() - s2.syscalls.total(), 1u);
  EXPECT_EQ(arena.stats().chunks_in(State::retired), n);
  EXPECT_TRUE(audit_arena(arena));
}

INSTANTIATE_TEST_SUITE_P(
    Sizes, BatchFresh,
    ::testing::Combine(::testing::ValuesIn(kAllBackends),
                       ::testing::Values(std::size_t{1}, std::size_t{64},
                                         std::size_t{1024})),
    [](const ::testing::TestParamInfo<std::tuple<Backend, std::size_t>>& i) {
      return std::string(to_string(std::get<0>(i.param))) + "_" +
             std::to_string(std::get<1>(i.param));
    });

// --- Coalescing
// ----------------------------------------------------------------

using BatchRuns = BackendTest;

// Allocates `n` adjacent one-page chunks, each with a function returning i.
std::vector<Chunk> adjacent(Arena& arena, std::size_t n) {
  std::vector<Chunk> out;
  for (std::size_t i = 0; i < n; ++i) {
    Result<Chunk> c = arena.allocate(arena.page_size());
    EXPECT_TRUE(Ok(c));
    if (!c) return out;
    EXPECT_NE(write_return_imm(c->rw(), static_cast<std::uint32_t>(i)), 0u);
    if (!out.empty()) {
      EXPECT_EQ(c->rx(), static_cast<const std::byte*>(out.back().rx()) +
                             arena.page_size());
    }
    out.push_back(*c);
  }
  return out;
}

TEST_P(BatchRuns, InterleavedTargetsMakeOneRunEach) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  std::vector<Chunk> c = adjacent(arena, 3);
  ASSERT_EQ(c.size(), 3u);
  Batch b(arena);
  b.seal(c[0], Seal::execute);
  b.seal(c[1], Seal::read_only);
  b.seal(c[2], Seal::execute);
  Result<CommitReport> r = b.commit();
  ASSERT_TRUE(Ok(r));
  EXPECT_EQ(r->runs, 3u);
  if (copies(arena)) {
    // Only the read-only run changes protection (execute removed), and the
    // three chunks are copied in with one call.
    EXPECT_EQ(r->protection_calls, 1u);
    EXPECT_EQ(r->writes, 1u);
  } else {
    EXPECT_EQ(r->protection_calls, 3 * calls_per_run(arena));
  }
  EXPECT_EQ(r->flushes, 2u) << "one flush per run that becomes executable";
  EXPECT_EQ(call(c[0].rx()), 0u);
  EXPECT_EQ(call(c[2].rx()), 2u);
  EXPECT_TRUE(audit_arena(arena));
}

TEST_P(BatchRuns, ReleaseAndSealOfNeighboursMakeTwoRuns) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  std::vector<Chunk> c = adjacent(arena, 4);
  ASSERT_EQ(c.size(), 4u);
  // Two of the four executable first, so the release covers both states.
  Batch pre(arena);
  pre.seal(c[1]);
  ASSERT_TRUE(Ok(pre.commit()));

  Batch b(arena);
  b.release(c[0]);  // writable -> retired
  b.release(c[1]);  // executable -> retired
  b.seal(c[2]);     // writable -> executable
  b.seal(c[3]);
  const Stats before = arena.stats();
  Result<CommitReport> r = b.commit();
  ASSERT_TRUE(Ok(r));
  EXPECT_EQ(r->runs, 2u);
  EXPECT_EQ(r->chunks, 4u);
  // protect: one mprotect per run. dual_map: the release run drops c[0]'s
  // writable view and c[1]'s executable view (2 calls); the seal run drops
  // the writable views and maps the executable one (2 calls).
  // kernel_write: no protection changes; traps over c[0..1] and the code
  // of c[2..3] are one contiguous copy.
  EXPECT_EQ(r->protection_calls, copies(arena) ? 0u : 2 * calls_per_run(arena));
  EXPECT_EQ(r->writes, copies(arena) ? 1u : 0u);
  EXPECT_EQ(arena.stats().syscalls.total() - before.syscalls.total(),
            commit_calls(*r, arena, true));
  EXPECT_EQ(call(c[2].rx()), 2u);
  EXPECT_EQ(call(c[3].rx()), 3u);
  EXPECT_TRUE(audit_arena(arena));
}

TEST_P(BatchRuns, OrderOfQueueingDoesNotMatterAndGapsSplitRuns) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  std::vector<Chunk> c = adjacent(arena, 9);
  ASSERT_EQ(c.size(), 9u);
  // Queued backwards and shuffled: sorted by address, still one run.
  Batch b(arena);
  for (int i : {3, 0, 2, 1}) b.seal(c[i]);
  Result<CommitReport> r = b.commit();
  ASSERT_TRUE(Ok(r));
  EXPECT_EQ(r->runs, 1u);
  // c[4] stays writable: c[5..6] and c[8] are two runs.
  Batch g(arena);
  g.seal(c[8]);
  g.seal(c[6]);
  g.seal(c[5]);
  r = g.commit();
  ASSERT_TRUE(Ok(r));
  EXPECT_EQ(r->runs, 2u);
  EXPECT_EQ(r->protection_calls, copies(arena) ? 0u : 2 * calls_per_run(arena));
  EXPECT_EQ(r->writes, copies(arena) ? 2u : 0u) << "one copy per gap-split run";
  for (int i : {0, 1, 2, 3, 5, 6, 8})
    EXPECT_EQ(call(c[static_cast<std::size_t>(i)].rx()),
              static_cast<unsigned>(i));
  // Unsealing executable and read-only neighbours: one target (writable),
  // so they coalesce into one run.
  Batch ro(arena);
  ro.seal(c[7], Seal::read_only);
  ASSERT_TRUE(Ok(ro.commit()));
  Batch u(arena);
  u.unseal(c[6].rx());
  u.unseal(c[7].rx());
  u.unseal(c[8].rx());
  r = u.commit();
  ASSERT_TRUE(Ok(r));
  EXPECT_EQ(r->runs, 1u) << "executable and read-only neighbours, one target";
  EXPECT_TRUE(audit_arena(arena));
}

TEST_P(BatchRuns, DuplicatesAreRefusedAndNothingChanges) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  std::vector<Chunk> c = adjacent(arena, 3);
  ASSERT_EQ(c.size(), 3u);
  ASSERT_TRUE(Ok(arena.seal(c[2])));
  const auto states = state_map(arena);
  const auto kernel = kernel_map(arena);
  const Stats before = arena.stats();

  auto refused = [&](Batch& b, const void* culprit) {
    Result<CommitReport> r = b.commit();
    ASSERT_TRUE(FailsWith(r, Errc::duplicate_in_batch));
    EXPECT_EQ(r.error().chunk(), culprit);
    EXPECT_EQ(state_map(arena), states);
    EXPECT_EQ(kernel_map(arena), kernel);
    const Stats now = arena.stats();
    EXPECT_EQ(now.syscalls.total(), before.syscalls.total());
    EXPECT_EQ(chunk_counts(now), chunk_counts(before));
    EXPECT_EQ(now.commits, before.commits);
  };
  {
    Batch b(arena);
    b.seal(c[0]);
    b.seal(c[1]);
    b.seal(c[0]);  // the same transition twice
    refused(b, c[0].rx());
    EXPECT_EQ(b.size(), 3u);
  }
  {
    Batch b(arena);
    b.seal(c[1]);
    b.release(c[1]);  // two transitions of one chunk
    refused(b, c[1].rx());
  }
  {
    Batch b(arena);
    b.unseal(c[2].rx());
    b.seal(c[0]);
    b.release(c[2]);
    refused(b, c[2].rx());
    // Emptied, the batch is usable again.
    b.clear();
    EXPECT_TRUE(b.empty());
    b.seal(c[0]);
    b.seal(c[1], Seal::read_only);
    ASSERT_TRUE(Ok(b.commit()));
  }
  EXPECT_EQ(call(c[0].rx()), 0u);
  EXPECT_EQ(call(c[2].rx()), 2u);
  EXPECT_TRUE(still_works(arena));
}

TEST_P(BatchRuns, EmptyBatchIsFreeAndMovedBatchesCommit) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  const Stats before = arena.stats();
  Batch empty(arena);
  Result<CommitReport> r = empty.commit();
  ASSERT_TRUE(Ok(r));
  EXPECT_EQ(r->chunks, 0u);
  EXPECT_EQ(r->runs, 0u);
  EXPECT_EQ(arena.stats().syscalls.total(), before.syscalls.total());

  std::vector<Chunk> c = adjacent(arena, 200);  // grows the queue past 64
  ASSERT_EQ(c.size(), 200u);
  Batch a(arena);
  for (const Chunk& x : c) a.seal(x);
  Batch moved(std::move(a));
  EXPECT_EQ(moved.size(), 200u);
  Batch assigned(arena);
  assigned = std::move(moved);
  r = assigned.commit();
  ASSERT_TRUE(Ok(r));
  EXPECT_EQ(r->chunks, 200u);
  EXPECT_EQ(r->runs, 1u);
  EXPECT_EQ(call(c[199].rx()), 199u);
}

INSTANTIATE_TEST_SUITE_P(Backends, BatchRuns, ::testing::ValuesIn(kAllBackends),
                         backend_name);

// --- Order of operations and the barrier, seen from the platform layer
// --------

class BatchOrder : public BackendTest {
 protected:
  Result<Arena> make(FaultPal& pal, std::size_t quarantine = 16) {
    Options o = options();
    o.quarantine = quarantine;
    o.open_pages = 1;  // recycle as soon as the quarantine allows
    return detail::create_arena(o, pal);
  }
};

// The instruction cache is flushed over a run before the call that makes
// it executable, and once per such run.
TEST_P(BatchOrder, FlushComesBeforeTheRunBecomesExecutable) {
  FaultPal pal;
  Result<Arena> made = make(pal);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  if (copies(arena))
    GTEST_SKIP() << "kernel_write never makes a page executable to seal it: "
                    "KernelWriteOrder checks its copy, flush and barrier";
  std::vector<Chunk> c = adjacent(arena, 5);
  ASSERT_EQ(c.size(), 5u);
  pal.count_only();
  Batch b(arena);
  b.seal(c[0]);
  b.seal(c[1]);
  b.seal(c[2], Seal::read_only);
  b.seal(c[3]);
  b.release(c[4]);
  Result<CommitReport> r = b.commit();
  ASSERT_TRUE(Ok(r));
  EXPECT_EQ(r->runs, 4u);
  EXPECT_EQ(pal.calls(PalCall::flush_icache), 2u);
  EXPECT_EQ(r->flushes, 2u);

  const std::vector<PalEvent>& log = pal.log();
  const auto ps = arena.page_size();
  // The executable-view address a logged call or flush refers to.
  auto rx_of = [&](const void* p) {
    const auto* b8 = static_cast<const std::byte*>(p);
    const std::byte* rw = arena.rw_range().data();
    if (b8 >= rw && b8 < rw + arena.rw_range().size())
      return arena.range().data() + (b8 - rw);
    return b8;
  };
  std::size_t checked = 0;
  for (std::size_t i = 0; i < log.size(); ++i) {
    const PalEvent& e = log[i];
    if (e.access != Access::read_execute) continue;
    const std::byte* at = rx_of(e.p);
    bool flushed_before = false;
    for (std::size_t k = 0; k < i; ++k)
      if (log[k].call == PalCall::flush_icache && rx_of(log[k].p) <= at &&
          at + e.bytes <= rx_of(log[k].p) + log[k].bytes)
        flushed_before = true;
    EXPECT_TRUE(flushed_before)
        << "made executable at " << static_cast<const void*>(at) << " ("
        << e.bytes / ps << " pages) without a flush first";
    ++checked;
  }
  EXPECT_EQ(checked, 2u) << "two runs become executable";
  EXPECT_EQ(call(c[0].rx()), 0u);
  EXPECT_EQ(call(c[3].rx()), 3u);
}

// The flush is real work on AArch64 (clean the data cache, invalidate the
// instruction cache: __builtin___clear_cache in Pal::flush_icache) and a
// no-op on x86-64; either way the commit engine must ask for it over exactly
// the runs that become executable: each whole run once, through the writable
// view the code was written through (the executable view is not accessible
// yet), before the call that makes that run executable, and before the
// barrier. Read-only data, releases, unseals and writable chunks left alone
// are not flushed.
TEST_P(BatchOrder, FlushesCoverExactlyTheRunsThatBecomeExecutable) {
  FaultPal pal;
  Result<Arena> made = make(pal);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  if (copies(arena))
    GTEST_SKIP() << "kernel_write never makes a page executable to seal it: "
                    "KernelWriteOrder checks its copy, flush and barrier";
  const std::size_t ps = arena.page_size();
  std::vector<Chunk> c = adjacent(arena, 8);
  ASSERT_EQ(c.size(), 8u);
  auto rw = [&](std::size_t i) {
    return static_cast<const void*>(c[i].rw().data());
  };
  struct Range {
    const void* p;
    std::size_t bytes;
    bool operator==(const Range&) const = default;
  };
  // The flushes and, per flush, the log positions of the flush, of the call
  // that made its run executable, and of the last event (the barrier must
  // not come before any of them).
  auto flushes = [&](std::vector<Range>& got) {
    const std::vector<PalEvent>& log = pal.log();
    const std::byte* rw_base = arena.rw_range().data();
    const std::byte* rx_base = arena.range().data();
    std::size_t last_exec = 0;
    bool any_exec = false;
    for (std::size_t i = 0; i < log.size(); ++i) {
      if (log[i].access == Access::read_execute) last_exec = i, any_exec = true;
      if (log[i].call != PalCall::flush_icache) continue;
      got.push_back({log[i].p, log[i].bytes});
      const auto* rx = rx_base + (static_cast<const std::byte*>(log[i].p) -
                                  rw_base);  // same offset in both views
      bool made_executable_after = false;
      for (std::size_t k = i + 1; k < log.size(); ++k)
        made_executable_after |= log[k].access == Access::read_execute &&
                                 log[k].p == rx && log[k].bytes == log[i].bytes;
      EXPECT_TRUE(made_executable_after)
          << "the flush of " << log[i].p << " (" << log[i].bytes / ps
          << " pages) is not followed by the call that makes them executable";
    }
    for (std::size_t i = 0; i < log.size(); ++i)
      if (log[i].call == PalCall::barrier) {
        EXPECT_TRUE(any_exec && i > last_exec)
            << "the barrier comes before code became executable";
      }
  };

  // c0 c1 c2 code (one run, pushed out of order) | c3 data | c4 stays
  // writable | c5 code | c6 released | c7 code.
  pal.count_only();
  Batch b(arena);
  b.seal(c[2]);
  b.seal(c[0]);
  b.seal(c[7]);
  b.seal(c[3], Seal::read_only);
  b.release(c[6]);
  b.seal(c[1]);
  b.seal(c[5]);
  Result<CommitReport> r = b.commit();
  ASSERT_TRUE(Ok(r));
  EXPECT_EQ(r->runs, 5u);
  EXPECT_EQ(r->flushes, 3u);
  std::vector<Range> got;
  flushes(got);
  const std::vector<Range> want = {{rw(0), 3 * ps}, {rw(5), ps}, {rw(7), ps}};
  EXPECT_EQ(got, want) << "flushes: " << got.size();

  // Patching the middle of the run: unseal c1 (no flush), rewrite, reseal:
  // one flush over c1 alone, then (code at an address that held code) the
  // barrier after it has become executable.
  pal.count_only();
  Result<Chunk> u = arena.unseal(c[1].rx());
  ASSERT_TRUE(Ok(u));
  EXPECT_EQ(pal.calls(PalCall::flush_icache), 0u) << "unseal flushes nothing";
  write_fn(*u, 0x9A7C4);
  pal.count_only();
  ASSERT_TRUE(Ok(arena.seal(*u)));
  got.clear();
  flushes(got);
  const std::vector<Range> patched = {
      {static_cast<const void*>(u->rw().data()), ps}};
  EXPECT_EQ(got, patched);
  EXPECT_EQ(pal.calls(PalCall::barrier), has_barrier() ? 1u : 0u);

  // Releasing code and the data is never flushed.
  pal.count_only();
  Batch rel(arena);
  rel.release(c[0]);
  rel.release(c[3]);
  ASSERT_TRUE(Ok(rel.commit()));
  EXPECT_EQ(pal.calls(PalCall::flush_icache), 0u);

  EXPECT_EQ(call(c[1].rx()), 0x9A7C4u);
  EXPECT_EQ(call(c[2].rx()), 2u);
  EXPECT_EQ(call(c[5].rx()), 5u);
  EXPECT_EQ(call(c[7].rx()), 7u);
  EXPECT_TRUE(audit_arena(arena));
}

// The barrier: none for fresh code; one (not one per chunk) when code lands
// where code was before, or is resealed after patching; one on request.
TEST_P(BatchOrder, BarrierOnlyWhenCodeIsReusedOrAsked) {
  if (!has_barrier()) GTEST_SKIP() << "no membarrier SYNC_CORE here";
  FaultPal pal;
  Result<Arena> made = make(pal, /*quarantine=*/0);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  std::vector<Chunk> c = adjacent(arena, 8);
  ASSERT_EQ(c.size(), 8u);

  pal.count_only();
  Batch fresh(arena);
  for (const Chunk& x : c) fresh.seal(x);
  Result<CommitReport> r = fresh.commit();
  ASSERT_TRUE(Ok(r));
  // (One where fresh code is copied into pages that were executable and
  // cores may fetch stale code: kernel_write on AArch64.)
  const bool copied = code_copied_in_needs_barrier(arena.backend());
  EXPECT_EQ(r->barrier, copied);
  EXPECT_EQ(pal.calls(PalCall::barrier), copied ? 1u : 0u);

  // Asked for.
  std::vector<Chunk> d = adjacent(arena, 2);
  Batch asked(arena);
  asked.seal(d[0]);
  pal.count_only();
  r = asked.commit(CommitFlags::barrier);
  ASSERT_TRUE(Ok(r));
  EXPECT_TRUE(r->barrier);
  EXPECT_EQ(pal.calls(PalCall::barrier), 1u);

  // Read-only data is not code: sealing it needs no barrier.
  Batch data(arena);
  data.seal(d[1], Seal::read_only);
  pal.count_only();
  r = data.commit();
  ASSERT_TRUE(Ok(r));
  EXPECT_FALSE(r->barrier);

  // Patching: unseal four, rewrite, reseal in one batch -> one barrier.
  Batch un(arena);
  for (int i = 0; i < 4; ++i) un.unseal(c[static_cast<std::size_t>(i)].rx());
  ASSERT_TRUE(Ok(un.commit()));
  Batch re(arena);
  for (int i = 0; i < 4; ++i) {
    write_fn(c[static_cast<std::size_t>(i)], 100u + static_cast<unsigned>(i));
    re.seal(c[static_cast<std::size_t>(i)]);
  }
  pal.count_only();
  r = re.commit();
  ASSERT_TRUE(Ok(r));
  EXPECT_TRUE(r->barrier);
  EXPECT_EQ(pal.calls(PalCall::barrier), 1u) << "one barrier per commit";
  EXPECT_EQ(call(c[3].rx()), 103u);

  // Reuse: release everything (quarantine 0), allocate until an address
  // that held code comes back, seal there -> barrier.
  Batch rel(arena);
  for (const Chunk& x : c) rel.release(x);
  rel.release(d[0]);
  rel.release(d[1]);
  ASSERT_TRUE(Ok(rel.commit()));
  std::vector<Chunk> churn;
  bool reused = false;
  for (int i = 0; i < 200 && !reused; ++i) {
    Result<Chunk> n = arena.allocate(1);
    ASSERT_TRUE(Ok(n));
    churn.push_back(*n);
    reused = n->rx() == c[0].rx();
  }
  ASSERT_TRUE(reused) << "the released address never came back";
  write_fn(churn.back(), 0xBEEF);
  Batch again(arena);
  again.seal(churn.back());
  pal.count_only();
  r = again.commit();
  ASSERT_TRUE(Ok(r));
  EXPECT_TRUE(r->barrier);
  EXPECT_EQ(pal.calls(PalCall::barrier), 1u);
  EXPECT_EQ(call(churn.back().rx()), 0xBEEFu);
  EXPECT_TRUE(audit_arena(arena));
}

// A barrier serialises every core, so it covers every address that stopped
// being executable before it: code landing there later needs no new one.
// Only addresses revoked since the last barrier cost one.
TEST_P(BatchOrder, OneBarrierCoversEveryAddressRevokedBeforeIt) {
  if (!has_barrier()) GTEST_SKIP() << "no membarrier SYNC_CORE here";
  FaultPal pal;
  Result<Arena> made = make(pal, /*quarantine=*/0);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  std::vector<Chunk> c = adjacent(arena, 3);
  ASSERT_EQ(c.size(), 3u);
  Batch b(arena);
  for (std::uint32_t i = 0; i < 3; ++i) {
    write_fn(c[i], i);
    b.seal(c[i]);
  }
  ASSERT_TRUE(Ok(b.commit()));
  b.release(c[0]);
  b.release(c[1]);
  ASSERT_TRUE(Ok(b.commit()));

  // The released addresses come back lowest first (quarantine 0).
  auto reuse = [&](const Chunk& old, std::uint32_t value) -> Result<Chunk> {
    Result<Chunk> n = arena.allocate(1);
    if (!n) return n;
    EXPECT_EQ(n->rx(), old.rx()) << "the released address did not come back";
    write_fn(*n, value);
    return n;
  };
  const Stats s0 = arena.stats();
  Result<Chunk> x = reuse(c[0], 10);
  ASSERT_TRUE(Ok(x));
  b.seal(*x);
  pal.count_only();
  Result<CommitReport> r = b.commit();
  ASSERT_TRUE(Ok(r));
  EXPECT_TRUE(r->barrier) << "no barrier since c[0] stopped being code";
  EXPECT_EQ(pal.calls(PalCall::barrier), 1u);

  // c[1] stopped being code before that barrier: nothing more to do.
  Result<Chunk> y = reuse(c[1], 11);
  ASSERT_TRUE(Ok(y));
  b.seal(*y);
  pal.count_only();
  r = b.commit();
  ASSERT_TRUE(Ok(r));
  // (Where every seal of copied-in code takes one, so does this.)
  const bool copied = code_copied_in_needs_barrier(arena.backend());
  EXPECT_EQ(r->barrier, copied)
      << (copied ? "code copied in here takes a barrier of its own"
                 : "the previous barrier already covered c[1]");
  EXPECT_EQ(pal.calls(PalCall::barrier), copied ? 1u : 0u);

  // c[2] stops being code after it: its reuse needs a new one.
  b.release(c[2]);
  ASSERT_TRUE(Ok(b.commit()));
  Result<Chunk> z = reuse(c[2], 12);
  ASSERT_TRUE(Ok(z));
  b.seal(*z);
  pal.count_only();
  r = b.commit();
  ASSERT_TRUE(Ok(r));
  EXPECT_TRUE(r->barrier);
  EXPECT_EQ(pal.calls(PalCall::barrier), 1u);
  EXPECT_EQ(arena.stats().barriers - s0.barriers, copied ? 3u : 2u);

  // Patching after a barrier: unsealed after it, so resealing needs one.
  Result<Chunk> w = arena.unseal(y->rx());
  ASSERT_TRUE(Ok(w));
  write_fn(*w, 21);
  b.seal(*w);
  pal.count_only();
  r = b.commit();
  ASSERT_TRUE(Ok(r));
  EXPECT_TRUE(r->barrier);
  EXPECT_EQ(call(x->rx()), 10u);
  EXPECT_EQ(call(w->rx()), 21u);
  EXPECT_EQ(call(z->rx()), 12u);
  EXPECT_TRUE(audit_arena(arena));
}

INSTANTIATE_TEST_SUITE_P(Backends, BatchOrder,
                         ::testing::ValuesIn(kAllBackends), backend_name);

}  // namespace
}  // namespace wxa::test

namespace wxa::test {
namespace {

// kernel_write: the kernel copies the code in first, then the instruction
// cache is flushed over exactly what was copied as code or traps (through
// the executable view: there is no other), then the barrier. Read-only data
// and unseals are not flushed; nothing changes protection but the data.
TEST(KernelWriteOrder, CopyThenFlushThenBarrier) {
  WXA_SKIP_IF_UNAVAILABLE(Backend::kernel_write);
  FaultPal pal;
  Options o = small_options(Backend::kernel_write);
  o.quarantine = 0;
  o.open_pages = 16;
  Result<Arena> made = detail::create_arena(o, pal);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  const std::size_t ps = arena.page_size();
  std::vector<Chunk> c = adjacent(arena, 6);
  ASSERT_EQ(c.size(), 6u);
  auto rx = [&](std::size_t i) { return c[i].rx(); };

  pal.count_only(kAllSyscalls);
  Batch b(arena);
  b.seal(c[0]);
  b.seal(c[1]);
  b.seal(c[2], Seal::read_only);
  b.release(c[3]);
  b.seal(c[5]);
  Result<CommitReport> r = b.commit();
  ASSERT_TRUE(Ok(r));
  EXPECT_EQ(r->runs, 4u);
  EXPECT_EQ(r->writes, 2u) << "c0..c3 are contiguous, c5 is not";
  EXPECT_EQ(r->protection_calls, 1u) << "only the data loses execute";
  EXPECT_EQ(r->flushes, 3u) << "code c0..c1, traps c3, code c5";
  // Every flush follows the copy that covered it, and precedes any barrier.
  const std::vector<PalEvent>& log = pal.log();
  std::size_t first_write = log.size(), flushes = 0;
  for (std::size_t i = 0; i < log.size(); ++i) {
    if (log[i].call == PalCall::write_shared && first_write == log.size())
      first_write = i;
    if (log[i].call == PalCall::protect) {
      EXPECT_EQ(log[i].p, rx(2));
      EXPECT_EQ(log[i].access, Access::read);
      EXPECT_LT(i, first_write) << "execute is removed before the data lands";
    }
    if (log[i].call != PalCall::flush_icache) continue;
    ++flushes;
    EXPECT_GT(i, first_write) << "flushed before the copy";
    const auto* p = static_cast<const std::byte*>(log[i].p);
    EXPECT_TRUE(p == rx(0) || p == rx(3) || p == rx(5))
        << "flushed " << log[i].p << " through the executable view";
    EXPECT_NE(p, static_cast<const std::byte*>(rx(2))) << "data flushed";
  }
  EXPECT_EQ(flushes, 3u);
  EXPECT_EQ(call(rx(0)), 0u);
  EXPECT_EQ(call(rx(5)), 5u);

  // Unseal, rewrite, reseal: the copy, one flush, then the barrier.
  pal.count_only(kAllSyscalls);
  Result<Chunk> u = arena.unseal(rx(1));
  ASSERT_TRUE(Ok(u));
  EXPECT_TRUE(pal.log().empty()) << "unseal makes no call and no flush";
  EXPECT_NE(static_cast<const void*>(u->rw().data()), rx(1));
  EXPECT_TRUE(holds_fn(u->rw().data(), 1)) << "the staged copy is the code";
  EXPECT_EQ(call(rx(1)), 1u) << "the old code runs until the seal";
  write_fn(*u, 0x9A7C4);
  pal.count_only(kAllSyscalls);
  ASSERT_TRUE(Ok(arena.seal(*u)));
  std::size_t write_at = 0, flush_at = 0, barrier_at = 0;
  for (std::size_t i = 0; i < pal.log().size(); ++i) {
    const PalEvent& e = pal.log()[i];
    if (e.call == PalCall::write_shared) write_at = i + 1;
    if (e.call == PalCall::flush_icache) {
      flush_at = i + 1;
      EXPECT_EQ(e.p, rx(1));
      EXPECT_EQ(e.bytes, ps);
    }
    if (e.call == PalCall::barrier) barrier_at = i + 1;
  }
  EXPECT_TRUE(write_at && flush_at && write_at < flush_at);
  if (has_barrier()) {
    EXPECT_GT(barrier_at, flush_at);
  }
  EXPECT_EQ(call(rx(1)), 0x9A7C4u);
  EXPECT_TRUE(audit_arena(arena));
}

}  // namespace
}  // namespace wxa::test
