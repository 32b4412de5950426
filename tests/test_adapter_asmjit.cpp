// SPDX-License-Identifier: MIT
// The asmjit adapter: functions assembled with x86::Assembler, placed by
// wxa::asmjit::JitRuntime in a CodeHeap on either backend, called, released.
#include <asmjit/x86.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "support/arena_util.hpp"
#include "support/maps.hpp"
#include "wxarena/adapters/asmjit.hpp"
#include "wxarena/arena.hpp"
#include "wxarena/code_heap.hpp"

#if defined(__x86_64__)

namespace {

namespace x86 = ::asmjit::x86;
using ::asmjit::CodeHolder;
using ::asmjit::kErrorOk;
using ::asmjit::Label;
using wxa::Arena;
using wxa::CodeHeap;
using wxa::Errc;
using wxa::State;
using wxa::asmjit::Publish;
using wxa::test::audit_arena;
using wxa::test::FailsWith;
using wxa::test::Ok;

extern "C" int host_twice(int x) { return 2 * x; }

/// int add3(int a, int b, int c): arithmetic on the argument registers.
void emit_add3(x86::Assembler& a) {
  a.lea(x86::eax, x86::ptr(x86::rdi, x86::rsi));
  a.add(x86::eax, x86::edx);
  a.ret();
}

/// int factorial(int n): a backward jump to a label.
void emit_factorial(x86::Assembler& a) {
  Label loop = a.newLabel(), done = a.newLabel();
  a.mov(x86::eax, 1);
  a.test(x86::edi, x86::edi);
  a.jle(done);
  a.bind(loop);
  a.imul(x86::eax, x86::edi);
  a.dec(x86::edi);
  a.jnz(loop);
  a.bind(done);
  a.ret();
}

/// int twice_plus_one(int x): calls host_twice at its absolute address
/// (rel32 if within reach of where the code runs, else via asmjit's
/// address table), keeping the stack 16-byte aligned.
void emit_call_host(x86::Assembler& a) {
  a.sub(x86::rsp, 8);
  a.call(::asmjit::imm(reinterpret_cast<std::uintptr_t>(&host_twice)));
  a.add(x86::rsp, 8);
  a.add(x86::eax, 1);
  a.ret();
}

/// std::uint32_t lookup(std::uint32_t i): reads a constant table in a
/// second section through [rip + label], and one constant after the code in
/// the same section.
void emit_table(CodeHolder& code, x86::Assembler& a) {
  ::asmjit::Section* data = nullptr;
  ASSERT_EQ(code.newSection(&data, ".rodata", SIZE_MAX,
                            ::asmjit::SectionFlags::kNone, 16),
            kErrorOk);
  Label table = a.newLabel(), bias = a.newLabel();
  a.lea(x86::rax, x86::ptr(table));
  a.mov(x86::edi, x86::edi);
  a.mov(x86::eax, x86::dword_ptr(x86::rax, x86::rdi, 2));
  a.add(x86::eax, x86::dword_ptr(bias));
  a.ret();
  a.align(::asmjit::AlignMode::kData, 4);
  a.bind(bias);
  a.embedUInt32(1000);
  a.section(data);
  a.bind(table);
  for (std::uint32_t v : {2u, 3u, 5u, 7u, 11u, 13u, 17u, 19u}) a.embedUInt32(v);
}

/// int dispatch(int i): an indirect jump through a table of absolute label
/// addresses (a switch's jump table), in the second section. Such code is
/// right only where it was relocated for, so it proves that asmjit
/// relocated for the executable address, not the writable view.
void emit_jump_table(CodeHolder& code, x86::Assembler& a) {
  ::asmjit::Section* data = nullptr;
  ASSERT_EQ(code.newSection(&data, ".rodata", SIZE_MAX,
                            ::asmjit::SectionFlags::kNone, 8),
            kErrorOk);
  Label table = a.newLabel(),
        cases[3] = {a.newLabel(), a.newLabel(), a.newLabel()};
  a.lea(x86::rax, x86::ptr(table));
  a.mov(x86::edi, x86::edi);
  a.jmp(x86::ptr(x86::rax, x86::rdi, 3));
  for (int i = 0; i < 3; ++i) {
    a.bind(cases[i]);
    a.mov(x86::eax, 100 * (i + 1));
    a.ret();
  }
  a.section(data);
  a.bind(table);
  for (const Label& c : cases) a.embedLabel(c);
}

/// const void* self(): returns its own entry, as an absolute address
/// asmjit wrote into the code at relocation.
void emit_self(x86::Assembler& a) {
  Label entry = a.newLabel(), slot = a.newLabel();
  a.bind(entry);
  a.mov(x86::rax, x86::qword_ptr(slot));
  a.ret();
  a.align(::asmjit::AlignMode::kData, 8);
  a.bind(slot);
  a.embedLabel(entry);
}

class AsmjitAdapter : public wxa::test::BackendTest {
 protected:
  void SetUp() override {
    wxa::test::BackendTest::SetUp();
    if (IsSkipped()) return;
    make(options());
  }

  void make(const wxa::Options& o, Publish publish = Publish::on_add) {
    rt_.reset();
    heap_.reset();
    arena_.reset();
    wxa::Result<Arena> arena = Arena::create(o);
    ASSERT_TRUE(Ok(arena));
    arena_.emplace(std::move(*arena));
    wxa::Result<CodeHeap> heap = CodeHeap::create(*arena_);
    ASSERT_TRUE(Ok(heap));
    heap_.emplace(std::move(*heap));
    rt_.emplace(*heap_, publish);
  }

  /// Assembles with `emit` and adds the result; null on failure.
  template <class Fn, class Emit>
  Fn* add(Emit emit) {
    CodeHolder code;
    EXPECT_EQ(code.init(rt_->environment()), kErrorOk);
    x86::Assembler a(&code);
    if constexpr (requires { emit(code, a); })
      emit(code, a);
    else
      emit(a);
    Fn* fn = nullptr;
    const ::asmjit::Error err = rt_->add(&fn, &code);
    EXPECT_EQ(err, kErrorOk) << ::asmjit::DebugUtils::errorAsString(err) << "; "
                             << rt_->last_error().to_string();
    return fn;
  }

  State state_at(const void* p) const {
    wxa::Result<wxa::ChunkInfo> info = arena_->find(p);
    return info ? info->state : State::free;
  }

  std::optional<Arena> arena_;
  std::optional<CodeHeap> heap_;
  std::optional<wxa::asmjit::JitRuntime> rt_;
};

TEST_P(AsmjitAdapter, AssemblesCallsAndReleasesFunctions) {
  auto* add3 = add<int(int, int, int)>(emit_add3);
  auto* factorial = add<int(int)>(emit_factorial);
  auto* call_host = add<int(int)>(emit_call_host);
  auto* lookup = add<std::uint32_t(std::uint32_t)>(emit_table);
  auto* dispatch = add<int(int)>(emit_jump_table);
  auto* self = add<const void*()>(emit_self);
  ASSERT_TRUE(add3 && factorial && call_host && lookup && dispatch && self);

  EXPECT_EQ(add3(1, 20, 300), 321);
  EXPECT_EQ(factorial(0), 1);
  EXPECT_EQ(factorial(10), 3628800);
  EXPECT_EQ(call_host(20), 41);
  const std::uint32_t primes[8] = {2, 3, 5, 7, 11, 13, 17, 19};
  for (std::uint32_t i = 0; i < 8; ++i) EXPECT_EQ(lookup(i), 1000 + primes[i]);
  EXPECT_EQ(dispatch(0), 100);
  EXPECT_EQ(dispatch(2), 300);
  EXPECT_EQ(self(), reinterpret_cast<const void*>(self));

  // Each is sealed: executable, with no writable view anywhere.
  for (const void* fn : {reinterpret_cast<const void*>(add3),
                         reinterpret_cast<const void*>(factorial),
                         reinterpret_cast<const void*>(call_host),
                         reinterpret_cast<const void*>(lookup),
                         reinterpret_cast<const void*>(dispatch),
                         reinterpret_cast<const void*>(self)})
    EXPECT_EQ(state_at(fn), State::executable);
  EXPECT_TRUE(audit_arena(*arena_));

  // Released: its page retires at once (nothing else lives there).
  EXPECT_EQ(rt_->release(factorial), kErrorOk);
  EXPECT_TRUE(FailsWith(arena_->find(reinterpret_cast<const void*>(factorial)),
                        Errc::not_allocated));
  EXPECT_EQ(rt_->release(factorial), ::asmjit::kErrorInvalidArgument);
  EXPECT_EQ(rt_->last_error().code(), Errc::double_release);
  int on_stack = 0;
  EXPECT_EQ(rt_->release(&on_stack), ::asmjit::kErrorInvalidArgument);
  // The others still run.
  EXPECT_EQ(add3(1, 2, 3), 6);
  EXPECT_EQ(call_host(-5), -9);
  for (const void* fn : {reinterpret_cast<const void*>(add3),
                         reinterpret_cast<const void*>(call_host),
                         reinterpret_cast<const void*>(lookup),
                         reinterpret_cast<const void*>(dispatch),
                         reinterpret_cast<const void*>(self)})
    EXPECT_EQ(rt_->_release(const_cast<void*>(fn)), kErrorOk);
  EXPECT_EQ(arena_->stats().chunks_in(State::executable), 0u);
  EXPECT_TRUE(audit_arena(*arena_));
}

// With the arena anchored at the host, the call is a direct rel32; without,
// asmjit goes through its address table. Both must be relocated for the
// executable address, not the writable one.
TEST_P(AsmjitAdapter, CallsTheHostFromAnAnchoredArena) {
  wxa::Options o = options();
  o.anchor = reinterpret_cast<const void*>(&host_twice);
  make(o);
  auto* call_host = add<int(int)>(emit_call_host);
  ASSERT_NE(call_host, nullptr);
  EXPECT_EQ(call_host(100), 201);
  const auto distance = reinterpret_cast<std::intptr_t>(call_host) -
                        reinterpret_cast<std::intptr_t>(&host_twice);
  EXPECT_LT(distance < 0 ? -distance : distance, std::intptr_t{1} << 31);
  EXPECT_EQ(rt_->release(call_host), kErrorOk);
}

// Publish::on_demand packs many functions into shared pages and seals them
// in one commit; none is executable before.
TEST_P(AsmjitAdapter, OnDemandPublishesManyFunctionsInOneCommit) {
  make(options(), Publish::on_demand);
  constexpr int kCount = 200;
  std::vector<int (*)()> fns;
  for (int i = 0; i < kCount; ++i) {
    fns.push_back(add<int()>([i](x86::Assembler& a) {
      a.mov(x86::eax, i * 7);
      a.ret();
    }));
    ASSERT_NE(fns.back(), nullptr);
  }
  EXPECT_EQ(state_at(reinterpret_cast<const void*>(fns[0])), State::writable);
  const std::size_t calls_before = arena_->stats().protection_calls;
  wxa::Result<wxa::CommitReport> report = rt_->publish();
  ASSERT_TRUE(Ok(report));
  // 200 tiny functions share a few pages, sealed in one commit.
  EXPECT_LE(heap_->stats().pages, 3u);
  EXPECT_LE(arena_->stats().protection_calls - calls_before,
            report->protection_calls);
  EXPECT_LE(report->protection_calls, 3u);
  for (int i = 0; i < kCount; ++i) {
    EXPECT_EQ(state_at(reinterpret_cast<const void*>(fns[i])),
              State::executable);
    EXPECT_EQ(fns[i](), i * 7) << i;
  }
  EXPECT_TRUE(audit_arena(*arena_));
  // Releases take effect, page by page, at the next publish.
  for (auto* fn : fns) EXPECT_EQ(rt_->release(fn), kErrorOk);
  EXPECT_EQ(state_at(reinterpret_cast<const void*>(fns[0])), State::executable);
  ASSERT_TRUE(Ok(rt_->publish()));
  EXPECT_EQ(heap_->stats().pages, 0u);
  EXPECT_EQ(arena_->stats().chunks_in(State::executable), 0u);
  EXPECT_TRUE(audit_arena(*arena_));
}

TEST_P(AsmjitAdapter, ReportsErrorsAsAsmjitErrors) {
  // Nothing assembled.
  CodeHolder empty;
  ASSERT_EQ(empty.init(rt_->environment()), kErrorOk);
  void* fn = &empty;
  EXPECT_EQ(rt_->_add(&fn, &empty), ::asmjit::kErrorNoCodeGenerated);
  EXPECT_EQ(fn, nullptr);

  // Larger than the whole arena.
  wxa::Options o = options(std::size_t{1} << 20);
  make(o);
  CodeHolder big;
  ASSERT_EQ(big.init(rt_->environment()), kErrorOk);
  x86::Assembler a(&big);
  for (int i = 0; i < (1 << 20) / 4 + 1; ++i) a.embedUInt32(0xCCCCCCCCu);
  fn = &big;
  EXPECT_EQ(rt_->_add(&fn, &big), ::asmjit::kErrorTooLarge);
  EXPECT_EQ(fn, nullptr);
  EXPECT_EQ(rt_->last_error().code(), Errc::size_too_large);
  // Still works afterwards, and no space was kept for the failures.
  auto* add3 = add<int(int, int, int)>(emit_add3);
  ASSERT_NE(add3, nullptr);
  EXPECT_EQ(add3(4, 5, 6), 15);
  EXPECT_EQ(heap_->stats().live_functions, 1u);
  EXPECT_TRUE(audit_arena(*arena_));
}

// wxa::Options{} as a user gets it (the automatic backend, a 1 GiB
// reservation, no anchor): functions with a jump table, a constant and a
// call to the host through asmjit's address table run from the arena.
TEST(AsmjitAdapterDefaults, DefaultOptionsRunCode) {
  wxa::Result<Arena> arena = Arena::create(wxa::Options{});
  ASSERT_TRUE(Ok(arena));
  wxa::Result<CodeHeap> heap = CodeHeap::create(*arena);
  ASSERT_TRUE(Ok(heap));
  wxa::asmjit::JitRuntime rt(*heap);
  auto add = [&rt](auto** fn, auto emit) {
    CodeHolder code;
    ASSERT_EQ(code.init(rt.environment()), kErrorOk);
    x86::Assembler a(&code);
    if constexpr (requires { emit(code, a); })
      emit(code, a);
    else
      emit(a);
    ASSERT_EQ(rt.add(fn, &code), kErrorOk) << rt.last_error().to_string();
  };
  int (*add3)(int, int, int) = nullptr;
  int (*call_host)(int) = nullptr;
  std::uint32_t (*lookup)(std::uint32_t) = nullptr;
  add(&add3, emit_add3);
  add(&call_host, emit_call_host);
  add(&lookup, emit_table);
  ASSERT_TRUE(add3 && call_host && lookup);
  EXPECT_EQ(add3(1, 20, 300), 321);
  EXPECT_EQ(call_host(20), 41);
  EXPECT_EQ(lookup(3), 1007u);
  EXPECT_EQ(arena->find(reinterpret_cast<const void*>(add3))->state,
            State::executable);
  EXPECT_TRUE(audit_arena(*arena));
  EXPECT_TRUE(wxa::test::writable_and_executable().empty());
  EXPECT_EQ(rt.release(add3), kErrorOk);
  EXPECT_EQ(rt.release(call_host), kErrorOk);
  EXPECT_EQ(rt.release(lookup), kErrorOk);
  EXPECT_TRUE(audit_arena(*arena));
}

INSTANTIATE_TEST_SUITE_P(Backends, AsmjitAdapter,
                         ::testing::ValuesIn(wxa::test::kBothBackends),
                         wxa::test::backend_name);

}  // namespace

#endif  // __x86_64__
