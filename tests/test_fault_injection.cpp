// SPDX-License-Identifier: MIT
// Fault injection everywhere: every platform call of representative
// scenarios fails in turn, with each errno the real call can return, and each
// failure must be clean (the mapped Errc), change nothing, leave no W+X
// mapping, and leave the arena working.
//
// The scenarios: creating an arena (both backends: the reservation, the
// shared object and its second view), the first allocation (opening pages;
// in dual_map that maps a writable view), an allocation that recycles
// quarantine, a batch sealing several runs (with the barrier), a batch
// releasing several runs, unseal (in dual_map: dropping the executable view,
// mapping a writable one), a CodeHeap publish that seals and releases, and
// trim. test_rollback.cpp holds the deeper single-scenario proofs; this file
// walks the whole matrix with one checker and counts what it covered.
#include <dirent.h>
#include <gtest/gtest.h>

#include <iostream>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "pal/pal.hpp"
#include "support/arena_util.hpp"
#include "support/backends.hpp"
#include "support/fault_pal.hpp"
#include "support/maps.hpp"
#include "support/native_code.hpp"
#include "wxarena/arena.hpp"
#include "wxarena/code_heap.hpp"

namespace wxa::test {
namespace {

// What the real calls (mmap, mprotect, madvise, memfd_create, ftruncate,
// fallocate, membarrier) can fail with, and what the arena must report.
struct Injected {
  int err;
  Errc code;
};
const Injected kErrnos[] = {{ENOMEM, Errc::out_of_memory},
                            {EACCES, Errc::permission_denied},
                            {EPERM, Errc::permission_denied},
                            {EINVAL, Errc::invalid_argument},
                            {EAGAIN, Errc::os_error}};

// Injected-failure positions covered by the whole file, printed at the end.
std::size_t g_covered = 0;

std::size_t page_size() {
  return detail::system_pal().capabilities().page_size;
}

std::size_t open_fds() {
  std::size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (const dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
    ::closedir(d);
  }
  return n;
}

// --- One arena, set up for one scenario ------------------------------------

struct World {
  FaultPal pal;
  std::optional<Arena> arena;
  std::optional<CodeHeap> heap;
  std::optional<Batch> batch;
  std::vector<Chunk> chunks;
  std::optional<Chunk> result;  // what the operation handed out
  // Functions that run before the operation and after a failed one.
  std::vector<std::pair<const void*, std::uint32_t>> runs_before;
  // Functions that run once the operation succeeded.
  std::vector<std::pair<const void*, std::uint32_t>> runs_after;

  Chunk& add(std::size_t bytes, std::uint32_t value) {
    Result<Chunk> c = arena->allocate(bytes);
    EXPECT_TRUE(Ok(c));
    chunks.push_back(c ? *c : Chunk());
    if (c) {
      EXPECT_NE(write_return_imm(c->rw(), value), 0u);
    }
    return chunks.back();
  }
};

struct Scenario {
  const char* name;
  std::size_t reserve_pages, quarantine, open_pages;
  // Builds the starting state; gtest failures inside end the test.
  void (*setup)(World&);
  // The operation under test: its error, or Errc::ok.
  Error (*act)(World&);
  // After the operation succeeded: uses what it handed out.
  void (*finish)(World&);
  // A failed trim() keeps what it gave back before the failing call: its
  // live chunks must not change, its free and retired pages may.
  bool partial = false;
};

template <class T>
Error error_of(const Result<T>& r) {
  return r ? Error() : r.error();
}

// First allocation: opens pages (mprotect RW, or maps a writable view).
void setup_nothing(World&) {}
Error act_allocate(World& w) {
  Result<Chunk> c = w.arena->allocate(100);
  if (c) w.result = *c;
  return error_of(c);
}
// Writes, seals and runs what allocate or unseal handed out.
void finish_code(World& w) {
  ASSERT_TRUE(w.result.has_value());
  ASSERT_NE(write_return_imm(w.result->rw(), 0xF1E1D), 0u);
  ASSERT_TRUE(Ok(w.arena->seal(*w.result)));
  EXPECT_EQ(call(w.result->rx()), 0xF1E1Du);
}
void finish_nothing(World&) {}

// The reservation is full; two adjacent chunks wait in quarantine (0), so
// the allocation must recycle them: one run, one call.
void setup_recycle(World& w) {
  for (std::uint32_t i = 0; i < 8; ++i) w.add(1, 0x100 + i);
  Batch b(*w.arena);
  b.seal(w.chunks[0]);
  b.release(w.chunks[2]);
  b.release(w.chunks[3]);
  ASSERT_TRUE(Ok(b.commit()));
  w.runs_before.push_back({w.chunks[0].rx(), 0x100});
}

// Seals four runs (two to code, one to data, one to code again after an
// unseal: a reused address) and forces the barrier.
void setup_seal_batch(World& w) {
  for (std::uint32_t i = 0; i < 9; ++i) w.add(i == 4 ? 3 * page_size() : 1, i);
  ASSERT_TRUE(Ok(w.arena->seal(w.chunks[8])));
  Result<Chunk> again = w.arena->unseal(w.chunks[8].rx());
  ASSERT_TRUE(Ok(again));
  ASSERT_NE(write_return_imm(again->rw(), 0x8888), 0u);
  w.batch.emplace(*w.arena);
  for (std::size_t i : {0, 1, 2, 4, 8}) w.batch->seal(w.chunks[i]);
  w.batch->seal(w.chunks[6], Seal::read_only);
  for (std::uint32_t i : {0u, 1u, 2u, 4u})
    w.runs_after.push_back({w.chunks[i].rx(), i});
  w.runs_after.push_back({w.chunks[8].rx(), 0x8888});
}
Error act_commit(World& w) {
  // The barrier where the host has one (elsewhere asking for it is refused
  // before any call: Edges.BarrierAskedForWithoutMembarrierIsRefused).
  return error_of(w.batch->commit(host().barrier ? CommitFlags::barrier
                                                 : CommitFlags::none));
}

// Releases executable, read-only and writable chunks in three runs.
void setup_release_batch(World& w) {
  for (std::uint32_t i = 0; i < 8; ++i) w.add(1, 0x200 + i);
  Batch b(*w.arena);
  for (std::size_t i : {0, 1, 4, 7}) b.seal(w.chunks[i]);
  b.seal(w.chunks[5], Seal::read_only);
  ASSERT_TRUE(Ok(b.commit()));
  w.batch.emplace(*w.arena);
  for (std::size_t i : {0, 1, 2, 4, 5}) w.batch->release(w.chunks[i]);
  for (std::uint32_t i : {0u, 1u, 4u, 7u})
    w.runs_before.push_back({w.chunks[i].rx(), 0x200 + i});
  w.runs_after.push_back({w.chunks[7].rx(), 0x207});
}

// Unseal (dual_map: the executable view goes, a writable one comes).
void setup_unseal(World& w) {
  w.add(2 * page_size(), 0x5EA1);
  ASSERT_TRUE(Ok(w.arena->seal(w.chunks[0])));
  w.runs_before.push_back({w.chunks[0].rx(), 0x5EA1});
}
Error act_unseal(World& w) {
  Result<Chunk> c = w.arena->unseal(w.chunks[0].rx());
  if (c) w.result = *c;
  return error_of(c);
}

// A heap with published functions on one page (all released since), and
// pending ones on two pages plus one large function: publish seals three
// chunks and releases one.
void setup_publish(World& w) {
  Result<CodeHeap> h = CodeHeap::create(*w.arena);
  ASSERT_TRUE(Ok(h));
  w.heap.emplace(std::move(*h));
  std::vector<const void*> first;
  for (std::uint32_t i = 0; i < 3; ++i) {
    Result<Function> f = w.heap->allocate(64);
    ASSERT_TRUE(Ok(f));
    ASSERT_NE(write_return_imm(f->rw, i), 0u);
    first.push_back(f->rx);
  }
  ASSERT_TRUE(Ok(w.heap->publish()));
  for (const void* rx : first) ASSERT_TRUE(Ok(w.heap->release(rx)));
  for (std::uint32_t i = 0; i < 80; ++i) {  // 80 x 64 bytes: two pages
    Result<Function> f = w.heap->allocate(64);
    ASSERT_TRUE(Ok(f));
    ASSERT_NE(write_return_imm(f->rw, 0x300 + i), 0u);
    w.runs_after.push_back({f->rx, 0x300 + i});
  }
  Result<Function> big = w.heap->allocate(page_size() + 100);
  ASSERT_TRUE(Ok(big));
  ASSERT_NE(write_return_imm(big->rw, 0xB16), 0u);
  w.runs_after.push_back({big->rx, 0xB16});
}
Error act_publish(World& w) { return error_of(w.heap->publish()); }

// Open pages and three reusable quarantined chunks (quarantine 0): trim
// decommits each and makes the open pages inaccessible.
void setup_trim(World& w) {
  for (std::uint32_t i = 0; i < 12; ++i) w.add(1, 0x400 + i);
  Batch b(*w.arena);
  for (std::size_t i : {3, 4, 8}) b.release(w.chunks[i]);
  b.seal(w.chunks[0]);
  ASSERT_TRUE(Ok(b.commit()));
  w.runs_before.push_back({w.chunks[0].rx(), 0x400});
}
Error act_trim(World& w) { return error_of(w.arena->trim()); }

const Scenario kScenarios[] = {
    {"first allocation", 64, 16, 16, setup_nothing, act_allocate, finish_code},
    {"allocation recycling quarantine", 8, 0, 8, setup_recycle, act_allocate,
     finish_code},
    {"seal batch", 64, 16, 64, setup_seal_batch, act_commit, finish_nothing},
    {"release batch", 64, 16, 64, setup_release_batch, act_commit,
     finish_nothing},
    {"unseal", 64, 16, 64, setup_unseal, act_unseal, finish_code},
    {"CodeHeap publish", 64, 16, 64, setup_publish, act_publish,
     finish_nothing},
    {"trim", 64, 0, 16, setup_trim, act_trim, finish_nothing, true},
};

::testing::AssertionResult act_ok(const Scenario& sc, World& w) {
  const Error e = sc.act(w);
  if (e.code() == Errc::ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << sc.name << ": " << e.to_string();
}

// Everything observable that a failed operation must keep.
struct Snapshot {
  std::vector<std::string> states, kernel;
  std::vector<std::size_t> counts;
  HeapStats heap;

  static Snapshot of(const World& w) {
    Snapshot s{state_map(*w.arena),
               kernel_map(*w.arena),
               chunk_counts(w.arena->stats()),
               {}};
    if (w.heap) s.heap = w.heap->stats();
    return s;
  }
};

bool make(World& w, const Scenario& sc, Backend backend) {
  Options o;
  o.backend = backend;
  o.reserve_bytes = sc.reserve_pages * page_size();
  o.quarantine = sc.quarantine;
  o.open_pages = sc.open_pages;
  Result<Arena> a = detail::create_arena(o, w.pal);
  EXPECT_TRUE(Ok(a));
  if (!a) return false;
  w.arena.emplace(std::move(*a));
  sc.setup(w);
  return !::testing::Test::HasFailure();
}

class FaultInjection
    : public ::testing::TestWithParam<std::tuple<Backend, std::size_t>> {
 protected:
  void SetUp() override { WXA_SKIP_IF_UNAVAILABLE(std::get<0>(GetParam())); }
};

TEST_P(FaultInjection, EveryCallFailsCleanlyWithEveryErrno) {
  const auto [backend, index] = GetParam();
  const Scenario& sc = kScenarios[index];

  // Calibration: the platform calls the operation makes.
  std::vector<PalCall> kinds;
  {
    World w;
    ASSERT_TRUE(make(w, sc, backend));
    w.pal.count_only(kAllSyscalls);
    ASSERT_TRUE(act_ok(sc, w));
    for (const PalEvent& e : w.pal.log())
      if (e.call != PalCall::flush_icache) kinds.push_back(e.call);
    ASSERT_EQ(kinds.size(), w.pal.failable_calls());
    sc.finish(w);
    for (const auto& [rx, value] : w.runs_after) EXPECT_EQ(call(rx), value);
    EXPECT_TRUE(audit_arena(*w.arena));
  }
  if (kinds.empty() && backend == Backend::kernel_write) {
    // Recycling retired pages and unsealing change no mapping there: the
    // traps are in place, the staged copy is a memcpy. Nothing to fail.
    std::cout << "[ figures  ] kernel_write: " << sc.name
              << " makes no platform call\n";
    return;
  }
  ASSERT_FALSE(kinds.empty()) << sc.name << " makes no platform call";

  std::size_t covered = 0;
  for (std::size_t k = 1; k <= kinds.size(); ++k) {
    for (const Injected& inj : kErrnos) {
      SCOPED_TRACE(::testing::Message()
                   << sc.name << ": call " << k << " of " << kinds.size()
                   << " (" << to_string(kinds[k - 1]) << ") fails with errno "
                   << inj.err);
      World w;
      ASSERT_TRUE(make(w, sc, backend));
      const Snapshot before = Snapshot::of(w);
      const Stats stats_before = w.arena->stats();

      w.pal.arm(k, inj.err, kAllSyscalls);
      const Error e = sc.act(w);
      w.pal.disarm();
      ASSERT_TRUE(w.pal.fired());

      // A clean error: the mapped code and the errno behind it.
      ASSERT_NE(e.code(), Errc::ok) << "succeeded although the call failed";
      EXPECT_EQ(e.code(), inj.code) << e.to_string();
      EXPECT_EQ(e.sys_errno(), inj.err);

      // No state change; the kernel agrees with the tracked states; no W+X.
      const Snapshot after = Snapshot::of(w);
      if (sc.partial) {
        const Stats s = w.arena->stats();
        for (State st : {State::writable, State::executable, State::read_only})
          EXPECT_EQ(s.chunks_in(st), stats_before.chunks_in(st));
      } else {
        EXPECT_EQ(after.states, before.states) << "tracked states changed";
        EXPECT_EQ(after.kernel, before.kernel) << "kernel mappings changed";
        EXPECT_EQ(after.counts, before.counts) << "chunk counts changed";
        EXPECT_EQ(after.heap.live_functions, before.heap.live_functions);
        EXPECT_EQ(after.heap.pending_functions, before.heap.pending_functions);
        EXPECT_EQ(after.heap.pages, before.heap.pages);
      }
      EXPECT_TRUE(audit_arena(*w.arena));
      EXPECT_TRUE(vmas_agree(w.arena->stats().vmas, *w.arena));
      for (const auto& [rx, value] : w.runs_before) EXPECT_EQ(call(rx), value);

      // The arena works afterwards: the same operation, then a new chunk.
      ASSERT_TRUE(act_ok(sc, w));
      sc.finish(w);
      for (const auto& [rx, value] : w.runs_after) EXPECT_EQ(call(rx), value);
      EXPECT_TRUE(still_works(*w.arena));
      EXPECT_TRUE(audit_arena(*w.arena));
      if (HasFailure()) return;  // one broken position is enough to read
      ++covered;
    }
  }
  EXPECT_EQ(covered, kinds.size() * std::size(kErrnos));
  g_covered += covered;
  std::printf("[ covered  ] %s, %s: %zu calls x %zu errnos = %zu positions\n",
              std::string(to_string(backend)).c_str(), sc.name, kinds.size(),
              std::size(kErrnos), covered);
}

std::string scenario_name(
    const ::testing::TestParamInfo<std::tuple<Backend, std::size_t>>& info) {
  std::string n = std::string(to_string(std::get<0>(info.param))) + "_";
  for (const char* p = kScenarios[std::get<1>(info.param)].name; *p; ++p)
    n += std::isalnum(static_cast<unsigned char>(*p)) ? *p : '_';
  return n;
}

INSTANTIATE_TEST_SUITE_P(
    Matrix, FaultInjection,
    ::testing::Combine(::testing::ValuesIn(kAllBackends),
                       ::testing::Range<std::size_t>(0, std::size(kScenarios))),
    scenario_name);

// --- Creating an arena ------------------------------------------------------

// How many mappings of exactly `bytes` exist: a leaked reservation of an odd
// size shows up here.
std::size_t mappings_of_size(std::size_t bytes) {
  std::size_t n = 0;
  for (const Mapping& m : read_maps()) n += m.size() == bytes;
  return n;
}

class FaultInjectionCreate : public BackendTest {};

TEST_P(FaultInjectionCreate, EveryCallFailsCleanlyWithEveryErrno) {
  Options o = options(77 * page_size());  // an odd size, to spot leaks
  std::vector<PalCall> kinds;
  {
    FaultPal pal;
    pal.count_only(kAllSyscalls);
    Result<Arena> a = detail::create_arena(o, pal);
    ASSERT_TRUE(Ok(a));
    for (const PalEvent& e : pal.log())
      if (e.call != PalCall::flush_icache) kinds.push_back(e.call);
    EXPECT_TRUE(still_works(*a));
  }
  ASSERT_FALSE(kinds.empty());

  std::size_t covered = 0;
  for (std::size_t k = 1; k <= kinds.size(); ++k) {
    for (const Injected& inj : kErrnos) {
      SCOPED_TRACE(::testing::Message()
                   << "create: call " << k << " of " << kinds.size() << " ("
                   << to_string(kinds[k - 1]) << ") fails with errno "
                   << inj.err);
      FaultPal pal;
      const std::size_t fds = open_fds();
      const std::size_t reservations = mappings_of_size(o.reserve_bytes);
      pal.arm(k, inj.err, kAllSyscalls);
      Result<Arena> a = detail::create_arena(o, pal);
      pal.disarm();
      ASSERT_TRUE(pal.fired());
      const PalCall failed = kinds[k - 1];
      if (failed == PalCall::name || failed == PalCall::register_barrier) {
        // Best effort by design: a name only helps people read the maps,
        // and without the barrier registration commits skip the barrier.
        ASSERT_TRUE(Ok(a)) << to_string(failed) << " is best effort";
        EXPECT_TRUE(audit_arena(*a));
        EXPECT_TRUE(still_works(*a));
      } else {
        ASSERT_TRUE(FailsWith(a, inj.code));
        EXPECT_EQ(a.error().sys_errno(), inj.err);
        EXPECT_EQ(open_fds(), fds) << "a descriptor leaked";
        EXPECT_EQ(mappings_of_size(o.reserve_bytes), reservations)
            << "a reservation leaked";
        EXPECT_TRUE(writable_and_executable().empty());
        // The same options work right after.
        Result<Arena> again = detail::create_arena(o, pal);
        ASSERT_TRUE(Ok(again));
        EXPECT_TRUE(still_works(*again));
        EXPECT_TRUE(audit_arena(*again));
      }
      if (HasFailure()) return;
      ++covered;
    }
  }
  g_covered += covered;
  std::printf(
      "[ covered  ] %s, create: %zu calls x %zu errnos = %zu "
      "positions\n",
      std::string(to_string(GetParam())).c_str(), kinds.size(),
      std::size(kErrnos), covered);
}

INSTANTIATE_TEST_SUITE_P(Backends, FaultInjectionCreate,
                         ::testing::ValuesIn(kAllBackends), backend_name);

// After every test: the total, if any of these ran.
class PrintCovered : public ::testing::Environment {
 public:
  void TearDown() override {
    if (g_covered)
      std::printf(
          "[ covered  ] injected-failure positions covered in total: "
          "%zu\n",
          g_covered);
  }
};
[[maybe_unused]] ::testing::Environment* const g_print_covered =
    ::testing::AddGlobalTestEnvironment(new PrintCovered);

}  // namespace
}  // namespace wxa::test
