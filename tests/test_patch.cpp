// SPDX-License-Identifier: MIT
// Arena::patch and Batch::patch: live code rewritten in place, on every
// backend; bad input refused with nothing changed; every failure position
// rolled back; on kernel_write, other code on the page keeps running.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "support/arena_util.hpp"
#include "support/backends.hpp"
#include "support/fault_pal.hpp"
#include "support/native_code.hpp"
#include "wxarena/arena.hpp"

namespace wxa::test {
namespace {

constexpr std::size_t kSecond = 64;  // offset of a second function

// `unsigned f()` returning value, as bytes to patch in.
std::vector<std::byte> fn_bytes(std::uint32_t value) {
  std::vector<std::byte> b(return_imm_size);
  EXPECT_EQ(write_return_imm(b, value), return_imm_size);
  return b;
}

const void* at(const Chunk& c, std::size_t offset) {
  return static_cast<const std::byte*>(c.rx()) + offset;
}

// A sealed one-page chunk with two functions: 1 at offset 0, 2 at kSecond.
Chunk two_functions(Arena& arena) {
  Result<Chunk> c = arena.allocate(arena.page_size());
  EXPECT_TRUE(Ok(c));
  if (!c) return {};
  EXPECT_NE(write_return_imm(c->rw(), 1), 0u);
  EXPECT_NE(write_return_imm(c->rw().subspan(kSecond), 2), 0u);
  EXPECT_TRUE(Ok(arena.seal(*c)));
  EXPECT_EQ(call(c->rx()), 1u);
  EXPECT_EQ(call(at(*c, kSecond)), 2u);
  return *c;
}

using Patch = BackendTest;

TEST_P(Patch, RewritesLiveCodeAndLeavesTheRestAlone) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  const Chunk c = two_functions(arena);
  ASSERT_TRUE(c);
  const Stats s0 = arena.stats();
  ASSERT_TRUE(Ok(arena.patch(at(c, kSecond), fn_bytes(0x77))));
  const Stats s1 = arena.stats();
  EXPECT_EQ(call(c.rx()), 1u);
  EXPECT_EQ(call(at(c, kSecond)), 0x77u);
  Result<ChunkInfo> info = arena.find(c.rx());
  ASSERT_TRUE(Ok(info));
  EXPECT_EQ(info->state, State::executable);
  EXPECT_EQ(s1.chunks_in(State::executable), s0.chunks_in(State::executable));
  const bool barrier = detail::system_pal().capabilities().barrier;
  EXPECT_EQ(s1.barriers - s0.barriers, barrier ? 1u : 0u)
      << "patched code needs the cross-thread barrier";
  if (arena.backend() == Backend::kernel_write) {
    // One copy, no protection change, nothing mapped or unmapped.
    EXPECT_EQ(s1.protection_calls, s0.protection_calls);
    EXPECT_EQ(s1.syscalls.mprotect, s0.syscalls.mprotect);
    EXPECT_EQ(s1.syscalls.mmap, s0.syscalls.mmap);
    EXPECT_EQ(s1.syscalls.write - s0.syscalls.write, 1u);
  } else {
    // Unseal and seal again: the page stopped being executable meanwhile.
    EXPECT_GE(s1.protection_calls - s0.protection_calls, 2u);
  }
  // Patching the whole chunk works too; read-only data is not code and is
  // refused (unseal it to change it), its bytes unchanged.
  std::vector<std::byte> page(c.size());
  ASSERT_NE(write_return_imm(page, 0x99, page.size()), 0u);
  ASSERT_TRUE(Ok(arena.patch(c.rx(), page)));
  EXPECT_EQ(call(c.rx()), 0x99u);
  Result<Chunk> d = arena.allocate(64);
  ASSERT_TRUE(Ok(d));
  std::memset(d->rw().data(), 0x11, d->size());
  ASSERT_TRUE(Ok(arena.seal(*d, Seal::read_only)));
  const std::byte data[3] = {std::byte{1}, std::byte{2}, std::byte{3}};
  EXPECT_TRUE(
      FailsWith(arena.patch(at(*d, 10), data), Errc::illegal_transition));
  EXPECT_EQ(static_cast<const std::byte*>(d->rx())[10], std::byte{0x11});
  EXPECT_EQ(arena.find(d->rx())->state, State::read_only);
  EXPECT_TRUE(audit_arena(arena));
}

TEST_P(Patch, BadInputIsRefusedAndChangesNothing) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  const Chunk c = two_functions(arena);
  ASSERT_TRUE(c);
  const std::vector<std::byte> code = fn_bytes(0x55);
  const Stats before = arena.stats();

  EXPECT_TRUE(FailsWith(arena.patch(nullptr, code), Errc::null_pointer));
  static const char elsewhere[16] = {};
  EXPECT_TRUE(FailsWith(arena.patch(elsewhere, code), Errc::foreign_pointer));
  EXPECT_TRUE(FailsWith(arena.patch(c.rx(), {}), Errc::zero_size));
  // Bytes that would run past the chunk's end.
  EXPECT_TRUE(FailsWith(arena.patch(at(c, c.size() - code.size() + 1), code),
                        Errc::out_of_bounds));
  // Only sealed chunks may be patched.
  Result<Chunk> w = arena.allocate(64);
  ASSERT_TRUE(Ok(w));
  EXPECT_TRUE(FailsWith(arena.patch(w->rx(), code), Errc::illegal_transition));
  Result<Chunk> gone = arena.allocate(64);
  ASSERT_TRUE(Ok(gone));
  ASSERT_TRUE(Ok(arena.release(*gone)));
  EXPECT_TRUE(
      FailsWith(arena.patch(gone->rx(), code), Errc::illegal_transition));
  // Free pages name no chunk.
  const void* free_page = nullptr;
  for (const RunInfo& r : arena.runs())
    if (r.state == State::free) free_page = r.rx;
  ASSERT_NE(free_page, nullptr);
  EXPECT_TRUE(FailsWith(arena.patch(free_page, code), Errc::not_allocated));

  EXPECT_EQ(call(c.rx()), 1u);
  EXPECT_EQ(call(at(c, kSecond)), 2u);
  const Stats after = arena.stats();
  EXPECT_EQ(after.commits, before.commits + 1) << "only the release commits";
  EXPECT_EQ(arena.find(c.rx())->state, State::executable);
  EXPECT_TRUE(audit_arena(arena));
}

// A patch at the start of a chunk, in one batch with the seal of the chunk
// right after it: the code after the patched bytes stays.
TEST_P(Patch, PatchBeforeAnAdjacentSealKeepsTheRestOfTheChunk) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  const Chunk a = two_functions(arena);
  Result<Chunk> fresh = arena.allocate(64);
  ASSERT_TRUE(Ok(fresh));
  ASSERT_EQ(static_cast<const std::byte*>(fresh->rx()),
            static_cast<const std::byte*>(a.rx()) + a.size())
      << "the chunks are not adjacent";
  ASSERT_NE(write_return_imm(fresh->rw(), 3), 0u);
  Batch batch(arena);
  batch.patch(a.rx(), fn_bytes(0xA));
  batch.seal(*fresh);
  ASSERT_TRUE(Ok(batch.commit()));
  EXPECT_EQ(call(a.rx()), 0xAu);
  EXPECT_TRUE(holds_fn(at(a, kSecond), 2)) << "the code after the patch";
  EXPECT_EQ(call(fresh->rx()), 3u);
}

TEST_P(Patch, BatchPatchesAndSealsTogether) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  const Chunk a = two_functions(arena);
  const Chunk b = two_functions(arena);
  Result<Chunk> fresh = arena.allocate(64);
  ASSERT_TRUE(Ok(fresh));
  ASSERT_NE(write_return_imm(fresh->rw(), 3), 0u);

  Batch batch(arena);
  {
    // The bytes are copied when queued: the caller's buffer may go.
    std::vector<std::byte> tmp = fn_bytes(0xA);
    batch.patch(a.rx(), tmp);
    tmp = fn_bytes(0xB);
    batch.patch(at(b, kSecond), tmp);
  }
  batch.seal(*fresh);
  Result<CommitReport> r = batch.commit();
  ASSERT_TRUE(Ok(r));
  EXPECT_EQ(r->chunks, 3u);
  EXPECT_EQ(call(a.rx()), 0xAu);
  EXPECT_EQ(call(at(a, kSecond)), 2u);
  EXPECT_EQ(call(b.rx()), 1u);
  EXPECT_EQ(call(at(b, kSecond)), 0xBu);
  EXPECT_EQ(call(fresh->rx()), 3u);
  EXPECT_TRUE(batch.empty());

  // A chunk patched and released in one batch is named twice: refused,
  // nothing changes.
  Batch twice(arena);
  twice.patch(a.rx(), fn_bytes(0xC));
  twice.release(a.rx());
  EXPECT_TRUE(FailsWith(twice.commit(), Errc::duplicate_in_batch));
  EXPECT_EQ(call(a.rx()), 0xAu);
  EXPECT_EQ(arena.find(a.rx())->state, State::executable);
  EXPECT_TRUE(audit_arena(arena));
}

TEST_P(Patch, FailureAtEveryCallLeavesTheCodeAsItWas) {
  // Calibration: the calls one patch makes here.
  std::size_t calls = 0;
  {
    FaultPal pal;
    Result<Arena> made = detail::create_arena(options(), pal);
    ASSERT_TRUE(Ok(made));
    const Chunk c = two_functions(*made);
    pal.count_only(kAllSyscalls);
    ASSERT_TRUE(Ok(made->patch(at(c, kSecond), fn_bytes(0x77))));
    calls = pal.failable_calls();
  }
  ASSERT_GE(calls, 1u);
  for (std::size_t k = 1; k <= calls; ++k) {
    SCOPED_TRACE(::testing::Message() << "call " << k << " of " << calls);
    FaultPal pal;
    Result<Arena> made = detail::create_arena(options(), pal);
    ASSERT_TRUE(Ok(made));
    Arena& arena = *made;
    const Chunk c = two_functions(arena);
    const auto states = state_map(arena);
    pal.arm(k, ENOMEM, kAllSyscalls);
    Result<void> r = arena.patch(at(c, kSecond), fn_bytes(0x77));
    pal.disarm();
    ASSERT_TRUE(pal.fired());
    EXPECT_TRUE(FailsWith(r, Errc::out_of_memory));
    EXPECT_EQ(state_map(arena), states);
    EXPECT_EQ(call(c.rx()), 1u);
    EXPECT_EQ(call(at(c, kSecond)), 2u) << "the old code is back";
    EXPECT_TRUE(audit_arena(arena));
    // And the same patch works afterwards.
    ASSERT_TRUE(Ok(arena.patch(at(c, kSecond), fn_bytes(0x77))));
    EXPECT_EQ(call(at(c, kSecond)), 0x77u);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, Patch, ::testing::ValuesIn(kAllBackends),
                         backend_name);

// kernel_write patches without making anything non-executable: a thread
// calling another function on the same page never stops or faults while the
// first is rewritten over and over.
TEST(PatchKernelWrite, NeighboursOnThePageKeepRunning) {
  WXA_SKIP_IF_UNAVAILABLE(Backend::kernel_write);
  Options o;
  o.backend = Backend::kernel_write;
  o.reserve_bytes = kSmallReserve;
  Result<Arena> made = Arena::create(o);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  const Chunk c = two_functions(arena);
  ASSERT_TRUE(c);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> calls{0}, wrong{0};
  std::thread reader([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      if (call(at(c, kSecond)) != 2u) wrong.fetch_add(1);
      calls.fetch_add(1, std::memory_order_relaxed);
    }
  });
  const Stats s0 = arena.stats();
  for (std::uint32_t i = 0; i < 500; ++i) {
    ASSERT_TRUE(Ok(arena.patch(c.rx(), fn_bytes(1000 + i))));
    ASSERT_EQ(call(c.rx()), 1000 + i);
  }
  // The reader is seen running after the patches, too.
  const std::uint64_t seen = calls.load();
  while (calls.load() == seen) std::this_thread::yield();
  stop = true;
  reader.join();
  const Stats s1 = arena.stats();
  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_EQ(s1.protection_calls, s0.protection_calls);
  EXPECT_EQ(s1.syscalls.mprotect + s1.syscalls.mmap + s1.syscalls.munmap,
            s0.syscalls.mprotect + s0.syscalls.mmap + s0.syscalls.munmap);
  EXPECT_EQ(s1.syscalls.write - s0.syscalls.write, 500u);
  std::printf(
      "[ figures  ] kernel_write: 500 patches while a neighbour ran "
      "%llu times on the same page, 0 protection changes\n",
      static_cast<unsigned long long>(calls.load()));
  EXPECT_TRUE(audit_arena(arena));
}

}  // namespace
}  // namespace wxa::test
