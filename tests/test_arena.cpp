// SPDX-License-Identifier: MIT
// The Arena one chunk at a time: real code, bad input, find(), placement near
// an anchor, quarantine, exhaustion, and the exact system-call cost of each
// single operation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <memory>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

#include "support/arena_util.hpp"
#include "support/maps.hpp"
#include "support/native_code.hpp"
#include "wxarena/arena.hpp"

namespace wxa::test {
namespace {

using ArenaCode = BackendTest;

// The bytes just below and just above everything the arena reserved (in
// dual_map the writable view may sit right next to the executable one; on
// kernel_write the staging, twice the code's size, on either side of it).
std::pair<const std::byte*, const std::byte*> outside(const Arena& arena) {
  const std::byte* rx = arena.range().data();
  const std::byte* rw = arena.rw_range().data();
  return {
      std::min(rx, static_cast<const std::byte*>(rw)) - 1,
      std::max(rx + arena.range().size(),
               static_cast<const std::byte*>(rw) + arena.rw_range().size())};
}

// Thousands of chunks, each with its own function, sealed both in batches
// and one by one, all called: each returns its own value.
TEST_P(ArenaCode, ThousandsOfFunctionsEachReturnTheirOwnValue) {
  // About 5,150 pages are needed: 20 MiB on 4 KiB pages, 320 MiB on 64 KiB.
  Result<Arena> made =
      Arena::create(options(std::max(kSmallReserve, 6000 * os_page_size())));
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  const std::size_t ps = arena.page_size();
  constexpr std::size_t kFunctions = 4000;
  auto value_of = [](std::size_t i) {
    return static_cast<std::uint32_t>(0x9E3779B9u * (i + 1));
  };

  // Mostly one-page chunks; every seventh spans three pages, with its
  // function in the last one (reached through Chunk::entry(offset)).
  struct Fn {
    Chunk chunk;
    std::size_t offset;
  };
  std::vector<Fn> fns;
  fns.reserve(kFunctions);
  for (std::size_t i = 0; i < kFunctions; ++i) {
    const bool big = i % 7 == 0;
    Result<Chunk> c = arena.allocate(big ? 2 * ps + 100 : 200);
    ASSERT_TRUE(Ok(c)) << "chunk " << i;
    ASSERT_EQ(c->size(), big ? 3 * ps : ps);
    const std::size_t offset = big ? 2 * ps + 16 : 0;
    ASSERT_NE(write_return_imm(c->rw().subspan(offset), value_of(i), 64), 0u);
    fns.push_back({*c, offset});
  }
  EXPECT_EQ(arena.stats().chunks_in(State::writable), kFunctions);

  // First half in batches of 250, second half one by one.
  for (std::size_t i = 0; i < kFunctions / 2; i += 250) {
    Batch batch(arena);
    for (std::size_t k = i; k < i + 250; ++k) batch.seal(fns[k].chunk);
    Result<CommitReport> r = batch.commit();
    ASSERT_TRUE(Ok(r));
    EXPECT_EQ(r->chunks, 250u);
  }
  for (std::size_t i = kFunctions / 2; i < kFunctions; ++i)
    ASSERT_TRUE(Ok(arena.seal(fns[i].chunk))) << "chunk " << i;
  EXPECT_EQ(arena.stats().chunks_in(State::executable), kFunctions);

  std::size_t wrong = 0;
  for (std::size_t i = 0; i < kFunctions; ++i) {
    const unsigned got = fns[i].chunk.entry<unsigned()>(fns[i].offset)();
    if (got != value_of(i) && ++wrong < 10)
      ADD_FAILURE() << "function " << i << " returned " << got;
  }
  EXPECT_EQ(wrong, 0u);
  EXPECT_TRUE(audit_arena(arena));

  // Patch every tenth: unseal, rewrite, reseal in one batch, call again.
  std::vector<Chunk> writable;
  for (std::size_t i = 0; i < kFunctions; i += 10) {
    Result<Chunk> w = arena.unseal(fns[i].chunk.rx());
    ASSERT_TRUE(Ok(w));
    ASSERT_NE(write_return_imm(w->rw().subspan(fns[i].offset), ~value_of(i)),
              0u);
    writable.push_back(*w);
  }
  Batch reseal(arena);
  for (const Chunk& c : writable) reseal.seal(c);
  ASSERT_TRUE(Ok(reseal.commit()));
  for (std::size_t i = 0; i < kFunctions; ++i) {
    const std::uint32_t want = i % 10 == 0 ? ~value_of(i) : value_of(i);
    ASSERT_EQ(fns[i].chunk.entry<unsigned()>(fns[i].offset)(), want) << i;
  }

  Batch release(arena);
  for (const Fn& f : fns) release.release(f.chunk);
  ASSERT_TRUE(Ok(release.commit()));
  const Stats s = arena.stats();
  EXPECT_EQ(s.chunks_in(State::retired), kFunctions);
  EXPECT_EQ(s.chunks_in(State::executable), 0u);
  EXPECT_TRUE(audit_arena(arena));
}

INSTANTIATE_TEST_SUITE_P(Backends, ArenaCode, ::testing::ValuesIn(kAllBackends),
                         backend_name);

// --- Bad input -------------------------------------------------------------

using ArenaBadInput = BackendTest;

// Every refusal is the specific error, names the address where it is about
// one, and changes nothing: tracked states, kernel maps, chunk counts and
// system-call counts are identical before and after.
TEST_P(ArenaBadInput, RefusedWithTheExactErrorAndNothingChanges) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  const std::size_t ps = arena.page_size();

  Result<Chunk> exec = arena.allocate(ps);
  ASSERT_TRUE(Ok(exec));
  write_fn(*exec, 0xE4EC);
  ASSERT_TRUE(Ok(arena.seal(*exec)));
  Result<Chunk> ro = arena.allocate(ps);
  ASSERT_TRUE(Ok(ro));
  ASSERT_TRUE(Ok(arena.seal(*ro, Seal::read_only)));
  Result<Chunk> wr = arena.allocate(3 * ps);
  ASSERT_TRUE(Ok(wr));
  Result<Chunk> gone = arena.allocate(ps);
  ASSERT_TRUE(Ok(gone));
  ASSERT_TRUE(Ok(arena.release(*gone)));

  const auto states = state_map(arena);
  const auto kernel = kernel_map(arena);
  const Stats before = arena.stats();
  auto unchanged = [&]() -> ::testing::AssertionResult {
    const Stats now = arena.stats();
    if (chunk_counts(now) != chunk_counts(before))
      return ::testing::AssertionFailure() << "chunk counts changed";
    if (now.syscalls.total() != before.syscalls.total())
      return ::testing::AssertionFailure() << "a system call was made";
    if (now.allocations != before.allocations || now.commits != before.commits)
      return ::testing::AssertionFailure() << "an operation was counted";
    if (state_map(arena) != states)
      return ::testing::AssertionFailure() << "tracked states changed";
    if (kernel_map(arena) != kernel)
      return ::testing::AssertionFailure() << "kernel maps changed";
    return ::testing::AssertionSuccess();
  };
  // Each of seal / seal read-only / unseal / release on `p` fails with `code`.
  auto all_refuse = [&](const void* p, Errc code) {
    SCOPED_TRACE(::testing::Message() << "address " << p);
    EXPECT_TRUE(FailsWith(arena.seal(p), code));
    EXPECT_TRUE(FailsWith(arena.seal(p, Seal::read_only), code));
    EXPECT_TRUE(FailsWith(arena.unseal(p), code));
    EXPECT_TRUE(FailsWith(arena.release(p), code));
    Batch b(arena);
    b.seal(exec->rx() == p ? ro->rx() : wr->rx());  // a valid one first
    b.release(p);
    Result<CommitReport> r = b.commit();
    EXPECT_TRUE(FailsWith(r, code)) << "in a batch";
    if (!r && p) {
      EXPECT_EQ(r.error().chunk(), p) << "the error names the address";
    }
    EXPECT_EQ(b.size(), 2u) << "a failed batch keeps its transitions";
    EXPECT_TRUE(unchanged());
  };

  // Null.
  all_refuse(nullptr, Errc::null_pointer);
  EXPECT_TRUE(FailsWith(arena.find(nullptr), Errc::null_pointer));

  // Foreign: the stack, the heap, just outside the reservation.
  int on_stack = 0;
  const auto on_heap = std::make_unique<char[]>(64);
  const auto [lo, hi] = outside(arena);
  for (const void* p :
       {static_cast<const void*>(&on_stack),
        static_cast<const void*>(on_heap.get()), static_cast<const void*>(hi),
        static_cast<const void*>(lo)}) {
    all_refuse(p, Errc::foreign_pointer);
    EXPECT_TRUE(FailsWith(arena.find(p), Errc::foreign_pointer));
  }
  if (arena.backend() == Backend::dual_map) {
    // A chunk is named by its executable address; its writable view is
    // not an identity the lifecycle calls accept.
    ASSERT_NE(static_cast<const void*>(wr->rw().data()), wr->rx());
    all_refuse(wr->rw().data(), Errc::foreign_pointer);
  }

  // Interior pointers: inside the first page, and a later page's start.
  const auto* w = static_cast<const std::byte*>(wr->rx());
  const auto* x = static_cast<const std::byte*>(exec->rx());
  for (const void* p :
       {static_cast<const void*>(w + 1), static_cast<const void*>(w + ps),
        static_cast<const void*>(w + 3 * ps - 1),
        static_cast<const void*>(x + 100)})
    all_refuse(p, Errc::interior_pointer);

  // Wrong states.
  EXPECT_TRUE(FailsWith(arena.release(*gone), Errc::double_release));
  EXPECT_TRUE(FailsWith(arena.unseal(wr->rx()), Errc::illegal_transition));
  EXPECT_TRUE(FailsWith(arena.seal(*gone), Errc::illegal_transition));
  EXPECT_TRUE(FailsWith(arena.seal(*exec), Errc::illegal_transition));
  EXPECT_TRUE(
      FailsWith(arena.seal(*ro, Seal::execute), Errc::illegal_transition));
  EXPECT_TRUE(FailsWith(arena.unseal(gone->rx()), Errc::illegal_transition));
  EXPECT_TRUE(unchanged());

  // Sizes.
  const std::size_t reserved = arena.range().size();
  EXPECT_TRUE(FailsWith(arena.allocate(0), Errc::zero_size));
  EXPECT_TRUE(FailsWith(arena.allocate(reserved + 1), Errc::size_too_large));
  EXPECT_TRUE(FailsWith(arena.allocate(reserved * 4), Errc::size_too_large));
  EXPECT_TRUE(FailsWith(arena.allocate(std::numeric_limits<std::size_t>::max()),
                        Errc::size_too_large));
  EXPECT_TRUE(FailsWith(
      arena.allocate(std::numeric_limits<std::size_t>::max() - ps + 2),
      Errc::size_too_large));
  EXPECT_TRUE(unchanged());

  // Still fully usable, and the old chunks still behave.
  EXPECT_EQ(call(exec->rx()), 0xE4ECu);
  EXPECT_TRUE(still_works(arena));
  EXPECT_TRUE(audit_arena(arena));
}

// Bad options are refused at creation.
TEST_P(ArenaBadInput, BadOptionsAreRefused) {
  Options o = options();
  o.reserve_bytes = 0;
  EXPECT_TRUE(FailsWith(Arena::create(o), Errc::invalid_argument));
  o = options(std::size_t{1} << 50);
  EXPECT_TRUE(FailsWith(Arena::create(o), Errc::size_too_large));
  o = options(std::numeric_limits<std::size_t>::max());
  EXPECT_TRUE(FailsWith(Arena::create(o), Errc::size_too_large));
  o = options();
  o.backend = static_cast<Backend>(77);
  EXPECT_TRUE(FailsWith(Arena::create(o), Errc::invalid_argument));
  o = options();
  o.vma_budget = 1;
  o.open_pages = 4;  // fewer than the reservation holds at any page size
  if (GetParam() != Backend::protect) {
    // Two reservations (the views; the code and its staging memory)
    // already exceed a budget of one.
    EXPECT_TRUE(FailsWith(Arena::create(o), Errc::invalid_argument));
  } else {
    // One reservation fits; opening pages would split it, and is refused.
    Result<Arena> tight = Arena::create(o);
    ASSERT_TRUE(Ok(tight));
    const std::uint64_t made = tight->stats().syscalls.mprotect;
    EXPECT_TRUE(FailsWith(tight->allocate(1), Errc::vma_budget));
    EXPECT_EQ(tight->stats().vmas, 1u);
    EXPECT_EQ(tight->stats().syscalls.mprotect, made);
  }

  // Odd sizes are rounded up to pages, not refused.
  o = options(10000);
  Result<Arena> a = Arena::create(o);
  ASSERT_TRUE(Ok(a));
  EXPECT_EQ(a->range().size() % a->page_size(), 0u);
  EXPECT_GE(a->range().size(), 10000u);
  EXPECT_LT(a->range().size(), 10000u + a->page_size());
  EXPECT_TRUE(still_works(*a));
}

INSTANTIATE_TEST_SUITE_P(Backends, ArenaBadInput,
                         ::testing::ValuesIn(kAllBackends), backend_name);

// --- Exhaustion and quarantine
// ------------------------------------------------

class ArenaExhausted
    : public ::testing::TestWithParam<std::tuple<Backend, std::size_t>> {
 protected:
  void SetUp() override { WXA_SKIP_IF_UNAVAILABLE(std::get<0>(GetParam())); }
};

// A 16-page reservation: filled, refused with Errc::exhausted (changing
// nothing); released pages come back only after `quarantine` later releases.
TEST_P(ArenaExhausted, TinyReservationExhaustsAndRecyclesAfterQuarantine) {
  const auto [backend, quarantine] = GetParam();
  const std::size_t ps = detail::system_pal().capabilities().page_size;
  Options o;
  o.backend = backend;
  o.reserve_bytes = 16 * ps;
  o.open_pages = 4;
  o.quarantine = quarantine;
  Result<Arena> made = Arena::create(o);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;

  std::vector<Chunk> chunks;
  for (int i = 0; i < 16; ++i) {
    Result<Chunk> c = arena.allocate(ps);
    ASSERT_TRUE(Ok(c)) << i;
    write_fn(*c, static_cast<std::uint32_t>(i));
    chunks.push_back(*c);
  }
  for (std::size_t i = 1; i < chunks.size(); ++i)
    EXPECT_EQ(chunks[i].rx(),
              static_cast<const std::byte*>(chunks[i - 1].rx()) + ps)
        << "consecutive allocations are adjacent";

  const auto states = state_map(arena);
  const auto kernel = kernel_map(arena);
  const Stats before = arena.stats();
  EXPECT_TRUE(FailsWith(arena.allocate(1), Errc::exhausted));
  EXPECT_TRUE(FailsWith(arena.allocate(16 * ps), Errc::exhausted));
  EXPECT_TRUE(FailsWith(arena.allocate(17 * ps), Errc::size_too_large));
  EXPECT_EQ(state_map(arena), states);
  EXPECT_EQ(kernel_map(arena), kernel);
  EXPECT_EQ(arena.stats().syscalls.total(), before.syscalls.total());
  EXPECT_EQ(chunk_counts(arena.stats()), chunk_counts(before));

  // Release chunks 5 and 9 (not adjacent): release numbers 1 and 2.
  ASSERT_TRUE(Ok(arena.release(chunks[5])));
  ASSERT_TRUE(Ok(arena.release(chunks[9])));
  if (quarantine == 0) {
    // Both are reusable at once, but two free single pages do not make two
    // adjacent ones.
    EXPECT_TRUE(FailsWith(arena.allocate(2 * ps), Errc::exhausted));
    // The attempt recycled both: they are free pages now, no chunks.
    EXPECT_EQ(arena.stats().chunks_in(State::writable), 14u);
    EXPECT_EQ(arena.stats().chunks_in(State::retired), 0u);
    EXPECT_EQ(arena.stats().bytes_in(State::free), 2 * ps);
  } else {
    // Chunk 5 may come back after `quarantine` later releases; give it one
    // fewer. Then nothing can be handed out and nothing changes.
    for (std::size_t k = 0; k + 2 < quarantine; ++k)
      ASSERT_TRUE(Ok(arena.release(chunks[k])));
    const auto held = state_map(arena);
    const auto held_kernel = kernel_map(arena);
    const Stats held_stats = arena.stats();
    EXPECT_TRUE(FailsWith(arena.allocate(1), Errc::exhausted));
    EXPECT_EQ(state_map(arena), held);
    EXPECT_EQ(kernel_map(arena), held_kernel);
    EXPECT_EQ(arena.stats().syscalls.total(), held_stats.syscalls.total());
    // One more release: now chunk 5 has seen `quarantine` later releases.
    ASSERT_TRUE(Ok(arena.release(chunks[15])));
  }
  Result<Chunk> again = arena.allocate(1);
  ASSERT_TRUE(Ok(again));
  EXPECT_EQ(again->rx(), chunks[5].rx()) << "the oldest released page";
  // Recycled chunks stop counting as retired.
  const Stats now = arena.stats();
  EXPECT_EQ(now.chunks_in(State::retired) * ps, now.bytes_in(State::retired));
  // The recycled page holds traps, not the old code.
  EXPECT_EQ(again->rw()[0], trap_byte_at(0));
  write_fn(*again, 0xA6A1);
  ASSERT_TRUE(Ok(arena.seal(*again)));
  EXPECT_EQ(call(again->rx()), 0xA6A1u);
  EXPECT_TRUE(audit_arena(arena));
}

INSTANTIATE_TEST_SUITE_P(
    Backends, ArenaExhausted,
    ::testing::Combine(::testing::ValuesIn(kAllBackends),
                       ::testing::Values(std::size_t{0}, std::size_t{2},
                                         std::size_t{3})),
    [](const ::testing::TestParamInfo<std::tuple<Backend, std::size_t>>& i) {
      return std::string(to_string(std::get<0>(i.param))) + "_quarantine" +
             std::to_string(std::get<1>(i.param));
    });

// --- find() -----------------------------------------------------------------

// A JIT that frees code and then only compiles: the quarantine passes by
// allocations too, so the freed pages come back (after `quarantine` of
// them) instead of fresh pages being faulted in while the freed ones stay
// committed and unused.
using ArenaQuarantine = BackendTest;

TEST_P(ArenaQuarantine, PassesByLaterAllocationsWithoutLaterReleases) {
  constexpr std::size_t kQuarantine = 8, kChunks = 32;
  Options o = options();
  o.quarantine = kQuarantine;
  o.open_pages = 4;
  Result<Arena> made = Arena::create(o);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;

  std::set<const void*> freed;
  Batch b(arena);
  for (std::uint32_t i = 0; i < kChunks; ++i) {
    Result<Chunk> c = arena.allocate(1);
    ASSERT_TRUE(Ok(c));
    write_fn(*c, i);
    b.seal(*c);
    freed.insert(c->rx());
  }
  ASSERT_TRUE(Ok(b.commit()));
  for (const void* rx : freed) b.release(rx);
  ASSERT_TRUE(Ok(b.commit()));
  const Stats s0 = arena.stats();

  // Only allocations from here on. The first `quarantine` never reuse.
  std::vector<Chunk> fresh;
  std::size_t first_reuse = 0;
  for (std::uint32_t i = 0; i < 2 * kChunks && !first_reuse; ++i) {
    Result<Chunk> c = arena.allocate(1);
    ASSERT_TRUE(Ok(c));
    if (freed.count(c->rx())) first_reuse = i + 1;
    for (std::size_t k = 0; k < c->rw().size(); ++k)
      ASSERT_TRUE(c->rw()[k] == std::byte{0} || c->rw()[k] == trap_byte_at(k))
          << "a reused page still holds old code";
    write_fn(*c, 100 + i);
    fresh.push_back(*c);
  }
  ASSERT_NE(first_reuse, 0u) << "freed pages never came back";
  EXPECT_GT(first_reuse, kQuarantine) << "reused within the quarantine";
  // Fresh pages opened meanwhile: at most the open run in use then.
  EXPECT_LE(
      arena.stats().committed_bytes,
      s0.committed_bytes + (kQuarantine + o.open_pages) * arena.page_size());
  for (const Chunk& c : fresh) b.seal(c);
  ASSERT_TRUE(Ok(b.commit()));
  for (std::size_t i = 0; i < fresh.size(); ++i)
    EXPECT_EQ(call(fresh[i].rx()), 100u + i);
  EXPECT_TRUE(audit_arena(arena));
}

INSTANTIATE_TEST_SUITE_P(Backends, ArenaQuarantine,
                         ::testing::ValuesIn(kAllBackends), backend_name);

using ArenaFind = BackendTest;

TEST_P(ArenaFind, InteriorAddressesOfEitherViewMapToChunkAndOffset) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  const std::size_t ps = arena.page_size();
  Result<Chunk> before = arena.allocate(ps);
  ASSERT_TRUE(Ok(before));
  Result<Chunk> c = arena.allocate(3 * ps + 10);
  ASSERT_TRUE(Ok(c));
  ASSERT_EQ(c->size(), 4 * ps);
  const auto* rx = static_cast<const std::byte*>(c->rx());
  std::byte* rw = c->rw().data();
  const std::size_t offsets[] = {0, 1, ps - 1, ps, 2 * ps + 7, 4 * ps - 1};

  auto check = [&](State state) {
    for (std::size_t off : offsets) {
      SCOPED_TRACE(::testing::Message() << "offset " << off);
      Result<ChunkInfo> i = arena.find(rx + off);
      ASSERT_TRUE(Ok(i));
      EXPECT_EQ(i->chunk.rx(), c->rx());
      EXPECT_EQ(i->chunk.size(), 4 * ps);
      EXPECT_EQ(i->offset, off);
      EXPECT_EQ(i->state, state);
      if (state == State::writable) {
        EXPECT_EQ(i->chunk.rw().data(), rw);
      } else {
        EXPECT_TRUE(i->chunk.rw().empty());
      }
      // The writable view's addresses name the same chunk (dual_map);
      // kernel_write's staging memory is given back at the seal.
      if (arena.backend() == Backend::kernel_write &&
          state != State::writable) {
        EXPECT_TRUE(FailsWith(arena.find(rw + off), Errc::not_allocated));
        continue;
      }
      Result<ChunkInfo> j = arena.find(rw + off);
      ASSERT_TRUE(Ok(j));
      EXPECT_EQ(j->chunk.rx(), c->rx());
      EXPECT_EQ(j->offset, off);
      EXPECT_EQ(j->state, state);
    }
  };
  check(State::writable);
  ASSERT_TRUE(Ok(arena.seal(*c)));
  check(State::executable);
  ASSERT_TRUE(Ok(arena.unseal(c->rx())));
  ASSERT_TRUE(Ok(arena.seal(*c, Seal::read_only)));
  check(State::read_only);

  // The neighbour is its own chunk.
  Result<ChunkInfo> n = arena.find(rx - 1);
  ASSERT_TRUE(Ok(n));
  EXPECT_EQ(n->chunk.rx(), before->rx());
  EXPECT_EQ(n->offset, ps - 1);

  // Free pages: opened but not handed out, and never touched.
  EXPECT_TRUE(FailsWith(arena.find(rx + 4 * ps), Errc::not_allocated));
  EXPECT_TRUE(
      FailsWith(arena.find(arena.range().data() + arena.range().size() - 1),
                Errc::not_allocated));
  // Retired.
  ASSERT_TRUE(Ok(arena.release(*c)));
  for (std::size_t off : offsets) {
    EXPECT_TRUE(FailsWith(arena.find(rx + off), Errc::not_allocated));
    EXPECT_TRUE(FailsWith(arena.find(rw + off), Errc::not_allocated));
  }
  // Foreign.
  int local = 0;
  EXPECT_TRUE(FailsWith(arena.find(&local), Errc::foreign_pointer));
  EXPECT_TRUE(
      FailsWith(arena.find(outside(arena).first), Errc::foreign_pointer));
  EXPECT_TRUE(
      FailsWith(arena.find(outside(arena).second), Errc::foreign_pointer));
  Result<ChunkInfo> f = arena.find(&local);
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().chunk(), &local);
}

INSTANTIATE_TEST_SUITE_P(Backends, ArenaFind, ::testing::ValuesIn(kAllBackends),
                         backend_name);

// --- Placement near an anchor ------------------------------------------------

// A host function generated code calls directly: a rel32 `call` on x86-64,
// a `bl` on AArch64.
__attribute__((noinline)) unsigned host_function() {
  asm volatile("");  // keep it a real, separate function
  return 0x4057F00Du;
}

// How far a direct call reaches: rel32 on x86-64 (the arena's default
// reach), the 26-bit word offset of B / BL on AArch64.
#if defined(__x86_64__)
constexpr std::size_t kCallReach = std::size_t{1} << 31;
#elif defined(__aarch64__)
constexpr std::size_t kCallReach = std::size_t{128} << 20;
#endif

// Writes, at the start of `out`, a function that returns host_function() + 1
// through a direct call from `at` (its executable address). False if the
// host is out of the call's reach.
::testing::AssertionResult write_call_host(std::span<std::byte> out,
                                           const void* at) {
  const auto host = reinterpret_cast<std::intptr_t>(&host_function);
  const auto entry = reinterpret_cast<std::intptr_t>(at);
  fill_traps(out);
#if defined(__x86_64__)
  // sub rsp, 8; call host_function; add eax, 1; add rsp, 8; ret — the stack
  // stays 16-byte aligned at the call, as the ABI asks.
  const std::intptr_t rel = host - (entry + 4 + 5);
  if (rel < INT32_MIN || rel > INT32_MAX)
    return ::testing::AssertionFailure() << "rel32 out of range: " << rel;
  const auto r = static_cast<std::uint32_t>(static_cast<std::int32_t>(rel));
  const std::uint8_t code[] = {0x48,
                               0x83,
                               0xEC,
                               0x08,  //
                               0xE8,
                               std::uint8_t(r),
                               std::uint8_t(r >> 8),
                               std::uint8_t(r >> 16),
                               std::uint8_t(r >> 24),
                               0x83,
                               0xC0,
                               0x01,  //
                               0x48,
                               0x83,
                               0xC4,
                               0x08,  //
                               0xC3};
  std::memcpy(out.data(), code, sizeof code);
#elif defined(__aarch64__)
  // stp x29, x30, [sp, #-16]!; bl host_function; add w0, w0, #1;
  // ldp x29, x30, [sp], #16; ret — the link register survives the call.
  const std::intptr_t rel = host - (entry + 4);
  if (!a64::bl_reaches(rel))
    return ::testing::AssertionFailure() << "bl out of range: " << rel;
  const std::uint32_t code[] = {a64::stp_fp_lr_pre, a64::bl(rel),
                                a64::add_w_imm(0, 0, 1), a64::ldp_fp_lr_post,
                                a64::ret};
  std::memcpy(out.data(), code, sizeof code);  // little-endian words
#endif
  return ::testing::AssertionSuccess();
}

using ArenaAnchor = BackendTest;

TEST_P(ArenaAnchor, WholeRangeWithinCallReachAndACallToTheHostWorks) {
  if (!maps_list_every_mapping())
    GTEST_SKIP() << "/proc/self/maps leaves mappings out here (qemu-user with "
                    "a page size above the host's): placement near an "
                    "anchor looks there for free gaps and cannot work";
  const auto anchor = reinterpret_cast<const void*>(&host_function);
  Options o = options();
  o.anchor = anchor;
  if (kCallReach < (std::size_t{1} << 31)) o.reach = kCallReach;
  Result<Arena> made = Arena::create(o);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;

  const auto a = reinterpret_cast<std::intptr_t>(anchor);
  auto within = [&](const void* p, std::size_t reach) {
    const std::intptr_t d = reinterpret_cast<std::intptr_t>(p) - a;
    const auto r = static_cast<std::intptr_t>(reach);
    return d < r && d > -r;
  };
  const std::byte* lo = arena.range().data();
  const std::byte* last = lo + arena.range().size() - 1;
  EXPECT_TRUE(within(lo, kCallReach))
      << static_cast<const void*>(lo) << " vs " << anchor;
  EXPECT_TRUE(within(last, kCallReach))
      << static_cast<const void*>(last) << " vs " << anchor;

  Result<Chunk> c = arena.allocate(64);
  ASSERT_TRUE(Ok(c));
  ASSERT_TRUE(write_call_host(c->rw(), c->rx()));
  ASSERT_TRUE(Ok(arena.seal(*c)));
  EXPECT_EQ(call(c->rx()), 0x4057F00Du + 1);

  // A narrower reach is honoured too.
  Options narrow = options();
  narrow.anchor = anchor;
  narrow.reach = std::size_t{256} << 20;
  Result<Arena> b = Arena::create(narrow);
  ASSERT_TRUE(Ok(b));
  EXPECT_TRUE(within(b->range().data(), narrow.reach));
  EXPECT_TRUE(within(b->range().data() + b->range().size() - 1, narrow.reach));
}

TEST_P(ArenaAnchor, ReachSmallerThanTheReservationIsUnreachable) {
  Options o = options();
  o.anchor = reinterpret_cast<const void*>(&host_function);
  o.reach = o.reserve_bytes - os_page_size();
  EXPECT_TRUE(FailsWith(Arena::create(o), Errc::unreachable_anchor));
  o.reach = 1 << 20;
  EXPECT_TRUE(FailsWith(Arena::create(o), Errc::unreachable_anchor));
}

INSTANTIATE_TEST_SUITE_P(Backends, ArenaAnchor,
                         ::testing::ValuesIn(kAllBackends), backend_name);

// --- The cost of single operations -------------------------------------------

using ArenaCost = BackendTest;

TEST_P(ArenaCost, SingleOperationsCostExactlyTheirSystemCalls) {
  Options o = options();
  o.open_pages = 64;
  Result<Arena> made = Arena::create(o);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  const bool dual = arena.backend() == Backend::dual_map;
  const bool kw = arena.backend() == Backend::kernel_write;
  const bool mapped = (dual || kw) && !kViewsChangeByProtection;
  const std::size_t ps = arena.page_size();
  const bool populate = detail::system_pal().capabilities().populate_read;

  // The first allocation opens 64 pages with one protection change
  // (protect: one mprotect to RW; dual_map: one writable view, mapped with
  // mmap and kept out of fork children with madvise — on Windows one
  // VirtualProtect within the writable view).
  Stats s0 = arena.stats();
  Result<Chunk> first = arena.allocate(ps);
  ASSERT_TRUE(Ok(first));
  Stats s1 = arena.stats();
  EXPECT_EQ(s1.protection_calls - s0.protection_calls, 1u);
  EXPECT_EQ(s1.syscalls.mprotect - s0.syscalls.mprotect, mapped ? 0u : 1u);
  EXPECT_EQ(s1.syscalls.mmap - s0.syscalls.mmap, mapped ? 1u : 0u);
  EXPECT_EQ(s1.open_bytes, 63 * ps);

  // The other 63 come out of that open run: no system call at all.
  std::vector<Chunk> chunks{*first};
  for (int i = 1; i < 64; ++i) {
    Result<Chunk> c = arena.allocate(100);
    ASSERT_TRUE(Ok(c));
    chunks.push_back(*c);
  }
  Stats s2 = arena.stats();
  EXPECT_EQ(s2.syscalls.total(), s1.syscalls.total())
      << "allocate from an open run made a system call";
  EXPECT_EQ(s2.open_bytes, 0u);
  std::cout << "[ figures  ] " << to_string(arena.backend())
            << ": 63 allocations from an open run made "
            << s2.syscalls.total() - s1.syscalls.total() << " system calls\n";

  // Sealing one fresh chunk: exactly one protection change. protect: one
  // mprotect(RX). dual_map: the chunk's two views change, so two calls —
  // its writable view is replaced by an inaccessible placeholder (mmap) and
  // its executable view is mapped read+execute from the memfd (mmap); on
  // Windows two VirtualProtect calls, one within each view. kernel_write:
  // no protection changes; one pwritev copies the code in, and one madvise
  // (MADV_POPULATE_READ, where the kernel has it) maps the fresh page in;
  // where cores may fetch stale code (AArch64), the barrier follows: the
  // page held traps, executable, before.
  write_fn(chunks[10], 10);
  Result<void> sealed = arena.seal(chunks[10]);
  ASSERT_TRUE(Ok(sealed));
  Stats s3 = arena.stats();
  const std::uint64_t seal_calls = s3.syscalls.total() - s2.syscalls.total();
  const unsigned kw_barrier =
      code_copied_in_needs_barrier(arena.backend()) ? 1 : 0;
  EXPECT_EQ(seal_calls, kw     ? (populate ? 2u : 1u) + kw_barrier
                        : dual ? 2u
                               : 1u);
  EXPECT_EQ(s3.syscalls.mprotect - s2.syscalls.mprotect,
            mapped ? 0u : (dual ? 2u : 1u));
  EXPECT_EQ(s3.syscalls.mmap - s2.syscalls.mmap, mapped && !kw ? 2u : 0u);
  EXPECT_EQ(s3.syscalls.write - s2.syscalls.write, kw ? 1u : 0u);
  EXPECT_EQ(s3.syscalls.madvise - s2.syscalls.madvise,
            kw && populate ? 1u : 0u);
  EXPECT_EQ(s3.syscalls.membarrier - s2.syscalls.membarrier, kw_barrier)
      << "fresh code needs no barrier, but where it is copied into pages "
         "that were executable and cores may fetch stale code";
  EXPECT_EQ(s3.protection_calls - s2.protection_calls, kw     ? 0u
                                                       : dual ? 2u
                                                              : 1u);
  EXPECT_EQ(s3.commits - s2.commits, 1u);
  EXPECT_EQ(s3.runs - s2.runs, 1u);
  EXPECT_EQ(call(chunks[10].rx()), 10u);
  std::cout << "[ figures  ] " << to_string(arena.backend())
            << ": sealing one fresh chunk made " << seal_calls
            << " system call(s)\n";

  // Releasing it: one call (protect: mprotect(NONE); dual_map: only its
  // executable view exists, replaced by a placeholder; kernel_write: one
  // pwritev of trap instructions over it).
  ASSERT_TRUE(Ok(arena.release(chunks[10])));
  Stats s4 = arena.stats();
  EXPECT_EQ(s4.syscalls.total() - s3.syscalls.total(), 1u);
  EXPECT_EQ(s4.syscalls.write - s3.syscalls.write, kw ? 1u : 0u);

  // Unsealing and resealing a chunk: the reseal is code at an address that
  // held code, so it costs the barrier too (where the kernel has one).
  write_fn(chunks[20], 20);
  ASSERT_TRUE(Ok(arena.seal(chunks[20])));
  Result<Chunk> w = arena.unseal(chunks[20].rx());
  ASSERT_TRUE(Ok(w));
  write_fn(*w, 21);
  Stats s5 = arena.stats();
  Batch b(arena);
  b.seal(*w);
  Result<CommitReport> rep = b.commit();
  ASSERT_TRUE(Ok(rep));
  Stats s6 = arena.stats();
  const bool has_barrier = detail::system_pal().capabilities().barrier;
  EXPECT_EQ(rep->barrier, has_barrier);
  EXPECT_EQ(s6.syscalls.membarrier - s5.syscalls.membarrier,
            has_barrier ? 1u : 0u);
  EXPECT_EQ(s6.barriers - s5.barriers, has_barrier ? 1u : 0u);
  EXPECT_EQ(call(w->rx()), 21u);
  EXPECT_TRUE(audit_arena(arena));
}

INSTANTIATE_TEST_SUITE_P(Backends, ArenaCost, ::testing::ValuesIn(kAllBackends),
                         backend_name);

}  // namespace
}  // namespace wxa::test
