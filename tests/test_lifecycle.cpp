// SPDX-License-Identifier: MIT
// The chunk lifecycle: every state × every operation, and the kernel faults
// that back it (stores into sealed chunks, calls into non-executable ones).
#include <gtest/gtest.h>

#include <csignal>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "pal/cpu.hpp"
#include "support/arena_util.hpp"
#include "support/maps.hpp"
#include "support/memory_fault.hpp"
#include "support/native_code.hpp"
#include "wxarena/arena.hpp"

namespace wxa::test {
namespace {

// The state the chunk under test starts in. `free_unused` is an address the
// arena never touched; `free_open` one already opened (writable, unhanded).
enum class Start {
  free_unused,
  free_open,
  writable,
  executable,
  read_only,
  retired
};
enum class Op { seal_execute, seal_read_only, unseal, release, find, write };

const char* name_of(Start s) {
  switch (s) {
    case Start::free_unused:
      return "free_unused";
    case Start::free_open:
      return "free_open";
    case Start::writable:
      return "writable";
    case Start::executable:
      return "executable";
    case Start::read_only:
      return "read_only";
    case Start::retired:
      return "retired";
  }
  return "?";
}

const char* name_of(Op o) {
  switch (o) {
    case Op::seal_execute:
      return "seal_execute";
    case Op::seal_read_only:
      return "seal_read_only";
    case Op::unseal:
      return "unseal";
    case Op::release:
      return "release";
    case Op::find:
      return "find";
    case Op::write:
      return "write";
  }
  return "?";
}

State public_state(Start s) {
  switch (s) {
    case Start::free_unused:
    case Start::free_open:
      return State::free;
    case Start::writable:
      return State::writable;
    case Start::executable:
      return State::executable;
    case Start::read_only:
      return State::read_only;
    case Start::retired:
      return State::retired;
  }
  return State::free;
}

// What the table promises: success and the state afterwards, or the error.
struct Expectation {
  Errc error = Errc::ok;      // ok: allowed
  State after = State::free;  // when allowed
};

Expectation expected(Start s, Op op) {
  const bool is_free = s == Start::free_unused || s == Start::free_open;
  if (is_free) return {Errc::not_allocated};
  switch (op) {
    case Op::seal_execute:
      if (s == Start::writable) return {Errc::ok, State::executable};
      return {Errc::illegal_transition};
    case Op::seal_read_only:
      if (s == Start::writable) return {Errc::ok, State::read_only};
      return {Errc::illegal_transition};
    case Op::unseal:
      if (s == Start::executable || s == Start::read_only)
        return {Errc::ok, State::writable};
      return {Errc::illegal_transition};
    case Op::release:
      if (s == Start::retired) return {Errc::double_release};
      return {Errc::ok, State::retired};
    case Op::find:
      if (s == Start::retired) return {Errc::not_allocated};
      return {Errc::ok, public_state(s)};
    case Op::write:
      // Writing needs a writable view, which only find() of a writable
      // chunk hands out; a sealed chunk's find() shows none.
      if (s == Start::retired) return {Errc::not_allocated};
      if (s != Start::writable) return {Errc::illegal_transition};
      return {Errc::ok, State::writable};
  }
  return {};
}

constexpr std::uint32_t kLeft = 0x1EF7, kRight = 0x7167, kSubject = 0x5B1EC7,
                        kPatched = 0xBA7C4ED;

using Cell = std::tuple<Backend, Start, Op>;

class LifecycleTable : public ::testing::TestWithParam<Cell> {
 protected:
  void SetUp() override { WXA_SKIP_IF_UNAVAILABLE(std::get<0>(GetParam())); }
};

// One cell: build the neighbourhood [left: executable][subject: 2 pages]
// [right: writable], put the subject in its start state, apply the
// operation, and check the result, the state afterwards, that a refusal
// changed nothing (tracked state, kernel maps, counts), that the neighbours
// are untouched, and that the arena still works.
TEST_P(LifecycleTable, StateTimesOperation) {
  const auto [backend, start, op] = GetParam();
  Options o;
  o.backend = backend;
  o.reserve_bytes = kSmallReserve;
  Result<Arena> made = Arena::create(o);
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  const std::size_t ps = arena.page_size();

  Result<Chunk> left = arena.allocate(ps);
  ASSERT_TRUE(Ok(left));
  write_fn(*left, kLeft);
  ASSERT_TRUE(Ok(arena.seal(*left)));

  const void* subject = nullptr;
  std::optional<Chunk> right;
  if (start == Start::free_unused) {
    // The last page of the reservation: never opened by a small arena user.
    subject = arena.range().data() + arena.range().size() - ps;
  } else if (start == Start::free_open) {
    subject = static_cast<const std::byte*>(left->rx()) + ps;
  } else {
    Result<Chunk> c = arena.allocate(2 * ps);
    ASSERT_TRUE(Ok(c));
    write_fn(*c, kSubject);
    subject = c->rx();
    Result<Chunk> r = arena.allocate(ps);
    ASSERT_TRUE(Ok(r));
    right = *r;
    write_fn(*right, kRight);
    if (start == Start::executable || start == Start::retired) {
      ASSERT_TRUE(Ok(arena.seal(subject, Seal::execute)));
    }
    if (start == Start::read_only) {
      ASSERT_TRUE(Ok(arena.seal(subject, Seal::read_only)));
    }
    if (start == Start::retired) {
      ASSERT_TRUE(Ok(arena.release(subject)));
    }
  }
  ASSERT_TRUE(audit_arena(arena));

  const std::vector<std::string> states_before = state_map(arena);
  const std::vector<std::string> kernel_before = kernel_map(arena);
  const Stats stats_before = arena.stats();

  // Apply the operation.
  Result<void> outcome;
  std::optional<Chunk> unsealed;
  switch (op) {
    case Op::seal_execute:
      outcome = arena.seal(subject, Seal::execute);
      break;
    case Op::seal_read_only:
      outcome = arena.seal(subject, Seal::read_only);
      break;
    case Op::unseal: {
      Result<Chunk> r = arena.unseal(subject);
      if (r)
        unsealed = *r;
      else
        outcome = r.error();
      break;
    }
    case Op::release:
      outcome = arena.release(subject);
      break;
    case Op::find: {
      Result<ChunkInfo> r = arena.find(subject);
      if (!r) {
        outcome = r.error();
        break;
      }
      EXPECT_EQ(r->chunk.rx(), subject);
      EXPECT_EQ(r->chunk.size(), 2 * ps);
      EXPECT_EQ(r->offset, 0u);
      EXPECT_EQ(r->chunk.rw().empty(), r->state != State::writable)
          << "a writable view exists exactly in State::writable";
      break;
    }
    case Op::write: {
      Result<ChunkInfo> r = arena.find(subject);
      if (!r) {
        outcome = r.error();
        break;
      }
      if (r->chunk.rw().empty()) {
        outcome = Errc::illegal_transition;  // no way to write
        break;
      }
      write_fn(r->chunk, kPatched);
      break;
    }
  }

  const Expectation want = expected(start, op);
  if (want.error != Errc::ok) {
    ASSERT_TRUE(FailsWith(outcome, want.error));
    // Nothing changed: tracked states, the kernel's maps, the counts.
    EXPECT_EQ(state_map(arena), states_before);
    EXPECT_EQ(kernel_map(arena), kernel_before);
    const Stats after = arena.stats();
    EXPECT_EQ(chunk_counts(after), chunk_counts(stats_before));
    EXPECT_EQ(after.syscalls.total(), stats_before.syscalls.total())
        << "a refused operation made a system call";
    EXPECT_EQ(after.vmas, stats_before.vmas);
    if (start != Start::free_unused && start != Start::free_open &&
        start != Start::retired) {
      Result<ChunkInfo> info = arena.find(subject);
      ASSERT_TRUE(Ok(info));
      EXPECT_EQ(info->state, public_state(start));
    }
  } else {
    ASSERT_TRUE(Ok(outcome));
    if (op != Op::find && op != Op::write) {
      Result<ChunkInfo> info = arena.find(subject);
      if (want.after == State::retired) {
        EXPECT_TRUE(FailsWith(info, Errc::not_allocated));
      } else {
        ASSERT_TRUE(Ok(info));
        EXPECT_EQ(info->state, want.after);
      }
    }
    // What the new state allows, it allows for real.
    if (want.after == State::executable) {
      EXPECT_EQ(call(subject), kSubject);
    }
    if (op == Op::unseal) {
      ASSERT_TRUE(unsealed.has_value());
      EXPECT_EQ(unsealed->rx(), subject);
      write_fn(*unsealed, kPatched);
      ASSERT_TRUE(Ok(arena.seal(subject)));
      EXPECT_EQ(call(subject), kPatched);
    }
    if (op == Op::write) {
      ASSERT_TRUE(Ok(arena.seal(subject)));
      EXPECT_EQ(call(subject), kPatched);
    }
  }

  // Neighbours untouched; the kernel agrees with the arena; it still works.
  EXPECT_EQ(call(left->rx()), kLeft);
  if (right) {
    Result<ChunkInfo> r = arena.find(right->rx());
    ASSERT_TRUE(Ok(r));
    EXPECT_EQ(r->state, State::writable);
    ASSERT_TRUE(Ok(arena.seal(*right)));
    EXPECT_EQ(call(right->rx()), kRight);
  }
  EXPECT_TRUE(audit_arena(arena));
  EXPECT_TRUE(still_works(arena));
  EXPECT_TRUE(audit_arena(arena));
}

std::string cell_name(const ::testing::TestParamInfo<Cell>& info) {
  const auto [b, s, o] = info.param;
  return std::string(to_string(b)) + "_" + name_of(s) + "_" + name_of(o);
}

INSTANTIATE_TEST_SUITE_P(
    All, LifecycleTable,
    ::testing::Combine(::testing::ValuesIn(kAllBackends),
                       ::testing::Values(Start::free_unused, Start::free_open,
                                         Start::writable, Start::executable,
                                         Start::read_only, Start::retired),
                       ::testing::Values(Op::seal_execute, Op::seal_read_only,
                                         Op::unseal, Op::release, Op::find,
                                         Op::write)),
    cell_name);

// --- The kernel enforces it: faults in a child process ----------------------

void store_byte(const void* p) {
  *static_cast<volatile std::uint8_t*>(const_cast<void*>(p)) = 0x90;
}
std::uint8_t load_byte(const void* p) {
  return *static_cast<const volatile std::uint8_t*>(p);
}

class LifecycleDeathTest : public BackendTest {};

TEST_P(LifecycleDeathTest, StoreIntoExecutableChunkFaults) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  Result<Chunk> c = arena.allocate(100);
  ASSERT_TRUE(Ok(c));
  write_fn(*c, 0xC0DE);
  std::byte* rw = c->rw().data();
  ASSERT_TRUE(Ok(arena.seal(*c)));
  ASSERT_EQ(call(c->rx()), 0xC0DEu);  // the control: it runs
  const std::size_t n = c->size();
  EXPECT_EXIT(
      {
        expect_fault_in(c->rx(), n);
        store_byte(c->rx());
      },
      ::testing::ExitedWithCode(kFaultExitCode), kFaultInChunk);
  if (arena.backend() == Backend::dual_map) {
    // Strict mode: the writable view the chunk had is gone too.
    ASSERT_NE(static_cast<const void*>(rw), c->rx());
    EXPECT_EXIT(
        {
          expect_fault_in(rw, n);
          store_byte(rw);
        },
        ::testing::ExitedWithCode(kFaultExitCode), kFaultInChunk);
  }
  EXPECT_EQ(call(c->rx()), 0xC0DEu);
}

TEST_P(LifecycleDeathTest, CallIntoWritableChunkFaults) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  Result<Chunk> c = arena.allocate(100);
  ASSERT_TRUE(Ok(c));
  write_fn(*c, 0xC0DE);  // valid code, but not executable yet
  c->rw()[6] = std::byte{0x5A};
  ASSERT_EQ(c->rw()[6], std::byte{0x5A});  // the control: it is writable
  if (arena.backend() == Backend::kernel_write) {
    // The code pages stay read+execute, but what was written is staged
    // elsewhere: none of it is at rx() before the seal (fresh pages read as
    // zeros or traps there), and the staging memory is never executable.
    EXPECT_FALSE(holds_fn(c->rx(), 0xC0DE));
    const std::byte* rw = c->rw().data();
    EXPECT_EXIT(
        {
          expect_fault_in(rw, c->size());
          (void)call(rw);
        },
        ::testing::ExitedWithCode(kFaultExitCode), kFaultInChunk);
    return;
  }
  EXPECT_EXIT(
      {
        expect_fault_in(c->rx(), c->size());
        (void)call(c->rx());
      },
      ::testing::ExitedWithCode(kFaultExitCode), kFaultInChunk);
  if (arena.backend() == Backend::dual_map) {
    // Nor can the writable view itself be run.
    const std::byte* rw = c->rw().data();
    EXPECT_EXIT(
        {
          expect_fault_in(rw, c->size());
          (void)call(rw);
        },
        ::testing::ExitedWithCode(kFaultExitCode), kFaultInChunk);
  }
}

TEST_P(LifecycleDeathTest, CallIntoReleasedChunkFaults) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  Result<Chunk> c = arena.allocate(100);
  ASSERT_TRUE(Ok(c));
  write_fn(*c, 0xC0DE);
  ASSERT_TRUE(Ok(arena.seal(*c)));
  ASSERT_EQ(call(c->rx()), 0xC0DEu);  // the control: it ran before
  ASSERT_TRUE(Ok(arena.release(*c)));
#ifndef _WIN32  // kernel_write is a Linux backend
  if (arena.backend() == Backend::kernel_write) {
    // Released code was overwritten with trap instructions (x86-64 int3,
    // AArch64 brk): a stale call traps at once, whatever the page shows.
    const std::size_t n = c->size();
    std::vector<std::byte> traps(n);
    std::vector<std::byte> seen(n);
    std::memcpy(seen.data(), c->rx(), n);
    detail::fill_traps(traps.data(), n);
    EXPECT_EQ(seen, traps) << "released code was not overwritten with traps";
    EXPECT_EXIT((void)call(c->rx()), ::testing::KilledBySignal(SIGTRAP), "");
    return;
  }
#endif
  EXPECT_EXIT(
      {
        expect_fault_in(c->rx(), c->size());
        (void)call(c->rx());
      },
      ::testing::ExitedWithCode(kFaultExitCode), kFaultInChunk);
  // Not even readable: released bytes are unreachable.
  EXPECT_EXIT(
      {
        expect_fault_in(c->rx(), c->size());
        (void)load_byte(c->rx());
      },
      ::testing::ExitedWithCode(kFaultExitCode), kFaultInChunk);
}

TEST_P(LifecycleDeathTest, StoreIntoReadOnlyChunkFaults) {
  Result<Arena> made = Arena::create(options());
  ASSERT_TRUE(Ok(made));
  Arena& arena = *made;
  Result<Chunk> c = arena.allocate(100);
  ASSERT_TRUE(Ok(c));
  write_fn(*c, 0xDA7A);
  ASSERT_TRUE(Ok(arena.seal(*c, Seal::read_only)));
  (void)load_byte(c->rx());  // the control: readable, same bytes
  ASSERT_TRUE(holds_fn(c->rx(), 0xDA7A));
  EXPECT_EXIT(
      {
        expect_fault_in(c->rx(), c->size());
        store_byte(c->rx());
      },
      ::testing::ExitedWithCode(kFaultExitCode), kFaultInChunk);
  // Data is never code.
  EXPECT_EXIT(
      {
        expect_fault_in(c->rx(), c->size());
        (void)call(c->rx());
      },
      ::testing::ExitedWithCode(kFaultExitCode), kFaultInChunk);
}

INSTANTIATE_TEST_SUITE_P(Backends, LifecycleDeathTest,
                         ::testing::ValuesIn(kAllBackends), backend_name);

}  // namespace
}  // namespace wxa::test
