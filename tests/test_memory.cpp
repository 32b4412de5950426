// SPDX-License-Identifier: MIT
// kernel_write's memory: trim() after a mass release gives the code and its
// staging back while stale calls still fault, the staging pool is reused
// (not grown) by threads publishing on one arena, and every staging page
// lies within 32-bit reach of every code page on default options.
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include <wxarena/code_heap.hpp>

#include "support/arena_util.hpp"
#include "support/backends.hpp"
#include "support/memory_fault.hpp"
#include "support/resident.hpp"

namespace wxa::test {
namespace {

class KernelWriteMemory : public ::testing::Test {
 protected:
  void SetUp() override { WXA_SKIP_IF_UNAVAILABLE(Backend::kernel_write); }
  // Default options, as a user gets them, on kernel_write.
  static Options options() {
    Options o;
    o.backend = Backend::kernel_write;
    return o;
  }
};

// Memory held by the process's code memfds (written, mapped or not), each
// file once.
std::size_t code_memfd_bytes() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (!dir) return 0;
  std::set<std::pair<dev_t, ino_t>> seen;
  std::size_t total = 0;
  while (const dirent* e = ::readdir(dir)) {
    char link[300], target[256];
    std::snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
    const ssize_t n = ::readlink(link, target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    if (std::strncmp(target, "/memfd:wxarena-code", 19) != 0) continue;
    struct stat st {};
    if (::fstat(std::atoi(e->d_name), &st) != 0) continue;
    if (seen.insert({st.st_dev, st.st_ino}).second)
      total += static_cast<std::size_t>(st.st_blocks) * 512;
  }
  (void)::closedir(dir);
  return total;
}

using KernelWriteMemoryDeathTest = KernelWriteMemory;

// A JIT that compiles a working set and throws it all away: after the
// release, a publish() and trim(), the code's memory and its staging are
// back (the heap keeps only the pages it took ahead of need), nothing is
// left in quarantine, and a stale call into any released function faults.
TEST_F(KernelWriteMemoryDeathTest, TrimAfterMassReleaseGivesMemoryBack) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  Result<CodeHeap> heap = CodeHeap::create(arena);
  ASSERT_TRUE(Ok(heap));
  const std::size_t ps = arena.page_size();
  constexpr std::size_t kFunctions = 20000, kBatch = 256, kSize = 256;
  std::vector<const void*> fns;
  fns.reserve(kFunctions);
  for (std::size_t i = 0; i < kFunctions; ++i) {
    Result<Function> f = heap->allocate(kSize);
    ASSERT_TRUE(Ok(f));
    ASSERT_NE(write_return_imm(f->rw, static_cast<std::uint32_t>(i)), 0u);
    fns.push_back(f->rx);
    if ((i + 1) % kBatch == 0) {
      ASSERT_TRUE(Ok(heap->publish()));
    }
  }
  ASSERT_TRUE(Ok(heap->publish()));
  ASSERT_EQ(call(fns[0]), 0u);
  ASSERT_EQ(call(fns[kFunctions - 1]), kFunctions - 1);
  const std::size_t code = kFunctions * kSize;
  EXPECT_GE(code_memfd_bytes(), code);

  for (const void* f : fns) ASSERT_TRUE(Ok(heap->release(f)));
  ASSERT_TRUE(Ok(heap->publish()));
  ASSERT_TRUE(Ok(arena.trim()));

  const Stats s = arena.stats();
  const std::size_t held = heap->stats().reserve_pages;
  EXPECT_EQ(s.chunks_in(State::retired), 0u) << "quarantine left after trim";
  EXPECT_EQ(s.bytes_in(State::retired), 0u);
  EXPECT_EQ(s.committed_bytes, held * ps);
  EXPECT_LE(code_memfd_bytes(), held * ps) << "code memory not given back";
  EXPECT_LE(resident(arena.range().data(), arena.range().size()), held);
  const std::span<std::byte> staging = arena.rw_range();
  EXPECT_LE(resident(staging.data(), staging.size()), held);
  EXPECT_EQ(s.staging_bytes, held * ps);
  EXPECT_EQ(heap->stats().staging_bytes, held * ps);
  // (The stats' figure is a bound: up to the last page held, at most the
  // 16 pages a heap takes ahead of need.)
  EXPECT_LE(s.staging_resident_bytes, 16 * ps);
  std::printf(
      "[ figures  ] kernel_write: %zu functions released and trimmed: %zu "
      "code memfd bytes, %zu staging bytes resident (the heap holds %zu "
      "pages)\n",
      kFunctions, code_memfd_bytes(),
      resident(staging.data(), staging.size()) * ps, held);

  // Inaccessible now: a stale call faults at the function's address.
  for (const void* f : {fns[0], fns[kFunctions / 2], fns[kFunctions - 1]})
    EXPECT_EXIT(
        {
          expect_fault_in(f, kSize);
          (void)call(f);
        },
        ::testing::ExitedWithCode(kFaultExitCode), kFaultInChunk);
  // The arena goes on: new code, then the old addresses still fault
  // wherever they were not reused.
  Result<Function> g = heap->allocate(kSize);
  ASSERT_TRUE(Ok(g));
  ASSERT_NE(write_return_imm(g->rw, 4242), 0u);
  ASSERT_TRUE(Ok(heap->publish()));
  EXPECT_EQ(call(g->rx), 4242u);
  EXPECT_TRUE(audit_arena(arena));
}

// Two threads, each with its own heap on one shared arena, publish and
// release round after round: the staging written is the same warm pages
// over and over (bounded by what one round of each thread holds), not a
// page per publish, and every function returns its own value.
TEST_F(KernelWriteMemory, StagingIsReusedUnderThreads) {
  Options o = options();
  o.lanes = 2;
  Result<Arena> made = Arena::create(o);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  const std::size_t ps = arena.page_size();
  constexpr std::size_t kRounds = 300, kBatch = 64, kSize = 256;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      Result<CodeHeap> heap = CodeHeap::create(arena);
      if (!heap) {
        ++failures;
        return;
      }
      std::vector<const void*> fns(kBatch);
      for (std::size_t r = 0; r < kRounds; ++r) {
        const auto first =
            static_cast<std::uint32_t>((t + 1) * 1000000 + r * kBatch);
        for (std::size_t i = 0; i < kBatch; ++i) {
          Result<Function> f = heap->allocate(kSize);
          if (!f || write_return_imm(
                        f->rw, first + static_cast<std::uint32_t>(i)) == 0) {
            ++failures;
            return;
          }
          fns[i] = f->rx;
        }
        if (!heap->publish()) {
          ++failures;
          return;
        }
        for (std::size_t i = 0; i < kBatch; ++i)
          if (call(fns[i]) != first + i) ++failures;
        for (const void* f : fns)
          if (!heap->release(f)) ++failures;
      }
      if (!heap->publish()) ++failures;
    });
  for (std::thread& th : threads) th.join();
  ASSERT_EQ(failures.load(), 0);

  // 600 publishes of 4 pages each: 2,400 pages staged over time. Resident:
  // per thread a round (4 pages) and its heap's reserve (16), with the
  // warm pages each part of the pool keeps (64) as the bound.
  const std::span<std::byte> staging = arena.rw_range();
  const std::size_t touched = resident(staging.data(), staging.size());
  const Stats s = arena.stats();
  std::printf(
      "[ figures  ] kernel_write, 2 threads: %zu publishes touched %zu "
      "staging page(s); %zu bytes resident by the stats\n",
      2 * kRounds, touched, s.staging_resident_bytes);
  EXPECT_GE(touched, 1u);
  EXPECT_LE(touched, 2 * (64u + 16u + 16u));
  EXPECT_LE(s.staging_resident_bytes / ps, 2 * (64u + 16u + 16u));
  EXPECT_EQ(s.staging_bytes, 0u) << "the heaps are gone: nothing is staged";
  EXPECT_TRUE(audit_arena(arena));
}

// A write through a chunk's old writable pointer after its seal lands in
// staging that is free again: the next chunk staged there must not carry
// those bytes into its code. The pool hands a new chunk staging of traps
// only (it checks the pages a seal cleaned, and fills the others); an
// unseal copies the chunk's code over all of its staging.
TEST_F(KernelWriteMemory, StaleWritesIntoFreeStagingAreWipedForTheNextChunk) {
  Options o = options();
  o.reserve_bytes = kSmallReserve;
  Result<Arena> made = Arena::create(o);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  Result<Chunk> a = arena.allocate(64);
  ASSERT_TRUE(Ok(a));
  write_fn(*a, 0x61);
  ASSERT_TRUE(Ok(arena.seal(*a)));
  const std::span<std::byte> stale = a->rw();
  std::memset(stale.data() + 100, 0x90, 200);  // after the seal: a bug
  Result<Chunk> b = arena.allocate(64);
  ASSERT_TRUE(Ok(b));
  ASSERT_EQ(b->rw().data(), stale.data()) << "staging is reused lowest first";
  for (std::size_t i = 0; i < b->rw().size(); ++i)
    ASSERT_EQ(b->rw()[i],
              trap_byte_at(reinterpret_cast<std::uintptr_t>(&b->rw()[i])))
        << "byte " << i << " of the new chunk's staging";
  write_fn(*b, 0x62);
  ASSERT_TRUE(Ok(arena.seal(*b)));
  EXPECT_EQ(call(b->rx()), 0x62u);
  EXPECT_EQ(call(a->rx()), 0x61u);

  std::memset(stale.data(), 0x90, stale.size());  // b's staging now, freed
  Result<Chunk> u = arena.unseal(a->rx());
  ASSERT_TRUE(Ok(u));
  ASSERT_EQ(u->rw().data(), stale.data()) << "staging is reused lowest first";
  const auto* code = static_cast<const std::byte*>(u->rx());
  for (std::size_t i = 0; i < u->rw().size(); ++i)
    ASSERT_EQ(u->rw()[i], code[i])
        << "byte " << i << " of the unsealed staging";
  ASSERT_TRUE(Ok(arena.seal(*u)));
  EXPECT_EQ(call(u->rx()), 0x61u);
  EXPECT_EQ(call(b->rx()), 0x62u);
}

// The farthest pair of a staging page and a code page: what a 32-bit
// displacement from code to read-write data placed in staging (LLVM's
// JITLink adapter does that) must span.
std::uintptr_t farthest(const Arena& arena) {
  const auto code = reinterpret_cast<std::uintptr_t>(arena.range().data());
  const std::uintptr_t code_end = code + arena.range().size();
  const auto st = reinterpret_cast<std::uintptr_t>(arena.rw_range().data());
  const std::uintptr_t st_end = st + arena.rw_range().size();
  return std::max(st_end > code ? st_end - code : code - st_end,
                  code_end > st ? code_end - st : st - code_end);
}

TEST_F(KernelWriteMemory, StagingIsWithinReachOfTheCodeOnDefaultOptions) {
  constexpr std::uintptr_t kReach = std::uintptr_t{1} << 31;
  // The default reservation, and the largest whose code and staging fit in
  // 32-bit reach together.
  for (const std::size_t reserve :
       {Options{}.reserve_bytes, std::size_t{1600} << 20}) {
    Options o = options();
    o.reserve_bytes = reserve;
    Result<Arena> made = Arena::create(o);
    ASSERT_TRUE(Ok(made)) << reserve;
    const Arena& arena = *made;
    EXPECT_LT(farthest(arena), kReach) << "reservation of " << reserve;
    // Staging is bounded: the address space is at most 1.3 times the
    // reservation (it was 3 times).
    EXPECT_LE(arena.rw_range().size() * 10, arena.range().size() * 3)
        << "reservation of " << reserve;
    // Right next to it: nothing else between the two reservations but
    // their guard pages.
    const auto code = reinterpret_cast<std::uintptr_t>(arena.range().data());
    const auto st = reinterpret_cast<std::uintptr_t>(arena.rw_range().data());
    const std::uintptr_t gap = st > code
                                   ? st - (code + arena.range().size())
                                   : code - (st + arena.rw_range().size());
    EXPECT_LE(gap, 4 * arena.page_size()) << "reservation of " << reserve;
    std::printf(
        "[ figures  ] kernel_write, %zu MiB reserved: staging %zu MiB, "
        "%zu bytes from the code, farthest pair %.2f GiB apart\n",
        reserve >> 20, arena.rw_range().size() >> 20,
        static_cast<std::size_t>(gap),
        static_cast<double>(farthest(arena)) / (1u << 30));
  }
}

}  // namespace
}  // namespace wxa::test
