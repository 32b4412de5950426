// SPDX-License-Identifier: MIT
// Stress: N threads allocate, write, seal, call, patch and release on one
// arena (and through CodeHeaps on it), while a shadow interval set proves
// that no two live chunks or functions ever overlap.
//
// Bounded by time (about a second per test; WXA_STRESS_SECONDS overrides) and
// by a count of iterations. Runs under ThreadSanitizer in .ci/run.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "support/arena_util.hpp"
#include "support/backends.hpp"
#include "support/maps.hpp"
#include "support/native_code.hpp"
#include "wxarena/arena.hpp"
#include "wxarena/code_heap.hpp"

namespace wxa::test {
namespace {

constexpr std::size_t kMaxIterations = 200000;  // per thread
constexpr std::size_t kMaxHeld = 8;             // live chunks per thread

std::chrono::milliseconds duration() {
  const char* s = std::getenv("WXA_STRESS_SECONDS");
  const double seconds = s ? std::atof(s) : 1.0;
  return std::chrono::milliseconds(static_cast<long>(seconds * 1000));
}

// Every live chunk and function, [begin, end), across all threads. An entry
// goes in after the arena handed the memory out and comes out before it is
// given back, so the set is always a subset of what is live: an overlap in
// it is an overlap of live chunks.
class Shadow {
 public:
  void insert(const void* p, std::size_t size) {
    const auto b = reinterpret_cast<std::uintptr_t>(p), e = b + size;
    std::lock_guard lock(m_);
    auto next = live_.lower_bound(b);
    if (next != live_.end() && next->first < e) return overlap(b, e, *next);
    if (next != live_.begin()) {
      auto prev = std::prev(next);
      if (prev->second > b) return overlap(b, e, *prev);
    }
    live_.emplace(b, e);
    ++inserted_;
  }
  void erase(const void* p) {
    std::lock_guard lock(m_);
    if (live_.erase(reinterpret_cast<std::uintptr_t>(p)) != 1)
      note("erased an interval that was not there");
  }
  void note(const std::string& what) {
    std::lock_guard lock(errors_m_);
    if (errors_.size() < 10) errors_.push_back(what);
  }
  [[nodiscard]] std::vector<std::string> errors() {
    std::lock_guard lock(errors_m_);
    return errors_;
  }
  [[nodiscard]] std::size_t inserted() {
    std::lock_guard lock(m_);
    return inserted_;
  }
  [[nodiscard]] std::size_t live() {
    std::lock_guard lock(m_);
    return live_.size();
  }

 private:
  void overlap(std::uintptr_t b, std::uintptr_t e,
               const std::pair<const std::uintptr_t, std::uintptr_t>& other) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "[%#zx, %#zx) overlaps live [%#zx, %#zx)",
                  static_cast<std::size_t>(b), static_cast<std::size_t>(e),
                  static_cast<std::size_t>(other.first),
                  static_cast<std::size_t>(other.second));
    errors_m_.lock();
    if (errors_.size() < 10) errors_.push_back(buf);
    errors_m_.unlock();
  }

  std::mutex m_;
  std::map<std::uintptr_t, std::uintptr_t> live_;
  std::size_t inserted_ = 0;
  std::mutex errors_m_;
  std::vector<std::string> errors_;
};

std::string describe(const char* what, const Error& e) {
  return std::string(what) + ": " + e.to_string();
}

struct Held {
  Chunk chunk;
  std::uint32_t value;
};

// One thread's work on raw chunks: allocate, write, seal (alone or in a
// batch), call, sometimes unseal + patch + reseal, release (alone or in a
// batch); find() on its own chunks agrees throughout.
void chunk_worker(Arena& arena, Shadow& shadow, unsigned seed,
                  std::chrono::steady_clock::time_point deadline,
                  std::atomic<std::size_t>& calls) {
  std::mt19937 rng(seed);
  const std::size_t ps = arena.page_size();
  std::vector<Held> held;
  std::vector<Held> pending;  // written, to be sealed in one batch

  auto fail = [&](const std::string& what) { shadow.note(what); };
  auto run = [&](const Held& h) {
    const unsigned got = call(h.chunk.rx());
    calls.fetch_add(1, std::memory_order_relaxed);
    if (got != h.value)
      fail("chunk returned " + std::to_string(got) + ", not " +
           std::to_string(h.value));
  };
  auto release_some = [&](std::size_t n) {
    Batch b(arena);
    for (std::size_t k = 0; k < n && !held.empty(); ++k) {
      const std::size_t i = rng() % held.size();
      shadow.erase(held[i].chunk.rx());  // out of the set, then given back
      if (n == 1) {
        if (Result<void> r = arena.release(held[i].chunk); !r)
          fail(describe("release", r.error()));
      } else {
        b.release(held[i].chunk);
      }
      held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
    }
    if (!b.empty())
      if (Result<CommitReport> r = b.commit(); !r)
        fail(describe("batch release", r.error()));
  };

  for (std::size_t it = 0;
       it < kMaxIterations && std::chrono::steady_clock::now() < deadline;
       ++it) {
    const std::size_t bytes = 1 + rng() % (3 * ps);
    Result<Chunk> c = arena.allocate(bytes);
    if (!c) {
      fail(describe("allocate", c.error()));
      break;
    }
    shadow.insert(c->rx(), c->size());
    const Held h{*c, static_cast<std::uint32_t>(rng())};
    if (write_return_imm(c->rw(), h.value) == 0) fail("no writable view");

    if (rng() % 2) {
      if (Result<void> r = arena.seal(*c); !r)
        fail(describe("seal", r.error()));
      run(h);
      held.push_back(h);
    } else {
      pending.push_back(h);
      if (pending.size() >= 4) {
        Batch b(arena);
        for (const Held& p : pending) b.seal(p.chunk);
        if (Result<CommitReport> r = b.commit(); !r)
          fail(describe("batch seal", r.error()));
        for (const Held& p : pending) {
          run(p);
          held.push_back(p);
        }
        pending.clear();
      }
    }

    if (!held.empty() && rng() % 8 == 0) {  // patch one
      Held& p = held[rng() % held.size()];
      Result<Chunk> w = arena.unseal(p.chunk.rx());
      if (!w) {
        fail(describe("unseal", w.error()));
      } else {
        p.value = static_cast<std::uint32_t>(rng());
        (void)write_return_imm(w->rw(), p.value);
        if (Result<void> r = arena.seal(*w); !r)
          fail(describe("reseal", r.error()));
        run(p);
      }
    }
    if (!held.empty()) {
      const Held& p = held[rng() % held.size()];
      Result<ChunkInfo> f = arena.find(
          static_cast<const std::byte*>(p.chunk.rx()) + rng() % p.chunk.size());
      if (!f || f->chunk.rx() != p.chunk.rx() || f->state != State::executable)
        fail("find() lost a live chunk");
      run(p);
    }
    if (held.size() > kMaxHeld || rng() % 3 == 0)
      release_some(rng() % 2 ? 1 : 1 + rng() % 4);
  }
  for (const Held& p : pending) held.push_back(p);  // writable: release too
  release_some(held.size() + 1);
}

// One thread's work through its own CodeHeap on the shared arena.
void heap_worker(Arena& arena, Shadow& shadow, unsigned seed,
                 std::chrono::steady_clock::time_point deadline,
                 std::atomic<std::size_t>& calls) {
  std::mt19937 rng(seed);
  Result<CodeHeap> made = CodeHeap::create(arena);
  if (!made) return shadow.note(describe("CodeHeap::create", made.error()));
  CodeHeap& heap = *made;
  struct Fn {
    const void* rx;
    std::uint32_t value;
  };
  std::vector<Fn> live, unpublished;
  for (std::size_t it = 0;
       it < kMaxIterations && std::chrono::steady_clock::now() < deadline;
       ++it) {
    const std::size_t bytes = return_imm_size + rng() % 300;
    Result<Function> f = heap.allocate(bytes);
    if (!f) {
      shadow.note(describe("heap allocate", f.error()));
      break;
    }
    shadow.insert(f->rx, bytes);
    const auto value = static_cast<std::uint32_t>(rng());
    if (write_return_imm(f->rw, value) == 0)
      shadow.note("heap function too small for its code");
    unpublished.push_back({f->rx, value});
    if (unpublished.size() >= 1 + rng() % 16) {
      if (Result<CommitReport> r = heap.publish(); !r)
        shadow.note(describe("publish", r.error()));
      for (const Fn& u : unpublished) live.push_back(u);
      unpublished.clear();
      for (const Fn& l : live) {
        const unsigned got =
            reinterpret_cast<unsigned (*)()>(const_cast<void*>(l.rx))();
        calls.fetch_add(1, std::memory_order_relaxed);
        if (got != l.value) shadow.note("heap function returned wrong value");
      }
    }
    while (live.size() > 64 || (!live.empty() && rng() % 2)) {
      const std::size_t i = rng() % live.size();
      shadow.erase(live[i].rx);
      if (Result<void> r = heap.release(live[i].rx); !r)
        shadow.note(describe("heap release", r.error()));
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
    }
  }
  for (const Fn& f : live) shadow.erase(f.rx);
  for (const Fn& f : unpublished) shadow.erase(f.rx);
  // The heap's destructor gives every page back.
}

// Reads concurrently with the writers: find() anywhere, stats(), runs().
void reader(const Arena& arena, Shadow& shadow, std::atomic<bool>& stop,
            std::atomic<std::size_t>& reads) {
  std::mt19937 rng(99);
  const std::span<const std::byte> range = arena.range();
  while (!stop.load(std::memory_order_acquire)) {
    Result<ChunkInfo> f = arena.find(range.data() + rng() % range.size());
    if (f && f->state == State::free) shadow.note("find() returned free");
    const Stats s = arena.stats();
    if (s.vmas > s.vma_budget) shadow.note("over the VMA budget");
    std::size_t bytes = 0;
    for (const RunInfo& r : arena.runs()) bytes += r.bytes;
    if (bytes != range.size()) shadow.note("runs() do not tile the range");
    reads.fetch_add(1, std::memory_order_relaxed);
  }
}

class Stress : public ::testing::TestWithParam<std::tuple<Backend, int>> {
 protected:
  void SetUp() override { WXA_SKIP_IF_UNAVAILABLE(std::get<0>(GetParam())); }
};

TEST_P(Stress, ThreadsNeverGetOverlappingChunks) {
  // Half the threads work on raw chunks, half through their own CodeHeap.
  const auto [backend, threads] = GetParam();
  Options o;
  o.backend = backend;
  o.reserve_bytes = kSmallReserve;
  o.quarantine = 0;  // reuse as soon as possible: the most pressure
  o.open_pages = 16;
  Result<Arena> made = Arena::create(o);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;

  Shadow shadow;
  std::atomic<std::size_t> calls{0}, reads{0};
  std::atomic<bool> stop{false};
  const auto deadline = std::chrono::steady_clock::now() + duration();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    const auto seed = static_cast<unsigned>(1000 + t);
    if (t % 2)
      pool.emplace_back(heap_worker, std::ref(arena), std::ref(shadow), seed,
                        deadline, std::ref(calls));
    else
      pool.emplace_back(chunk_worker, std::ref(arena), std::ref(shadow), seed,
                        deadline, std::ref(calls));
  }
  std::thread read(reader, std::cref(arena), std::ref(shadow), std::ref(stop),
                   std::ref(reads));
  for (std::thread& t : pool) t.join();
  stop.store(true, std::memory_order_release);
  read.join();

  for (const std::string& e : shadow.errors()) ADD_FAILURE() << e;
  EXPECT_EQ(shadow.live(), 0u);
  EXPECT_GT(shadow.inserted(), static_cast<std::size_t>(threads));
  const Stats s = arena.stats();
  for (State st : {State::writable, State::executable, State::read_only})
    EXPECT_EQ(s.chunks_in(st), 0u) << to_string(st);
  EXPECT_TRUE(audit_arena(arena));
  EXPECT_TRUE(still_works(arena));
  std::printf(
      "[ stress   ] %s, %d threads: %zu chunks and functions, %zu "
      "calls, %zu concurrent reads\n",
      std::string(to_string(backend)).c_str(), threads, shadow.inserted(),
      calls.load(), reads.load());
}

std::string stress_name(
    const ::testing::TestParamInfo<std::tuple<Backend, int>>& info) {
  return std::string(to_string(std::get<0>(info.param))) + "_" +
         std::to_string(std::get<1>(info.param)) + "_threads";
}

INSTANTIATE_TEST_SUITE_P(Matrix, Stress,
                         ::testing::Combine(::testing::ValuesIn(kAllBackends),
                                            ::testing::Values(2, 8)),
                         stress_name);

}  // namespace
}  // namespace wxa::test
