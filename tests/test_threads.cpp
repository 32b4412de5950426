// SPDX-License-Identifier: MIT
// Cross-thread publication: one thread keeps replacing a function (reusing
// addresses after the quarantine) while others call whatever is published;
// every call returns the generation its pointer was published with.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <iostream>
#include <set>
#include <thread>
#include <vector>

#include "support/arena_util.hpp"
#include "support/fault_pal.hpp"
#include "support/maps.hpp"
#include "wxarena/arena.hpp"
#include "wxarena/code_heap.hpp"

namespace wxa::test {
namespace {

// What the writer publishes: the entry and the value it must return.
struct Published {
  const void* entry;
  std::uint32_t generation;
};

constexpr int kReaders = 2;  // the writer needs a share of the two cores
constexpr std::uint64_t kTargetCalls = 600000;
constexpr auto kTimeLimit = std::chrono::seconds(2);
// The least the test needs to prove anything: it runs past kTimeLimit until
// both have been seen (an emulated or loaded host is slow, not wrong), and
// gives up only after kHangLimit.
constexpr std::uint64_t kMinCalls = 10000, kMinGenerations = 100;
constexpr auto kHangLimit = std::chrono::seconds(120);

// Readers announce the Published they are about to call in a hazard slot
// (hazard pointers): the writer releases a function only when no slot
// names it, so no thread ever runs code that has been released.
struct Shared {
  std::atomic<Published*> current{nullptr};
  std::atomic<Published*> hazard[kReaders] = {};
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> calls{0}, wrong{0};
  std::atomic<std::uint64_t> first_wrong_got{0}, first_wrong_want{0};
};

void reader(Shared& sh, int slot) {
  std::uint64_t local = 0;
  while (!sh.stop.load(std::memory_order_relaxed)) {
    Published* p = sh.current.load(std::memory_order_acquire);
    if (!p) continue;
    // Announce, then check it is still current: a seq_cst store and load,
    // so the writer's scan (after its own store and fence) cannot miss us.
    sh.hazard[slot].store(p, std::memory_order_seq_cst);
    if (sh.current.load(std::memory_order_seq_cst) != p) continue;
    const unsigned got = call(p->entry);
    if (got != p->generation &&
        sh.wrong.fetch_add(1, std::memory_order_relaxed) == 0) {
      sh.first_wrong_got.store(got);
      sh.first_wrong_want.store(p->generation);
    }
    sh.hazard[slot].store(nullptr, std::memory_order_release);
    if (++local % 256 == 0) sh.calls.fetch_add(256, std::memory_order_relaxed);
  }
  sh.hazard[slot].store(nullptr, std::memory_order_release);
  sh.calls.fetch_add(local % 256, std::memory_order_relaxed);
}

using Threads = BackendTest;

TEST_P(Threads, ReadersCallWhatOneWriterKeepsReplacing) {
  Options o = options();
  o.quarantine = 2;  // addresses come back soon: the barrier must be used
  o.open_pages = 8;
  Result<Arena> made = Arena::create(o);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;

  Shared sh;
  std::vector<std::thread> readers;
  for (int i = 0; i < kReaders; ++i)
    readers.emplace_back(reader, std::ref(sh), i);

  std::vector<Published*> retired;
  std::set<const void*> seen;
  std::uint64_t generations = 0, reused = 0;
  const auto start = std::chrono::steady_clock::now();
  Error failure;
  for (std::uint32_t gen = 1;; ++gen) {
    const auto elapsed = std::chrono::steady_clock::now() - start;
    if (elapsed > kHangLimit) break;
    if (elapsed > kTimeLimit &&
        sh.calls.load(std::memory_order_relaxed) >= kMinCalls &&
        generations >= kMinGenerations)
      break;
    if (sh.calls.load(std::memory_order_relaxed) >= kTargetCalls &&
        generations >= 1000)
      break;
    // Release what no reader may be running, in one batch.
    Batch release(arena);
    std::vector<Published*> still;
    for (Published* r : retired) {
      bool held = false;
      for (auto& h : sh.hazard) held |= h.load(std::memory_order_seq_cst) == r;
      if (held) {
        still.push_back(r);
      } else {
        release.release(r->entry);
        delete r;
      }
    }
    retired.swap(still);
    if (Result<CommitReport> r = release.commit(); !r) {
      failure = r.error();
      break;
    }
    // Write, seal, publish.
    Result<Chunk> c = arena.allocate(64);
    if (!c) {
      failure = c.error();
      break;
    }
    reused += !seen.insert(c->rx()).second;
    if (write_return_imm(c->rw(), gen) == 0) break;
    if (Result<void> s = arena.seal(*c); !s) {
      failure = s.error();
      break;
    }
    Published* old = sh.current.load(std::memory_order_relaxed);
    sh.current.store(new Published{c->rx(), gen}, std::memory_order_release);
    // Orders the publication before the next hazard scan (see reader()).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (old) retired.push_back(old);
    ++generations;
  }
  sh.stop.store(true);
  for (std::thread& t : readers) t.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();

  EXPECT_EQ(failure.code(), Errc::ok) << failure.to_string();
  EXPECT_EQ(sh.wrong.load(), 0u)
      << "a call returned " << sh.first_wrong_got.load() << " for generation "
      << sh.first_wrong_want.load();
  const Stats s = arena.stats();
  std::cout << "[ figures  ] " << to_string(arena.backend()) << ": "
            << sh.calls.load() << " calls by " << kReaders << " readers over "
            << generations << " generations in " << seconds << " s; " << reused
            << " reused addresses, " << s.barriers
            << " barriers, 0 wrong results expected, " << sh.wrong.load()
            << " seen\n";
  ::testing::Test::RecordProperty("thread_barriers",
                                  std::to_string(s.barriers));
  EXPECT_GE(sh.calls.load(), kMinCalls) << "the readers hardly ran";
  EXPECT_GE(generations, kMinGenerations) << "the writer hardly ran";
  EXPECT_GT(reused, 0u) << "no address was reused: the test proves little";
  if (detail::system_pal().capabilities().barrier) {
    EXPECT_GT(s.barriers, 0u) << "code at reused addresses, but no barrier";
    EXPECT_LE(s.barriers, s.commits);
  }

  // Clean up: everything released, nothing left writable or executable.
  Batch last(arena);
  for (Published* r : retired) {
    last.release(r->entry);
    delete r;
  }
  if (Published* p = sh.current.load()) {
    EXPECT_EQ(call(p->entry), p->generation);
    last.release(p->entry);
    delete p;
  }
  EXPECT_TRUE(Ok(last.commit()));
  EXPECT_EQ(arena.stats().chunks_in(State::executable), 0u);
  EXPECT_TRUE(audit_arena(arena));
}

// Several JIT threads, one arena: each publishes, calls and frees its own
// functions through its own CodeHeap, the arena serialising what it must.
// On kernel_write the kernel's copies run outside the arena's lock, side
// by side; every call must still return what its thread wrote there.
TEST_P(Threads, WritersPublishSideBySideOnOneArena) {
  Options o = options();
  o.quarantine = 4;  // addresses come back while the other thread writes
  Result<Arena> made = Arena::create(o);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;

  constexpr int kWriters = 2;
  constexpr std::uint32_t kRounds = 300, kBatch = 48;
  std::atomic<std::uint64_t> calls{0}, wrong{0};
  std::atomic<std::uint32_t> rounds_done[kWriters] = {};
  Error failures[kWriters];
  auto writer = [&](int id) {
    Result<CodeHeap> heap = CodeHeap::create(arena);
    if (!heap) {
      failures[id] = heap.error();
      return;
    }
    std::vector<const void*> fns(kBatch);
    for (std::uint32_t round = 0; round < kRounds; ++round) {
      auto value = [&](std::uint32_t k) {
        return static_cast<std::uint32_t>(id) << 24 | round << 8 | k;
      };
      for (std::uint32_t k = 0; k < kBatch; ++k) {
        // Sizes vary, so pages fill at different moments in each thread.
        Result<Function> f = heap->allocate(64 + (k % 5) * 48);
        if (!f) {
          failures[id] = f.error();
          return;
        }
        if (write_return_imm(f->rw, value(k)) == 0) {
          failures[id] = Error(Errc::invalid_argument);
          return;
        }
        fns[k] = f->rx;
      }
      if (Result<CommitReport> r = heap->publish(); !r) {
        failures[id] = r.error();
        return;
      }
      for (std::uint32_t k = 0; k < kBatch; ++k) {
        wrong += call(fns[k]) != value(k);
        ++calls;
      }
      for (std::uint32_t k = 0; k < kBatch; ++k)
        if (Result<void> r = heap->release(fns[k]); !r) {
          failures[id] = r.error();
          return;
        }
      rounds_done[id].store(round + 1);
    }
    if (Result<CommitReport> r = heap->publish(); !r) failures[id] = r.error();
  };
  std::vector<std::thread> writers;
  for (int id = 0; id < kWriters; ++id) writers.emplace_back(writer, id);
  for (std::thread& t : writers) t.join();

  for (int id = 0; id < kWriters; ++id) {
    EXPECT_EQ(failures[id].code(), Errc::ok)
        << "writer " << id << ": " << failures[id].to_string();
    EXPECT_EQ(rounds_done[id].load(), kRounds) << "writer " << id;
  }
  EXPECT_EQ(wrong.load(), 0u) << "of " << calls.load() << " calls";
  EXPECT_EQ(calls.load(), std::uint64_t{kWriters} * kRounds * kBatch);
  // The heaps are gone: every page they held is retired, nothing is
  // writable or executable, and the kernel agrees with the arena.
  const Stats s = arena.stats();
  EXPECT_EQ(s.chunks_in(State::executable), 0u);
  EXPECT_EQ(s.chunks_in(State::writable), 0u);
  EXPECT_TRUE(vmas_agree(s.vmas, arena));
  EXPECT_TRUE(audit_arena(arena));
  EXPECT_TRUE(still_works(arena));
}

INSTANTIATE_TEST_SUITE_P(Backends, Threads, ::testing::ValuesIn(kAllBackends),
                         backend_name);

// Holds the first write into the code that `pal` sees (in whichever thread
// makes it) until open(), so that a test acts while the kernel "copies".
class HeldWrite {
 public:
  explicit HeldWrite(FaultPal& pal)
      : pal_(pal),
        entered_(entered_promise_.get_future()),
        opened_(open_.get_future().share()) {
    pal.before_each([this](PalCall call) {
      if (call == PalCall::write_shared && hold_.exchange(false)) {
        entered_promise_.set_value();
        opened_.wait();
      }
    });
  }
  ~HeldWrite() {
    open();
    pal_.before_each({});
  }
  HeldWrite(const HeldWrite&) = delete;
  HeldWrite& operator=(const HeldWrite&) = delete;

  // True once the write is being held (within 30 seconds).
  [[nodiscard]] bool reached() {
    return entered_.wait_for(std::chrono::seconds(30)) ==
           std::future_status::ready;
  }
  // Lets the held write (and any later one) go on.
  void open() {
    hold_.store(false);
    if (!opened_called_) open_.set_value();
    opened_called_ = true;
  }

 private:
  FaultPal& pal_;
  std::promise<void> entered_promise_, open_;
  std::future<void> entered_;
  std::shared_future<void> opened_;
  std::atomic<bool> hold_{true};
  bool opened_called_ = false;
};

// While `held` holds the write `writer` makes: whether another thread can
// allocate from the arena meanwhile (the lock is free) and what it got, and
// whether `release`, run in a third thread, finished before the write went
// on. Then lets the write go on and joins both threads.
struct WhileHeld {
  bool allocated = false;
  const void* other = nullptr;
  bool released_early = false;
};
WhileHeld act_while_held(Arena& arena, HeldWrite& held, std::thread& writer,
                         const std::function<void()>& release) {
  WhileHeld r;
  auto other = std::async(std::launch::async, [&] {
    Result<Chunk> d = arena.allocate(64);
    return d ? d->rx() : nullptr;
  });
  r.allocated =
      other.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  std::atomic<bool> released{false};
  std::thread releaser([&] {
    release();
    released.store(true);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  r.released_early = released.load();
  held.open();
  writer.join();
  releaser.join();
  if (r.allocated) r.other = other.get();
  return r;
}

// kernel_write lets go of the arena's lock while the kernel copies a
// commit's bytes. Held there (the platform layer waits at the copy), the
// arena must still allocate for other threads, and a commit naming a chunk
// being written must wait for that copy to end, not write over it.
TEST(KernelWriteThreads, ACommitNamingAChunkBeingWrittenWaitsForIt) {
  WXA_SKIP_IF_UNAVAILABLE(Backend::kernel_write);
  FaultPal pal;
  Options o = small_options(Backend::kernel_write);
  Result<Arena> made = detail::create_arena(o, pal);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  Result<Chunk> c = arena.allocate(64);
  ASSERT_TRUE(Ok(c));
  ASSERT_NE(write_return_imm(c->rw(), 7), 0u);

  HeldWrite held(pal);
  std::thread sealer([&] { EXPECT_TRUE(Ok(arena.seal(*c))); });
  if (!held.reached()) {
    held.open();
    sealer.join();
    FAIL() << "the seal never reached the copy";
  }
  // The lock is free meanwhile: another thread allocates; a release of
  // the chunk being sealed waits for the seal's copy.
  const WhileHeld w = act_while_held(arena, held, sealer, [&] {
    Batch b(arena);
    b.release(c->rx());
    EXPECT_TRUE(Ok(b.commit()));
  });
  EXPECT_TRUE(w.allocated) << "allocate() waited for another thread's copy";
  EXPECT_FALSE(w.released_early)
      << "a release went ahead while the chunk's seal was being written";
  const void* d = w.other;
  EXPECT_NE(d, nullptr);
  // The seal, then the release: the chunk is retired, the arena consistent.
  Result<ChunkInfo> info = arena.find(c->rx());
  EXPECT_TRUE(FailsWith(info, Errc::not_allocated));
  const Stats s = arena.stats();
  EXPECT_EQ(s.chunks_in(State::retired), 1u);
  EXPECT_EQ(s.chunks_in(State::writable), d ? 1u : 0u);
  EXPECT_TRUE(audit_arena(arena));
}

// The same for a CodeHeap's publish of a function appended to its last page
// (the quick commit of spans, written without the lock): the arena
// allocates meanwhile, and a release of that page (behind the heap's back)
// waits for the copy, then turns all of it into traps, appended code too.
TEST(KernelWriteThreads, AReleaseWaitsForAnAppendedPublishAndTrapsItToo) {
  WXA_SKIP_IF_UNAVAILABLE(Backend::kernel_write);
  FaultPal pal;
  Options o = small_options(Backend::kernel_write);
  o.quarantine = 0;
  o.open_pages = 1;  // one page opened, and recycled, at a time
  o.lanes = 1;
  Result<Arena> made = detail::create_arena(o, pal);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  // The heap's page is one that held code before (its bytes are traps, not
  // a hole): its seal copies in only the bytes used, and what the backend
  // traps at the page's release is what it has recorded as written since.
  Result<Chunk> x = arena.allocate(64);
  ASSERT_TRUE(Ok(x));
  write_fn(*x, 89);
  ASSERT_TRUE(Ok(arena.seal(*x)));
  ASSERT_TRUE(Ok(arena.release(x->rx())));
  Result<CodeHeap> heap = CodeHeap::create(arena);
  ASSERT_TRUE(Ok(heap));
  Result<Function> a = heap->allocate(64);
  ASSERT_TRUE(Ok(a));
  ASSERT_EQ(a->rx, x->rx()) << "the heap did not get the recycled page";
  ASSERT_NE(write_return_imm(a->rw, 90), 0u);
  ASSERT_TRUE(Ok(heap->publish()));
  Result<Function> b = heap->allocate(64);
  ASSERT_TRUE(Ok(b));
  ASSERT_NE(write_return_imm(b->rw, 91), 0u);

  HeldWrite held(pal);
  std::thread publisher([&] { EXPECT_TRUE(Ok(heap->publish())); });
  if (!held.reached()) {
    held.open();
    publisher.join();
    FAIL() << "the publish never reached the copy";
  }
  const WhileHeld w = act_while_held(arena, held, publisher, [&] {
    EXPECT_TRUE(Ok(arena.release(a->rx)));  // the heap's page
  });
  EXPECT_TRUE(w.allocated) << "allocate() waited for another thread's copy";
  EXPECT_FALSE(w.released_early)
      << "a release went ahead while the page's appended code was written";
  EXPECT_NE(w.other, nullptr);
  EXPECT_FALSE(holds_fn(a->rx, 90));
  EXPECT_FALSE(holds_fn(b->rx, 91)) << "appended code outlived its page";
  EXPECT_TRUE(FailsWith(arena.find(b->rx), Errc::not_allocated));
  EXPECT_TRUE(audit_arena(arena));
}

}  // namespace
}  // namespace wxa::test
