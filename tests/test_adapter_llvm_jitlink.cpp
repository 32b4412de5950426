// SPDX-License-Identifier: MIT
// The LLVM 14 JITLink adapter: ORC's ObjectLinkingLayer links code,
// constants, globals and C++-style code through JitLinkMemoryManager into
// an arena on every backend, under strict W^X, and the manager's rules.
#include <gtest/gtest.h>
#include <llvm/ExecutionEngine/JITLink/EHFrameSupport.h>
#include <llvm/ExecutionEngine/JITLink/JITLink.h>
#include <llvm/ExecutionEngine/Orc/ExecutionUtils.h>
#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/ExecutionEngine/Orc/ObjectLinkingLayer.h>
#include <llvm/ExecutionEngine/Orc/Shared/WrapperFunctionUtils.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>
#include <llvm/IRReader/IRReader.h>
#include <llvm/Support/Host.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Support/SourceMgr.h>
#include <llvm/Support/TargetSelect.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "support/arena_util.hpp"
#include "support/backends.hpp"
#include "support/maps.hpp"
#include "wxarena/adapters/llvm_jitlink.hpp"
#include "wxarena/arena.hpp"

namespace {

using wxa::Arena;
using wxa::Backend;
using wxa::Errc;
using wxa::State;
using wxa::llvm::JitLinkMemoryManager;
using wxa::test::audit_arena;
using wxa::test::FailsWith;
using wxa::test::Ok;
namespace jitlink = llvm::jitlink;
namespace orc = llvm::orc;
using llvm::operator|;  // MemProt's (LLVM_MARK_AS_BITMASK_ENUM)

// Functions calling each other, a switch lowered to a table in read-only
// data, a double from the constant pool, a mutable global a function
// increments, a zero-initialised global, a struct returned by value and a
// C++ static local guarded by __cxa_guard_* (as clang emits it), all
// without exceptions. Typed pointers: LLVM 14's default.
constexpr char kModule[] = R"IR(
@counter = global i64 40
@hits = global i32 0
@_ZZ6cachedvE5value = internal global i64 0
@_ZGVZ6cachedvE5value = internal global i64 0

declare i32 @__cxa_guard_acquire(i64*)
declare void @__cxa_guard_release(i64*)

define i32 @square(i32 %x) noinline {
  %r = mul i32 %x, %x
  ret i32 %r
}

define i32 @sum_squares(i32 %n) noinline {
entry:
  br label %loop
loop:
  %i = phi i32 [ 1, %entry ], [ %next, %body ]
  %acc = phi i32 [ 0, %entry ], [ %sum, %body ]
  %done = icmp sgt i32 %i, %n
  br i1 %done, label %exit, label %body
body:
  %s = call i32 @square(i32 %i)
  %sum = add i32 %acc, %s
  %next = add i32 %i, 1
  br label %loop
exit:
  ret i32 %acc
}

define i32 @classify(i32 %x) noinline {
entry:
  switch i32 %x, label %other [
    i32 0, label %c0
    i32 1, label %c1
    i32 2, label %c2
    i32 3, label %c3
    i32 4, label %c4
    i32 5, label %c5
    i32 6, label %c6
    i32 7, label %c7
  ]
c0:
  %h0 = call i32 @square(i32 3)
  br label %out
c1:
  br label %out
c2:
  %h2 = call i32 @sum_squares(i32 2)
  br label %out
c3:
  br label %out
c4:
  br label %out
c5:
  %h5 = call i32 @square(i32 %x)
  br label %out
c6:
  br label %out
c7:
  br label %out
other:
  br label %out
out:
  %r = phi i32 [ %h0, %c0 ], [ 17, %c1 ], [ %h2, %c2 ], [ 31, %c3 ], [ 44, %c4 ], [ %h5, %c5 ], [ 63, %c6 ], [ 71, %c7 ], [ -1, %other ]
  ret i32 %r
}

define double @circle_area(double %r) noinline {
  %r2 = fmul double %r, %r
  %a = fmul double %r2, 3.14159265358979
  ret double %a
}

define i64 @bump(i64 %by) noinline {
  %old = load i64, i64* @counter
  %new = add i64 %old, %by
  store i64 %new, i64* @counter
  %h = load i32, i32* @hits
  %h1 = add i32 %h, 1
  store i32 %h1, i32* @hits
  ret i64 %new
}

define { i64, i64 } @divmod(i64 %a, i64 %b) noinline {
  %q = sdiv i64 %a, %b
  %m = srem i64 %a, %b
  %p0 = insertvalue { i64, i64 } undef, i64 %q, 0
  %p1 = insertvalue { i64, i64 } %p0, i64 %m, 1
  ret { i64, i64 } %p1
}

define i64 @_Z4seedv() noinline {
  %s = call i64 @bump(i64 2)
  ret i64 %s
}

define i64 @_Z6cachedv() noinline {
entry:
  %g = load atomic i8, i8* bitcast (i64* @_ZGVZ6cachedvE5value to i8*) acquire, align 8
  %fresh = icmp eq i8 %g, 0
  br i1 %fresh, label %check, label %done
check:
  %a = call i32 @__cxa_guard_acquire(i64* @_ZGVZ6cachedvE5value)
  %mine = icmp ne i32 %a, 0
  br i1 %mine, label %init, label %done
init:
  %v = call i64 @_Z4seedv()
  store i64 %v, i64* @_ZZ6cachedvE5value
  call void @__cxa_guard_release(i64* @_ZGVZ6cachedvE5value)
  br label %done
done:
  %r = load i64, i64* @_ZZ6cachedvE5value
  ret i64 %r
}
)IR";

struct DivMod {
  std::int64_t quotient, remainder;
};

std::string message(llvm::Error error) {
  return llvm::toString(std::move(error));
}

/// Success, or a failure with LLVM's message (consumes the error).
::testing::AssertionResult Succeeded(llvm::Error error) {
  if (!error) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << message(std::move(error));
}

/// An LLJIT whose object layer is JITLink on `memory` with EH frames
/// registered, resolving libc and libstdc++ from the process.
llvm::Expected<std::unique_ptr<orc::LLJIT>> make_jit(
    JitLinkMemoryManager& memory, bool read_only_sections = false) {
  auto jit =
      orc::LLJITBuilder()
          .setObjectLinkingLayerCreator(
              [&memory, read_only_sections](orc::ExecutionSession& es,
                                            const llvm::Triple&)
                  -> llvm::Expected<std::unique_ptr<orc::ObjectLayer>> {
                auto layer =
                    std::make_unique<orc::ObjectLinkingLayer>(es, memory);
                // As LLJIT's own JITLink layer does: the unwinder reads
                // the frames at their target address, in read-only data.
                layer->addPlugin(std::make_unique<
                                 orc::EHFrameRegistrationPlugin>(
                    es,
                    std::make_unique<jitlink::InProcessEHFrameRegistrar>()));
                if (read_only_sections)
                  layer->addPlugin(
                      std::make_unique<wxa::llvm::ReadOnlySectionsPlugin>());
                return layer;
              })
          .create();
  if (!jit) return jit.takeError();
  auto process = orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(
      (*jit)->getDataLayout().getGlobalPrefix());
  if (!process) return process.takeError();
  (*jit)->getMainJITDylib().addGenerator(std::move(*process));
  return jit;
}

llvm::Expected<orc::ThreadSafeModule> parse_module(const char* text) {
  auto context = std::make_unique<llvm::LLVMContext>();
  llvm::SMDiagnostic diagnostic;
  std::unique_ptr<llvm::Module> module =
      llvm::parseIR(llvm::MemoryBufferRef(text, "wxa_llvm_jitlink_test"),
                    diagnostic, *context);
  if (!module)
    return llvm::createStringError(std::errc::invalid_argument, "%s",
                                   diagnostic.getMessage().str().c_str());
  return orc::ThreadSafeModule(std::move(module), std::move(context));
}

class JitLinkAdapterTest : public ::testing::TestWithParam<Backend> {
 protected:
  static void SetUpTestSuite() {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  }

  void SetUp() override {
    WXA_SKIP_IF_UNAVAILABLE(GetParam());
    wxa::Options options;
    options.backend = GetParam();
    options.reserve_bytes = wxa::test::kSmallReserve;
    wxa::Result<Arena> arena = Arena::create(options);
    ASSERT_TRUE(Ok(arena));
    arena_.emplace(std::move(*arena));
    memory_.emplace(*arena_);
  }

  void TearDown() override {
    memory_.reset();
    if (arena_) {
      EXPECT_EQ(live_chunks(), 0u);
      EXPECT_TRUE(audit_arena(*arena_));
    }
  }

  /// The tracked state of the chunk holding `address`, or free if none.
  State state_at(const void* address) const {
    wxa::Result<wxa::ChunkInfo> info = arena_->find(address);
    return info ? info->state : State::free;
  }

  std::size_t live_chunks() const {
    const wxa::Stats s = arena_->stats();
    return s.chunks_in(State::writable) + s.chunks_in(State::executable) +
           s.chunks_in(State::read_only);
  }

  bool in_rw_range(const void* p) const {
    const auto rw = arena_->rw_range();
    const auto* b = static_cast<const std::byte*>(p);
    return b >= rw.data() && b < rw.data() + rw.size();
  }

  std::optional<Arena> arena_;
  std::optional<JitLinkMemoryManager> memory_;
};

template <class T>
T* pointer_to(const orc::ExecutorAddr& address) {
  return address.toPtr<T*>();
}

// The whole path: LLJIT compiles IR, JITLink lays it out in chunks from the
// manager, fixes it up through the writable views for the executable
// addresses, finalize seals; then the code runs, every kind of section has
// the state it must have, and removing the module gives every chunk back.
TEST_P(JitLinkAdapterTest, LljitRunsCodeTablesConstantsGlobalsAndCxx) {
  auto jit = make_jit(*memory_);
  ASSERT_TRUE(static_cast<bool>(jit)) << message(jit.takeError());
  auto module = parse_module(kModule);
  ASSERT_TRUE(static_cast<bool>(module)) << message(module.takeError());
  auto tracker = (*jit)->getMainJITDylib().createResourceTracker();
  ASSERT_TRUE(Succeeded((*jit)->addIRModule(tracker, std::move(*module))));

  const char* names[] = {"square",      "sum_squares", "classify",
                         "circle_area", "bump",        "divmod",
                         "_Z6cachedv",  "counter",     "hits"};
  constexpr std::size_t kNames = sizeof names / sizeof names[0];
  orc::ExecutorAddr addr[kNames];
  for (std::size_t i = 0; i < kNames; ++i) {
    auto symbol = (*jit)->lookup(names[i]);
    ASSERT_TRUE(static_cast<bool>(symbol))
        << names[i] << ": " << message(symbol.takeError());
    addr[i] = orc::ExecutorAddr(symbol->getAddress());
  }
  auto* square = pointer_to<std::int32_t(std::int32_t)>(addr[0]);
  auto* sum_squares = pointer_to<std::int32_t(std::int32_t)>(addr[1]);
  auto* classify = pointer_to<std::int32_t(std::int32_t)>(addr[2]);
  auto* circle_area = pointer_to<double(double)>(addr[3]);
  auto* bump = pointer_to<std::int64_t(std::int64_t)>(addr[4]);
  auto* divmod = pointer_to<DivMod(std::int64_t, std::int64_t)>(addr[5]);
  auto* cached = pointer_to<std::int64_t()>(addr[6]);
  auto* counter = pointer_to<std::int64_t>(addr[7]);
  auto* hits = pointer_to<std::int32_t>(addr[8]);

  EXPECT_EQ(square(-7), 49);
  EXPECT_EQ(sum_squares(4), 30);
  const std::int32_t classes[] = {9, 17, 5, 31, 44, 25, 63, 71, -1, -1};
  for (std::int32_t x = 0; x < 10; ++x) EXPECT_EQ(classify(x), classes[x]) << x;
  EXPECT_EQ(classify(-3), -1);
  EXPECT_DOUBLE_EQ(circle_area(2.0), 4.0 * 3.14159265358979);
  EXPECT_EQ(*hits, 0);  // zero-fill, zeroed
  EXPECT_EQ(bump(5), 45);
  EXPECT_EQ(bump(2), 47);
  EXPECT_EQ(*counter, 47);
  EXPECT_EQ(*hits, 2);
  *counter = 100;  // the host writes the global the JIT code uses
  EXPECT_EQ(bump(1), 101);
  const DivMod dm = divmod(47, 5);
  EXPECT_EQ(dm.quotient, 9);
  EXPECT_EQ(dm.remainder, 2);
  // The static local is initialised once, by seed() bumping the counter.
  EXPECT_EQ(cached(), 103);
  EXPECT_EQ(cached(), 103);
  EXPECT_EQ(*counter, 103);
  EXPECT_EQ(*hits, 4);

  // Code is executable at its address; the globals live in writable
  // chunks, at their writable view (rw_range(), which is range() only on
  // protect).
  for (std::size_t i = 0; i < 7; ++i)
    EXPECT_EQ(state_at(addr[i].toPtr<const void*>()), State::executable)
        << names[i];
  EXPECT_EQ(state_at(counter), State::writable);
  EXPECT_EQ(state_at(hits), State::writable);
  EXPECT_TRUE(in_rw_range(counter));
  EXPECT_TRUE(in_rw_range(hits));
  // One chunk per class. LLVM 14's ELF reader gives every section that is
  // not executable Read|Write (the jump table and the double constant
  // included), so this graph has no read-only segment: the hand-made
  // graphs below check Seal::read_only.
  const wxa::Stats stats = arena_->stats();
  EXPECT_EQ(stats.chunks_in(State::executable), 1u);
  EXPECT_LE(stats.chunks_in(State::read_only), 1u);
  EXPECT_EQ(stats.chunks_in(State::writable), 1u);
  const std::size_t chunks = live_chunks();
  EXPECT_EQ(memory_->live_allocations(), 1u);
  EXPECT_TRUE(audit_arena(*arena_));
  EXPECT_TRUE(wxa::test::writable_and_executable().empty());

  // Removing the module gives every chunk back: retired, unreachable.
  ASSERT_TRUE(Succeeded(tracker->remove()));
  EXPECT_EQ(memory_->live_allocations(), 0u);
  EXPECT_EQ(live_chunks(), 0u);
  EXPECT_EQ(arena_->stats().chunks_in(State::retired), chunks);
  EXPECT_TRUE(FailsWith(arena_->find(addr[0].toPtr<const void*>()),
                        Errc::not_allocated));
  // The data's writable view is in no live chunk either (on kernel_write
  // a retired chunk's staging memory belongs to none: foreign_pointer).
  wxa::Result<wxa::ChunkInfo> data = arena_->find(counter);
  ASSERT_FALSE(Ok(data));
  EXPECT_TRUE(data.error().code() == Errc::not_allocated ||
              data.error().code() == Errc::foreign_pointer)
      << data.error().to_string();
  EXPECT_TRUE(audit_arena(*arena_));
}

// Several modules, each its own allocation; destroying the JIT deallocates
// all of them.
TEST_P(JitLinkAdapterTest, ManyModulesAndJitDestructionReleaseEverything) {
  {
    auto jit = make_jit(*memory_);
    ASSERT_TRUE(static_cast<bool>(jit)) << message(jit.takeError());
    for (int m = 0; m < 8; ++m) {
      const std::string text = "@g" + std::to_string(m) + " = global i32 " +
                               std::to_string(m) + "\ndefine i32 @f" +
                               std::to_string(m) + "() {\n  %v = load i32, " +
                               "i32* @g" + std::to_string(m) +
                               "\n  %r = mul i32 %v, 11\n  ret i32 %r\n}\n";
      auto module = parse_module(text.c_str());
      ASSERT_TRUE(static_cast<bool>(module)) << message(module.takeError());
      ASSERT_TRUE(Succeeded((*jit)->addIRModule(std::move(*module))));
    }
    for (int m = 0; m < 8; ++m) {
      // Appended rather than "f" + std::to_string(m): at -O3 GCC 12 warns
      // (-Wrestrict, a false positive) inside the prepending string insert.
      std::string name = "f";
      name += std::to_string(m);
      auto symbol = (*jit)->lookup(name);
      ASSERT_TRUE(static_cast<bool>(symbol)) << message(symbol.takeError());
      const orc::ExecutorAddr a(symbol->getAddress());
      EXPECT_EQ(a.toPtr<std::int32_t (*)()>()(), m * 11);
      EXPECT_EQ(state_at(a.toPtr<const void*>()), State::executable);
    }
    EXPECT_EQ(memory_->live_allocations(), 8u);
    EXPECT_TRUE(audit_arena(*arena_));
    EXPECT_TRUE(wxa::test::writable_and_executable().empty());
  }
  EXPECT_EQ(memory_->live_allocations(), 0u);
  EXPECT_EQ(live_chunks(), 0u);
}

// --- The manager's rules, driven with hand-made link graphs ---------------

std::unique_ptr<jitlink::LinkGraph> make_graph() {
  return std::make_unique<jitlink::LinkGraph>(
      "wxa_graph", llvm::Triple(llvm::sys::getProcessTriple()), 8,
      llvm::support::endian::system_endianness(),
      jitlink::getGenericEdgeKindName);
}

// What the finalize and dealloc actions saw.
struct ActionLog {
  const Arena* arena = nullptr;
  int finalized = 0, deallocated = 0;
  State state_at_finalize = State::free;
  State state_at_dealloc = State::free;
};
ActionLog g_log;

State logged_state(orc::ExecutorAddr a) {
  wxa::Result<wxa::ChunkInfo> info = g_log.arena->find(a.toPtr<void*>());
  return info ? info->state : State::free;
}

orc::shared::CWrapperFunctionResult on_finalize(const char* data,
                                                std::size_t size) {
  using namespace orc::shared;
  return WrapperFunction<SPSError(SPSExecutorAddr)>::handle(
             data, size,
             [](orc::ExecutorAddr a) -> llvm::Error {
               ++g_log.finalized;
               g_log.state_at_finalize = logged_state(a);
               return llvm::Error::success();
             })
      .release();
}

orc::shared::CWrapperFunctionResult on_dealloc(const char* data,
                                               std::size_t size) {
  using namespace orc::shared;
  return WrapperFunction<SPSError(SPSExecutorAddr)>::handle(
             data, size,
             [](orc::ExecutorAddr a) -> llvm::Error {
               ++g_log.deallocated;
               g_log.state_at_dealloc = logged_state(a);
               return llvm::Error::success();
             })
      .release();
}

orc::shared::WrapperFunctionCall call_of(
    orc::shared::CWrapperFunctionResult (*fn)(const char*, std::size_t),
    orc::ExecutorAddr argument) {
  using namespace orc::shared;
  return llvm::cantFail(
      WrapperFunctionCall::Create<SPSArgList<SPSExecutorAddr>>(
          orc::ExecutorAddr::fromPtr(fn), argument));
}

// Each segment class gets its chunk, working memory in the writable view,
// target addresses as the header's table says; zero-fill is zeroed;
// finalize seals in one commit and runs the finalize action on sealed
// memory; deallocate runs the dealloc action, then retires everything.
TEST_P(JitLinkAdapterTest, SegmentsGetChunksByClassAndActionsRun) {
  auto graph = make_graph();
  using jitlink::MemProt;
  auto& text = graph->createSection("text", MemProt::Read | MemProt::Exec);
  auto& rodata = graph->createSection("rodata", MemProt::Read);
  auto& data = graph->createSection("data", MemProt::Read | MemProt::Write);
  auto& bss = graph->createSection("bss", MemProt::Read | MemProt::Write);
  static const char code[] = {'\xB8', 0x2A, 0x00, 0x00, 0x00, '\xC3'};
  static const char constant[] = "constant";
  static const std::int64_t initial = 42;
  auto& code_block = graph->createContentBlock(text, {code, sizeof code},
                                               orc::ExecutorAddr(), 16, 0);
  auto& ro_block = graph->createContentBlock(
      rodata, {constant, sizeof constant}, orc::ExecutorAddr(), 8, 0);
  auto& data_block = graph->createContentBlock(
      data, {reinterpret_cast<const char*>(&initial), sizeof initial},
      orc::ExecutorAddr(), 8, 0);
  const std::size_t page = arena_->page_size();
  auto& bss_block =
      graph->createZeroFillBlock(bss, page + 24, orc::ExecutorAddr(), 64, 0);

  const wxa::Stats before = arena_->stats();
  auto alloc = memory_->allocate(nullptr, *graph);
  ASSERT_TRUE(static_cast<bool>(alloc)) << message(alloc.takeError());
  // Code, read-only and read-write data: three writable chunks so far.
  EXPECT_EQ(arena_->stats().chunks_in(State::writable), 3u);
  EXPECT_EQ(arena_->stats().allocations, before.allocations + 3);
  const auto code_at = code_block.getAddress();
  const auto ro_at = ro_block.getAddress();
  const auto data_at = data_block.getAddress();
  const auto bss_at = bss_block.getAddress();
  // Working memory holds the content, in the writable view of the chunk
  // that runs at the target address.
  wxa::Result<wxa::ChunkInfo> code_chunk = arena_->find(code_at.toPtr<void*>());
  ASSERT_TRUE(Ok(code_chunk));
  EXPECT_EQ(code_block.getContent().data(),
            reinterpret_cast<const char*>(code_chunk->chunk.rw().data() +
                                          code_chunk->offset));
  EXPECT_EQ(std::memcmp(code_block.getContent().data(), code, sizeof code), 0);
  EXPECT_EQ(code_at.getValue() % 16, 0u);
  EXPECT_EQ(bss_at.getValue() % 64, 0u);
  // Read-write data runs where it is written.
  EXPECT_EQ(data_block.getContent().data(), data_at.toPtr<const char*>());
  EXPECT_TRUE(in_rw_range(data_at.toPtr<void*>()));
  EXPECT_EQ(arena_->find(data_at.toPtr<void*>())->chunk.rx(),
            arena_->find(bss_at.toPtr<void*>())->chunk.rx());
  const auto* zeros = bss_at.toPtr<const unsigned char*>();
  for (std::size_t i = 0; i < page + 24; ++i)
    ASSERT_EQ(zeros[i], 0u) << "zero-fill byte " << i;

  g_log = {};
  g_log.arena = &*arena_;
  graph->allocActions().push_back(
      {call_of(on_finalize, code_at), call_of(on_dealloc, code_at)});
  const std::uint64_t commits = arena_->stats().commits;
  auto finalized = (*alloc)->finalize();
  ASSERT_TRUE(static_cast<bool>(finalized)) << message(finalized.takeError());
  EXPECT_EQ(arena_->stats().commits, commits + 1);
  EXPECT_EQ(g_log.finalized, 1);
  EXPECT_EQ(g_log.state_at_finalize, State::executable);
  EXPECT_EQ(g_log.deallocated, 0);

  EXPECT_EQ(state_at(code_at.toPtr<void*>()), State::executable);
  EXPECT_EQ(state_at(ro_at.toPtr<void*>()), State::read_only);
  EXPECT_EQ(state_at(data_at.toPtr<void*>()), State::writable);
  EXPECT_EQ(wxa::test::call(code_at.toPtr<void*>()), 42u);
  EXPECT_STREQ(ro_at.toPtr<const char*>(), "constant");
  auto* value = data_at.toPtr<std::int64_t*>();
  EXPECT_EQ(*value, 42);
  *value = 43;
  EXPECT_EQ(memory_->live_allocations(), 1u);
  EXPECT_TRUE(audit_arena(*arena_));
  EXPECT_TRUE(wxa::test::writable_and_executable().empty());

  ASSERT_TRUE(Succeeded(memory_->deallocate(std::move(*finalized))));
  EXPECT_EQ(g_log.deallocated, 1);
  EXPECT_EQ(g_log.state_at_dealloc, State::executable);  // before retiring
  EXPECT_EQ(live_chunks(), 0u);
  EXPECT_EQ(memory_->live_allocations(), 0u);
}

// A segment asking for write and execute is refused; nothing is allocated.
TEST_P(JitLinkAdapterTest, RefusesWritableAndExecutableSegments) {
  auto graph = make_graph();
  using jitlink::MemProt;
  static const char code[] = {'\xC3'};
  graph->createContentBlock(
      graph->createSection("text", MemProt::Read | MemProt::Exec), {code, 1},
      orc::ExecutorAddr(), 1, 0);
  graph->createContentBlock(
      graph->createSection("rwx",
                           MemProt::Read | MemProt::Write | MemProt::Exec),
      {code, 1}, orc::ExecutorAddr(), 1, 0);
  const wxa::Stats before = arena_->stats();
  auto alloc = memory_->allocate(nullptr, *graph);
  ASSERT_FALSE(static_cast<bool>(alloc));
  llvm::Error e = alloc.takeError();
  const std::error_code code_of = llvm::errorToErrorCode(std::move(e));
  EXPECT_EQ(code_of, wxa::llvm::make_error_code(Errc::permission_denied));
  EXPECT_EQ(code_of.message(), wxa::to_string(Errc::permission_denied));
  EXPECT_EQ(arena_->stats().allocations, before.allocations);
}

// deallocate() of an allocation it never made is refused, not followed.
TEST_P(JitLinkAdapterTest, RefusesToDeallocateAForeignAllocation) {
  int stranger = 0;
  llvm::Error e = memory_->deallocate(JitLinkMemoryManager::FinalizedAlloc(
      orc::ExecutorAddr::fromPtr(&stranger)));
  ASSERT_TRUE(static_cast<bool>(e));
  EXPECT_EQ(llvm::errorToErrorCode(std::move(e)),
            wxa::llvm::make_error_code(Errc::invalid_argument));
  EXPECT_EQ(stranger, 0);
}

// Abandoning, or dropping an allocation never finalized, retires it.
TEST_P(JitLinkAdapterTest, AbandonAndDropRetireTheChunks) {
  using jitlink::MemProt;
  static const char code[] = {'\xC3'};
  for (bool abandon : {true, false}) {
    auto graph = make_graph();
    graph->createContentBlock(
        graph->createSection("text", MemProt::Read | MemProt::Exec), {code, 1},
        orc::ExecutorAddr(), 1, 0);
    graph->createZeroFillBlock(
        graph->createSection("bss", MemProt::Read | MemProt::Write), 100,
        orc::ExecutorAddr(), 8, 0);
    auto alloc = memory_->allocate(nullptr, *graph);
    ASSERT_TRUE(static_cast<bool>(alloc)) << message(alloc.takeError());
    EXPECT_EQ(live_chunks(), 2u);
    if (abandon) {
      std::optional<llvm::Error> result;
      (*alloc)->abandon([&](llvm::Error e) { result.emplace(std::move(e)); });
      ASSERT_TRUE(result.has_value());
      EXPECT_TRUE(Succeeded(std::move(*result)));
      EXPECT_EQ(live_chunks(), 0u);
    }
    alloc->reset();
    EXPECT_EQ(live_chunks(), 0u) << (abandon ? "abandon" : "drop");
  }
  EXPECT_EQ(memory_->live_allocations(), 0u);
}

// A failing finalize action fails the finalization and retires the chunks.
TEST_P(JitLinkAdapterTest, FailedFinalizeActionRetiresEverything) {
  using jitlink::MemProt;
  static const char code[] = {'\xC3'};
  auto graph = make_graph();
  auto& block = graph->createContentBlock(
      graph->createSection("text", MemProt::Read | MemProt::Exec), {code, 1},
      orc::ExecutorAddr(), 1, 0);
  auto alloc = memory_->allocate(nullptr, *graph);
  ASSERT_TRUE(static_cast<bool>(alloc)) << message(alloc.takeError());
  using namespace orc::shared;
  static auto fails = [](const char* d, std::size_t n) {
    return WrapperFunction<SPSError(SPSExecutorAddr)>::handle(
               d, n,
               [](orc::ExecutorAddr) -> llvm::Error {
                 return llvm::createStringError(std::errc::io_error,
                                                "refused by the test");
               })
        .release();
  };
  CWrapperFunctionResult (*fn)(const char*, std::size_t) = fails;
  graph->allocActions().push_back(
      {llvm::cantFail(WrapperFunctionCall::Create<SPSArgList<SPSExecutorAddr>>(
           orc::ExecutorAddr::fromPtr(fn), block.getAddress())),
       WrapperFunctionCall()});
  auto finalized = (*alloc)->finalize();
  ASSERT_FALSE(static_cast<bool>(finalized));
  EXPECT_NE(message(finalized.takeError()).find("refused by the test"),
            std::string::npos);
  EXPECT_EQ(live_chunks(), 0u);
  EXPECT_EQ(memory_->live_allocations(), 0u);
}

// Allocations never deallocated are retired by the manager's destructor.
TEST_P(JitLinkAdapterTest, DestructorRetiresWhatWasNotDeallocated) {
  using jitlink::MemProt;
  static const char code[] = {'\xC3'};
  for (int i = 0; i < 3; ++i) {
    auto graph = make_graph();
    graph->createContentBlock(
        graph->createSection("text", MemProt::Read | MemProt::Exec), {code, 1},
        orc::ExecutorAddr(), 1, 0);
    graph->createZeroFillBlock(
        graph->createSection("bss", MemProt::Read | MemProt::Write), 8,
        orc::ExecutorAddr(), 8, 0);
    auto alloc = memory_->allocate(nullptr, *graph);
    ASSERT_TRUE(static_cast<bool>(alloc)) << message(alloc.takeError());
    auto finalized = (*alloc)->finalize();
    ASSERT_TRUE(static_cast<bool>(finalized)) << message(finalized.takeError());
    (void)finalized->release();  // dropped without deallocate()
  }
  EXPECT_EQ(memory_->live_allocations(), 3u);
  EXPECT_EQ(live_chunks(), 6u);
  const std::uint64_t commits = arena_->stats().commits;
  memory_.reset();
  EXPECT_EQ(live_chunks(), 0u);
  EXPECT_EQ(arena_->stats().commits, commits + 1);
}

// An allocation the arena cannot hold fails with wxarena's error, and the
// chunk taken for its other segment is given back. (The arena stays usable,
// but the retired chunk, which may be the whole reservation, waits in
// quarantine.)
TEST_P(JitLinkAdapterTest, ArenaRefusalBecomesAnLlvmErrorAndTakesNothing) {
  using jitlink::MemProt;
  static const char code[] = {'\xC3'};
  const std::size_t page = arena_->page_size();
  for (std::size_t bytes :
       {arena_->range().size() + page, arena_->range().size() - page / 2}) {
    auto graph = make_graph();
    graph->createContentBlock(
        graph->createSection("text", MemProt::Read | MemProt::Exec), {code, 1},
        orc::ExecutorAddr(), 1, 0);
    graph->createZeroFillBlock(
        graph->createSection("bss", MemProt::Read | MemProt::Write), bytes,
        orc::ExecutorAddr(), 8, 0);
    auto alloc = memory_->allocate(nullptr, *graph);
    ASSERT_FALSE(static_cast<bool>(alloc)) << bytes;
    const std::string text = message(alloc.takeError());
    EXPECT_EQ(text.rfind("wxarena: ", 0), 0u) << text;
    EXPECT_TRUE(text.find(wxa::to_string(Errc::size_too_large)) !=
                    std::string::npos ||
                text.find(wxa::to_string(Errc::exhausted)) != std::string::npos)
        << text;
    EXPECT_EQ(live_chunks(), 0u) << bytes;
  }
  // The second graph's segments fit one at a time but not together: the
  // first chunk was taken and given back (retired).
  EXPECT_EQ(arena_->stats().chunks_in(State::retired), 1u);
  EXPECT_EQ(memory_->live_allocations(), 0u);
}

// One manager serves JITs on several threads at once.
TEST_P(JitLinkAdapterTest, ThreadsShareOneManager) {
  constexpr int kThreads = 2, kModules = 4;
  std::string errors[kThreads];
  int sums[kThreads] = {};
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        auto jit = make_jit(*memory_);
        if (!jit) {
          errors[t] = message(jit.takeError());
          return;
        }
        for (int m = 0; m < kModules; ++m) {
          const int k = t * 100 + m;
          const std::string text = "@v = global i32 " + std::to_string(k) +
                                   "\ndefine i32 @get() {\n  %r = load i32, "
                                   "i32* @v\n  ret i32 %r\n}\n";
          auto module = parse_module(text.c_str());
          if (!module) {
            errors[t] = message(module.takeError());
            return;
          }
          std::string name = "m";  // appended: see above
          name += std::to_string(m);
          auto dylib = (*jit)->createJITDylib(name);
          if (!dylib) {
            errors[t] = message(dylib.takeError());
            return;
          }
          if (llvm::Error e = (*jit)->addIRModule(*dylib, std::move(*module))) {
            errors[t] = message(std::move(e));
            return;
          }
          auto symbol = (*jit)->lookup(*dylib, "get");
          if (!symbol) {
            errors[t] = message(symbol.takeError());
            return;
          }
          sums[t] += orc::ExecutorAddr(symbol->getAddress())
                         .toPtr<std::int32_t (*)()>()();
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
  }
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(errors[t], "") << t;
    EXPECT_EQ(sums[t], t * 100 * kModules + 0 + 1 + 2 + 3) << t;
  }
  EXPECT_EQ(memory_->live_allocations(), 0u);
  EXPECT_EQ(live_chunks(), 0u);
}

// --- Default options, and reach ----------------------------------------------

// What a C compiler emits for string constants (private, in .rodata.str,
// which LLVM 14's ELF reader gives Read|Write, so read-write data), a
// table of pointers to them (.data.rel.ro), and a mutable global: each
// reached from code with 32-bit PC-relative fixups.
constexpr char kStrings[] = R"IR(
@.str = private unnamed_addr constant [14 x i8] c"hello, reach\0A\00", align 1
@.str.1 = private unnamed_addr constant [6 x i8] c"other\00", align 1
@names = internal constant [2 x i8*] [i8* getelementptr ([14 x i8], [14 x i8]* @.str, i64 0, i64 0), i8* getelementptr ([6 x i8], [6 x i8]* @.str.1, i64 0, i64 0)]
@calls = global i64 0

declare i64 @strlen(i8*)

define i8* @name_of(i32 %i) noinline {
  %n = load i64, i64* @calls
  %n1 = add i64 %n, 1
  store i64 %n1, i64* @calls
  %x = sext i32 %i to i64
  %p = getelementptr [2 x i8*], [2 x i8*]* @names, i64 0, i64 %x
  %s = load i8*, i8** %p
  ret i8* %s
}

define i64 @greeting_length() noinline {
  %l = call i64 @strlen(i8* getelementptr ([14 x i8], [14 x i8]* @.str, i64 0, i64 0))
  ret i64 %l
}
)IR";

// wxa::Options{} as a user gets it (Backend::automatic), and with each
// backend forced but everything else default (a 1 GiB reservation): real
// IR with code, strings, constants and globals links and runs, and every
// address of the allocation lies within the 2 GiB that x86-64's 32-bit
// PC-relative fixups reach. (With kernel_write's staging placed anywhere
// this failed as a JITLink "out of range of Delta32 fixup".)
class JitLinkDefaultOptionsTest : public ::testing::TestWithParam<Backend> {
 protected:
  static void SetUpTestSuite() {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  }
};

TEST_P(JitLinkDefaultOptionsTest, RealIrLinksRunsAndStaysInReach) {
  wxa::Options options;  // as a user gets it
  if (GetParam() != Backend::automatic) {
    WXA_SKIP_IF_UNAVAILABLE(GetParam());
    options.backend = GetParam();
  }
  wxa::Result<Arena> arena = Arena::create(options);
  ASSERT_TRUE(Ok(arena));
  EXPECT_EQ(arena->range().size(), wxa::Options{}.reserve_bytes);
  JitLinkMemoryManager memory(*arena);
  {
    auto jit = make_jit(memory);
    ASSERT_TRUE(static_cast<bool>(jit)) << message(jit.takeError());
    for (const char* text : {kModule, kStrings}) {
      auto module = parse_module(text);
      ASSERT_TRUE(static_cast<bool>(module)) << message(module.takeError());
      ASSERT_TRUE(Succeeded((*jit)->addIRModule(std::move(*module))));
    }
    std::uintptr_t lo = UINTPTR_MAX, hi = 0;
    auto note = [&](const void* p) {
      lo = std::min(lo, reinterpret_cast<std::uintptr_t>(p));
      hi = std::max(hi, reinterpret_cast<std::uintptr_t>(p));
    };
    auto find = [&](const char* name) -> void* {
      auto symbol = (*jit)->lookup(name);
      if (!symbol) {
        ADD_FAILURE() << name << ": " << message(symbol.takeError());
        return nullptr;
      }
      return orc::ExecutorAddr(symbol->getAddress()).toPtr<void*>();
    };
    auto* name_of =
        reinterpret_cast<const char* (*)(std::int32_t)>(find("name_of"));
    auto* length =
        reinterpret_cast<std::int64_t (*)()>(find("greeting_length"));
    auto* bump = reinterpret_cast<std::int64_t (*)(std::int64_t)>(find("bump"));
    auto* counter = static_cast<std::int64_t*>(find("counter"));
    auto* calls = static_cast<std::int64_t*>(find("calls"));
    ASSERT_TRUE(name_of && length && bump && counter && calls);
    EXPECT_EQ(std::string(name_of(0)), "hello, reach\n");
    EXPECT_EQ(std::string(name_of(1)), "other");
    EXPECT_EQ(length(), 13);
    EXPECT_EQ(*calls, 2);
    EXPECT_EQ(bump(2), 42);
    EXPECT_EQ(*counter, 42);
    for (const void* p :
         {reinterpret_cast<const void*>(name_of),
          reinterpret_cast<const void*>(length),
          reinterpret_cast<const void*>(bump),
          static_cast<const void*>(name_of(0)),
          static_cast<const void*>(counter), static_cast<const void*>(calls)})
      note(p);
    EXPECT_LT(hi - lo, std::uintptr_t{1} << 31)
        << "code and data of the JIT's modules lie out of rel32 reach";
    EXPECT_EQ(arena->find(counter)->state, State::writable);
    EXPECT_EQ(arena->find(reinterpret_cast<const void*>(bump))->state,
              State::executable);
    EXPECT_TRUE(audit_arena(*arena));
    EXPECT_TRUE(wxa::test::writable_and_executable().empty());
  }
  EXPECT_EQ(memory.live_allocations(), 0u);
}

// LLVM 14's ELF reader makes string literals, constant tables and unwind
// tables Read|Write; with ReadOnlySectionsPlugin they are sealed read-only
// (and the code still runs). Without it they stay writable.
TEST_P(JitLinkDefaultOptionsTest, ReadOnlySectionsPluginSealsConstants) {
  wxa::Options options;
  if (GetParam() != Backend::automatic) {
    WXA_SKIP_IF_UNAVAILABLE(GetParam());
    options.backend = GetParam();
  }
  wxa::Result<Arena> arena = Arena::create(options);
  ASSERT_TRUE(Ok(arena));
  JitLinkMemoryManager memory(*arena);
  for (bool plugin : {false, true}) {
    auto jit = make_jit(memory, plugin);
    ASSERT_TRUE(static_cast<bool>(jit)) << message(jit.takeError());
    auto module = parse_module(kStrings);
    ASSERT_TRUE(static_cast<bool>(module)) << message(module.takeError());
    ASSERT_TRUE(Succeeded((*jit)->addIRModule(std::move(*module))));
    auto symbol = (*jit)->lookup("name_of");
    ASSERT_TRUE(static_cast<bool>(symbol)) << message(symbol.takeError());
    auto* name_of = orc::ExecutorAddr(symbol->getAddress())
                        .toPtr<const char* (*)(std::int32_t)>();
    const char* hello = name_of(0);
    EXPECT_EQ(std::string(hello), "hello, reach\n");
    EXPECT_EQ(std::string(name_of(1)), "other");
    wxa::Result<wxa::ChunkInfo> info = arena->find(hello);
    ASSERT_TRUE(Ok(info));
    EXPECT_EQ(info->state, plugin ? State::read_only : State::writable);
    EXPECT_TRUE(audit_arena(*arena));
  }
  using Plugin = wxa::llvm::ReadOnlySectionsPlugin;
  for (const char* name : {".rodata", ".rodata.str1.1", ".rodata.cst16",
                           ".data.rel.ro", ".data.rel.ro.local", ".eh_frame",
                           ".gcc_except_table", ".gcc_except_table._Z1fv"})
    EXPECT_TRUE(Plugin::read_only(name)) << name;
  for (const char* name : {".data", ".bss", ".rodatax", ".data.rel",
                           ".data.rel.local", ".text", ".eh_frame_hdrx", ""})
    EXPECT_FALSE(Plugin::read_only(name)) << name;
}

INSTANTIATE_TEST_SUITE_P(Backends, JitLinkDefaultOptionsTest,
                         ::testing::Values(Backend::automatic, Backend::protect,
                                           Backend::dual_map,
                                           Backend::kernel_write),
                         wxa::test::backend_name);

// With a reservation of 3 GiB the writable views (dual_map) and the staging
// (kernel_write) lie a reservation away from the code, out of reach: the
// allocation is refused by the manager, with a message that names the
// reach and the fix, instead of a JITLink fixup error; nothing stays
// allocated. On protect an allocation's chunks are adjacent: it links.
TEST_P(JitLinkAdapterTest, OutOfReachIsRefusedNamingTheReachAndTheFix) {
  if (llvm::Triple(llvm::sys::getProcessTriple()).getArch() !=
      llvm::Triple::x86_64)
    GTEST_SKIP() << "the layout below is out of reach on x86-64 only";
  wxa::Options options;
  options.backend = GetParam();
  options.reserve_bytes = std::size_t{3} << 30;
  wxa::Result<Arena> arena = Arena::create(options);
  ASSERT_TRUE(Ok(arena));
  JitLinkMemoryManager memory(*arena);
  auto jit = make_jit(memory);
  ASSERT_TRUE(static_cast<bool>(jit)) << message(jit.takeError());
  // The link's own error goes to the session's reporter; the lookup gets
  // "failed to materialize".
  std::string text;
  (*jit)->getExecutionSession().setErrorReporter(
      [&text](llvm::Error e) { text += message(std::move(e)); });
  auto module = parse_module(kStrings);
  ASSERT_TRUE(static_cast<bool>(module)) << message(module.takeError());
  ASSERT_TRUE(Succeeded((*jit)->addIRModule(std::move(*module))));
  auto symbol = (*jit)->lookup("greeting_length");
  if (GetParam() == Backend::protect) {
    ASSERT_TRUE(static_cast<bool>(symbol)) << message(symbol.takeError());
    EXPECT_EQ(
        orc::ExecutorAddr(symbol->getAddress()).toPtr<std::int64_t (*)()>()(),
        13);
    return;
  }
  ASSERT_FALSE(static_cast<bool>(symbol));
  EXPECT_NE(message(symbol.takeError()).find("materialize"), std::string::npos);
  EXPECT_NE(text.find("wxarena: the segments of"), std::string::npos) << text;
  EXPECT_NE(text.find("2 GiB"), std::string::npos) << text;
  EXPECT_NE(text.find("reserve_bytes"), std::string::npos) << text;
  EXPECT_EQ(text.find("out of range"), std::string::npos) << text;
  EXPECT_EQ(memory.live_allocations(), 0u);
  const wxa::Stats s = arena->stats();
  EXPECT_EQ(s.chunks_in(State::writable) + s.chunks_in(State::executable) +
                s.chunks_in(State::read_only),
            0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, JitLinkAdapterTest,
                         ::testing::Values(Backend::protect, Backend::dual_map,
                                           Backend::kernel_write),
                         wxa::test::backend_name);

}  // namespace
