// SPDX-License-Identifier: MIT
// VMA accounting: the arena's figure equals the kernel's after random
// operation sequences and after writes into parts of a private reservation,
// stays tiny for 100,000 live chunks, and the budget refuses (before any
// system call) what would exceed it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "backend/backend.hpp"
#include "pal/pal.hpp"
#include "region.hpp"
#include "support/arena_util.hpp"
#include "support/maps.hpp"
#include "wxarena/arena.hpp"

namespace wxa::test {
namespace {

// How a random sequence is set up: a roomy arena, or a tiny one where the
// quarantine and recycling come into play all the time.
struct Shape {
  const char* name;
  std::size_t reserve_pages, open_pages, quarantine;
};
const Shape kShapes[] = {{"roomy", 16384, 64, 16}, {"tiny", 96, 8, 2}};
void PrintTo(const Shape& s, std::ostream* os) { *os << s.name; }

class VmaRandom : public ::testing::TestWithParam<std::tuple<Backend, Shape>> {
 protected:
  void SetUp() override { WXA_SKIP_IF_UNAVAILABLE(std::get<0>(GetParam())); }
};

struct Live {
  Chunk chunk;
  State state;
  std::uint32_t value;
};

TEST_P(VmaRandom, FigureEqualsKernelAfterEveryOperation) {
  const auto [backend, shape] = GetParam();
  const std::size_t ps = detail::system_pal().capabilities().page_size;
  Options o;
  o.backend = backend;
  o.reserve_bytes = shape.reserve_pages * ps;
  o.open_pages = shape.open_pages;
  o.quarantine = shape.quarantine;
  Result<Arena> made = Arena::create(o);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;

  std::mt19937 rng(20240611);  // fixed: a failure reproduces
  auto pick = [&](std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
  };
  std::vector<Live> live;
  std::uint32_t next_value = 1;
  std::size_t ops = 0, refused = 0, max_vmas = 0;
  // `count` distinct live chunks satisfying `want`, at random.
  auto choose = [&](std::size_t count, auto want) {
    std::vector<std::size_t> idx;
    for (std::size_t i = 0; i < live.size(); ++i)
      if (want(live[i].state)) idx.push_back(i);
    std::shuffle(idx.begin(), idx.end(), rng);
    if (idx.size() > count) idx.resize(count);
    std::sort(idx.begin(), idx.end());
    return idx;
  };

  constexpr int kSteps = 1500;
  for (int step = 0; step < kSteps; ++step) {
    SCOPED_TRACE(::testing::Message() << "step " << step);
    const std::size_t what = pick(100);
    if (what < 35 || live.empty()) {
      // Allocate: mostly small, sometimes several pages, sometimes odd.
      const std::size_t bytes =
          pick(10) < 8 ? 1 + pick(2 * ps) : (1 + pick(12)) * ps - pick(64);
      Result<Chunk> c = arena.allocate(bytes);
      if (!c) {
        ASSERT_TRUE(FailsWith(c, Errc::exhausted)) << bytes << " bytes";
        ++refused;
      } else {
        ASSERT_NE(write_return_imm(c->rw(), next_value), 0u);
        live.push_back({*c, State::writable, next_value++});
      }
    } else if (what < 60) {
      // Seal a few writable ones, each to code or data, in one batch.
      const auto idx =
          choose(1 + pick(8), [](State s) { return s == State::writable; });
      Batch b(arena);
      std::vector<State> to;
      for (std::size_t i : idx) {
        const bool code = pick(4) != 0;
        b.seal(live[i].chunk, code ? Seal::execute : Seal::read_only);
        to.push_back(code ? State::executable : State::read_only);
      }
      ASSERT_TRUE(Ok(b.commit()));
      for (std::size_t k = 0; k < idx.size(); ++k) live[idx[k]].state = to[k];
    } else if (what < 70) {
      // Unseal a few sealed ones, patch them.
      const auto idx = choose(1 + pick(4), [](State s) {
        return s == State::executable || s == State::read_only;
      });
      Batch b(arena);
      for (std::size_t i : idx) b.unseal(live[i].chunk.rx());
      ASSERT_TRUE(Ok(b.commit()));
      for (std::size_t i : idx) {
        Result<ChunkInfo> info = arena.find(live[i].chunk.rx());
        ASSERT_TRUE(Ok(info));
        live[i].chunk = info->chunk;
        live[i].state = State::writable;
        live[i].value = next_value++;
        ASSERT_NE(write_return_imm(live[i].chunk.rw(), live[i].value), 0u);
      }
    } else if (what < 95) {
      // Release a few (any state), sometimes together with seals.
      const auto idx = choose(1 + pick(6), [](State) { return true; });
      Batch b(arena);
      std::vector<std::size_t> sealed;
      for (std::size_t i : idx) {
        if (live[i].state == State::writable && pick(3) == 0) {
          b.seal(live[i].chunk);
          sealed.push_back(i);
        } else {
          b.release(live[i].chunk);
        }
      }
      ASSERT_TRUE(Ok(b.commit()));
      for (std::size_t i : sealed) live[i].state = State::executable;
      std::vector<Live> keep;
      for (std::size_t i = 0; i < live.size(); ++i)
        if (!std::binary_search(idx.begin(), idx.end(), i) ||
            std::find(sealed.begin(), sealed.end(), i) != sealed.end())
          keep.push_back(live[i]);
      live.swap(keep);
    } else {
      ASSERT_TRUE(Ok(arena.trim()));
    }
    ++ops;

    const std::size_t tracked = arena.stats().vmas;
    ASSERT_TRUE(vmas_agree(tracked, arena))
        << "the arena's VMA figure differs from /proc/self/maps";
    max_vmas = std::max(max_vmas, tracked);
    if (step % 100 == 0) {
      ASSERT_TRUE(audit_arena(arena));
    }
  }

  // Everything live behaves as the model says.
  const Stats s = arena.stats();
  std::size_t by_state[5] = {};
  for (const Live& l : live) {
    ++by_state[static_cast<int>(l.state)];
    Result<ChunkInfo> info = arena.find(l.chunk.rx());
    ASSERT_TRUE(Ok(info));
    EXPECT_EQ(info->state, l.state);
    if (l.state == State::executable) {
      EXPECT_EQ(call(l.chunk.rx()), l.value);
    }
  }
  for (int i = 1; i < 4; ++i) EXPECT_EQ(s.chunks[i], by_state[i]) << i;
  EXPECT_TRUE(audit_arena(arena));
  std::cout << "[ figures  ] " << to_string(backend) << "/" << shape.name
            << ": " << ops << " random operations (" << refused
            << " refused as exhausted), VMA figure matched the kernel after "
               "each; peak "
            << max_vmas << " VMAs\n";
}

INSTANTIATE_TEST_SUITE_P(
    Sequences, VmaRandom,
    ::testing::Combine(::testing::ValuesIn(kAllBackends),
                       ::testing::ValuesIn(kShapes)),
    [](const ::testing::TestParamInfo<std::tuple<Backend, Shape>>& i) {
      return std::string(to_string(std::get<0>(i.param))) + "_" +
             std::get<1>(i.param).name;
    });

// --- Writes into parts of a private reservation ------------------------------

// The real platform layer, saying the kernel keeps no per-mapping record of
// anonymous memory: the protect backend then leaves its reservation as
// mmap() made it, as the library did before it knew.
class OriginBlindPal final : public detail::Pal {
 public:
  OriginBlindPal() noexcept : caps_(detail::system_pal().capabilities()) {
    caps_.anon_merge_by_origin = false;
  }
  const detail::Capabilities& capabilities() noexcept override { return caps_; }

 private:
  detail::Capabilities caps_;
};

// Drives a protect region over `pal` through writes into parts of it that
// are apart, then makes them equal again; compares the region's VMA count
// with the kernel's after each step. Returns the most VMAs the kernel showed
// beyond the count (the count is never above the kernel's: the kernel never
// merges what differs in protection).
std::size_t kernel_beyond_count(detail::Pal& pal) {
  using detail::PageState;
  const detail::BackendFacts* facts[detail::kMaxBackends] = {};
  Result<std::size_t> found =
      detail::backend_candidates(Backend::protect, pal.capabilities(), facts);
  EXPECT_TRUE(Ok(found));
  if (!found) return 0;
  constexpr std::size_t kPages = 64;
  SyscallCounts n;
  detail::Region r;
  Result<void> made = r.init(pal, *facts[0], kPages, 0, 0, false, 1, n);
  EXPECT_TRUE(Ok(made));
  if (!made) return 0;
  std::byte* base = r.rx_base();
  std::size_t beyond = 0;
  int step = 0;
  auto check = [&] {
    const std::size_t kernel =
        count_vmas(base, base + (kPages << r.page_shift()));
    EXPECT_GE(kernel, r.vmas()) << "step " << step;
    beyond = std::max(beyond, kernel - std::min(kernel, r.vmas()));
    ++step;
  };
  auto move = [&](std::size_t a, std::size_t b, PageState to) {
    std::size_t calls = 0;
    Result<void> done = r.change(
        a, b, [&](std::size_t i) { return r.state(i); },
        [&](std::size_t) { return to; }, calls, n);
    EXPECT_TRUE(Ok(done)) << "step " << step;
    r.set_state(a, b, to, static_cast<std::uint32_t>(a));
    check();
  };
  auto write = [&](std::size_t i) {
    *reinterpret_cast<volatile std::byte*>(r.rx_page(i)) = std::byte{0xCC};
  };

  // Two parts written while apart, then inaccessible again: on every
  // kernel each write made its own record, so they would stay apart.
  move(0, 3, PageState::writable);
  move(10, 13, PageState::writable);
  write(0);
  write(10);
  move(0, 3, PageState::unused);
  move(10, 13, PageState::unused);
  // A written part next to never-written pages of the same protection
  // (kernels without the 2025 fix keep them apart), as code and as data.
  move(30, 33, PageState::writable);
  write(31);
  move(30, 33, PageState::executable);
  move(33, 36, PageState::writable);
  write(34);
  move(33, 36, PageState::read_only);
  move(30, 36, PageState::retired);
  // A written part inside a wider change over parts of every kind.
  move(40, 42, PageState::writable);
  write(41);
  move(40, 42, PageState::unused);
  move(38, 50, PageState::open);
  move(38, 50, PageState::unused);
  move(0, kPages, PageState::open);
  move(0, kPages, PageState::unused);
  r.destroy(n);
  return beyond;
}

TEST(VmaWrites, PartsOfAReservationMergeByProtectionWhateverWasWritten) {
  WXA_SKIP_IF_UNAVAILABLE(Backend::protect);
  if (!detail::system_pal().capabilities().anon_merge_by_origin)
    GTEST_SKIP() << "this platform keeps no per-mapping record of anonymous "
                    "memory: parts merge by protection alone";
  if (!maps_tell_read_from_execute()) GTEST_SKIP() << kMapsMergeReason;
  // With the record made once, before any part is split off: exact.
  EXPECT_EQ(kernel_beyond_count(detail::system_pal()), 0u);
  // Without it, the kernel keeps written parts apart (on this kernel too,
  // where parts were written while apart): the test above can fail.
  OriginBlindPal blind;
  const std::size_t beyond = kernel_beyond_count(blind);
  EXPECT_GT(beyond, 0u) << "this kernel merged parts written apart";
  std::cout << "[ figures  ] a reservation as mmap() makes it: the kernel "
               "showed up to "
            << beyond << " VMAs more than the protections make\n";
}

// --- 100,000 live chunks
// ------------------------------------------------------

using VmaMany = BackendTest;

TEST_P(VmaMany, HundredThousandLiveChunksNeedAFewVmas) {
  constexpr std::size_t kChunks = 100000, kBatch = 1000;
  const std::size_t ps = detail::system_pal().capabilities().page_size;
  Result<Arena> made = Arena::create(options((kChunks + 1024) * ps));
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;

  std::vector<const void*> entries;
  entries.reserve(kChunks);
  std::size_t peak = 0;
  for (std::size_t i = 0; i < kChunks; i += kBatch) {
    Batch b(arena);
    for (std::size_t k = i; k < i + kBatch; ++k) {
      Result<Chunk> c = arena.allocate(256);
      ASSERT_TRUE(Ok(c)) << k;
      // Code goes into every 100th chunk only: a first touch costs tens of
      // microseconds of page fault on this VM, and which pages were written
      // does not change a single VMA; what is sealed does.
      if (k % 100 == 0) {
        ASSERT_NE(write_return_imm(c->rw(), static_cast<std::uint32_t>(k)), 0u);
      }
      b.seal(*c);
      entries.push_back(c->rx());
    }
    Result<CommitReport> r = b.commit();
    ASSERT_TRUE(Ok(r));
    ASSERT_EQ(r->runs, 1u);
    peak = std::max(peak, arena.stats().vmas);
  }
  const Stats s = arena.stats();
  EXPECT_EQ(s.chunks_in(State::executable), kChunks);
  EXPECT_TRUE(vmas_agree(s.vmas, arena));
  EXPECT_LE(s.vmas, 16u);
  EXPECT_LE(peak, 16u);
  std::cout << "[ figures  ] " << to_string(arena.backend()) << ": " << kChunks
            << " live chunks sealed in batches of " << kBatch << " occupy "
            << s.vmas << " VMAs (kernel: " << kernel_vmas(arena) << ", peak "
            << peak << ")\n";
  ::testing::Test::RecordProperty("vmas_100000_live", std::to_string(s.vmas));
  for (std::size_t k = 0; k < kChunks; k += 100)
    ASSERT_EQ(call(entries[k]), k) << k;
  EXPECT_TRUE(audit_arena(arena));

  // Freeing every second one alternates states page by page: the budget
  // (a quarter of vm.max_map_count by default) stops it, cleanly, before
  // the kernel would. kernel_write retires code by overwriting it with
  // traps: the map does not change, and every release goes through.
  const bool splits = arena.backend() != Backend::kernel_write;
  const std::size_t budget = s.vma_budget;
  std::size_t released = 0;
  Errc stopped = Errc::ok;
  for (std::size_t i = 0; i < kChunks && stopped == Errc::ok; i += 2 * kBatch) {
    Batch b(arena);
    for (std::size_t k = i; k < std::min(kChunks, i + 2 * kBatch); k += 2)
      b.release(entries[k]);
    const Stats before = arena.stats();
    Result<CommitReport> r = b.commit();
    if (!r) {
      stopped = r.error().code();
      EXPECT_EQ(arena.stats().syscalls.total(), before.syscalls.total())
          << "the budget is checked before any system call";
      EXPECT_EQ(arena.stats().vmas, before.vmas);
    } else {
      released += kBatch;
    }
    ASSERT_LE(arena.stats().vmas, budget);
  }
  if (splits) {
    EXPECT_EQ(stopped, Errc::vma_budget);
  } else {
    EXPECT_EQ(stopped, Errc::ok);
    EXPECT_EQ(released, kChunks / 2);
    EXPECT_LE(arena.stats().vmas, 4u);
  }
  EXPECT_TRUE(vmas_agree(arena.stats().vmas, arena));
  std::cout << "[ figures  ] " << to_string(arena.backend())
            << ": releasing every second chunk stopped at " << released
            << " releases, " << arena.stats().vmas << " VMAs (budget " << budget
            << ")\n";
  // The chunks with code beyond the released stretch still run.
  for (std::size_t k = (2 * released + 99) / 100 * 100; k < kChunks; k += 100)
    ASSERT_EQ(call(entries[k]), k) << k;
}

INSTANTIATE_TEST_SUITE_P(Backends, VmaMany, ::testing::ValuesIn(kAllBackends),
                         backend_name);

// --- The budget
// -----------------------------------------------------------------

using VmaBudget = BackendTest;

TEST_P(VmaBudget, OverBudgetIsRefusedBeforeAnySystemCallAndNothingChanges) {
  Options o = options();
  o.vma_budget = 8;
  Result<Arena> made = Arena::create(o);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  std::vector<Chunk> c;
  for (int i = 0; i < 10; ++i) {
    Result<Chunk> x = arena.allocate(1);
    ASSERT_TRUE(Ok(x));
    write_fn(*x, static_cast<std::uint32_t>(i));
    c.push_back(*x);
  }
  EXPECT_EQ(arena.stats().vma_budget, 8u);

  // Alternating seals would split the mapping into a dozen VMAs or more
  // (kernel_write: code shares its pages' mapping with everything else, so
  // alternating read-only data does it).
  const Seal alternating = arena.backend() == Backend::kernel_write
                               ? Seal::read_only
                               : Seal::execute;
  const auto states = state_map(arena);
  const auto kernel = kernel_map(arena);
  const Stats before = arena.stats();
  Batch alternate(arena);
  for (int i = 8; i >= 0; i -= 2)
    alternate.seal(c[static_cast<std::size_t>(i)], alternating);
  Result<CommitReport> r = alternate.commit();
  ASSERT_TRUE(FailsWith(r, Errc::vma_budget));
  EXPECT_EQ(r.error().chunk(), c[0].rx()) << "names the batch's first chunk";
  const Stats after = arena.stats();
  EXPECT_EQ(after.syscalls.total(), before.syscalls.total());
  EXPECT_EQ(after.protection_calls, before.protection_calls);
  EXPECT_EQ(after.vmas, before.vmas);
  EXPECT_EQ(chunk_counts(after), chunk_counts(before));
  EXPECT_EQ(state_map(arena), states);
  EXPECT_EQ(kernel_map(arena), kernel);

  // Single alternating seals are refused once they would not fit.
  std::size_t sealed = 0;
  for (int i = 0; i < 10; i += 2) {
    const std::size_t v = arena.stats().vmas;
    Result<void> s = arena.seal(c[static_cast<std::size_t>(i)], alternating);
    if (!s) {
      EXPECT_TRUE(FailsWith(s, Errc::vma_budget));
      EXPECT_EQ(arena.stats().vmas, v);
      break;
    }
    ++sealed;
    EXPECT_LE(arena.stats().vmas, 8u);
    EXPECT_TRUE(vmas_agree(arena.stats().vmas, arena));
  }
  EXPECT_GE(sealed, 1u);
  EXPECT_LT(sealed, 5u) << "the budget never bit";

  // What fits still works: sealing the gaps merges the runs again.
  Batch fill(arena);
  for (std::size_t i = 1; i < 2 * sealed; i += 2) fill.seal(c[i], alternating);
  ASSERT_TRUE(Ok(fill.commit()));
  EXPECT_LE(arena.stats().vmas, 8u);
  EXPECT_TRUE(vmas_agree(arena.stats().vmas, arena));
  Batch rest(arena);
  for (std::size_t i = 2 * sealed; i < 10; ++i) rest.seal(c[i], alternating);
  ASSERT_TRUE(Ok(rest.commit()));
  for (std::size_t i = 0; i < 10; ++i) {
    if (alternating == Seal::execute)
      EXPECT_EQ(call(c[i].rx()), i);
    else
      EXPECT_TRUE(holds_fn(c[i].rx(), static_cast<std::uint32_t>(i))) << i;
  }
  EXPECT_LE(arena.stats().vmas, 8u);
  EXPECT_TRUE(vmas_agree(arena.stats().vmas, arena));
  EXPECT_TRUE(still_works(arena));
  EXPECT_TRUE(audit_arena(arena));
}

INSTANTIATE_TEST_SUITE_P(Backends, VmaBudget, ::testing::ValuesIn(kAllBackends),
                         backend_name);

}  // namespace
}  // namespace wxa::test
