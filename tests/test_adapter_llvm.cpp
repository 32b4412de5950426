// SPDX-License-Identifier: MIT
// The LLVM 14 adapter: ORC LLJIT links code, constants and globals through
// LlvmMemoryMapper into an arena, under strict W^X, and the mapper's rules.
#include <gtest/gtest.h>
#include <llvm/ExecutionEngine/Orc/ExecutionUtils.h>
#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/ExecutionEngine/Orc/RTDyldObjectLinkingLayer.h>
#include <llvm/ExecutionEngine/SectionMemoryManager.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>
#include <llvm/IRReader/IRReader.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Support/SourceMgr.h>
#include <llvm/Support/TargetSelect.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "support/arena_util.hpp"
#include "support/backends.hpp"
#include "support/maps.hpp"
#include "support/x86_code.hpp"
#include "wxarena/adapters/llvm.hpp"
#include "wxarena/arena.hpp"

namespace {

using wxa::Arena;
using wxa::Backend;
using wxa::Errc;
using wxa::State;
using LlvmMemoryMapper = wxa::llvm::MemoryMapper;
using wxa::test::audit_arena;
using wxa::test::FailsWith;
using wxa::test::Ok;
using Purpose = LlvmMemoryMapper::Purpose;
using llvm::sys::Memory;

constexpr unsigned kR = Memory::MF_READ;
constexpr unsigned kRW = Memory::MF_READ | Memory::MF_WRITE;
constexpr unsigned kRX = Memory::MF_READ | Memory::MF_EXEC;
constexpr unsigned kRWX = Memory::MF_READ | Memory::MF_WRITE | Memory::MF_EXEC;

// A function, a constant table it reads, a mutable global a function
// increments, and two calls into libc. Typed pointers: LLVM 14's default.
constexpr char kModule[] = R"IR(
@primes = private unnamed_addr constant [8 x i32] [i32 2, i32 3, i32 5, i32 7, i32 11, i32 13, i32 17, i32 19]
@counter = global i64 40

declare i64 @strlen(i8*)
declare i32 @abs(i32)

define i32 @prime(i32 %i) {
  %p = getelementptr inbounds [8 x i32], [8 x i32]* @primes, i32 0, i32 %i
  %v = load i32, i32* %p
  ret i32 %v
}

define i32* @primes_address() {
  ret i32* getelementptr inbounds ([8 x i32], [8 x i32]* @primes, i32 0, i32 0)
}

define i32 @sum_primes(i32 %n) {
entry:
  br label %loop
loop:
  %i = phi i32 [ 0, %entry ], [ %next, %body ]
  %acc = phi i32 [ 0, %entry ], [ %sum, %body ]
  %done = icmp sge i32 %i, %n
  br i1 %done, label %exit, label %body
body:
  %v = call i32 @prime(i32 %i)
  %sum = add i32 %acc, %v
  %next = add i32 %i, 1
  br label %loop
exit:
  ret i32 %acc
}

define i64 @bump(i64 %by) {
  %old = load i64, i64* @counter
  %new = add i64 %old, %by
  store i64 %new, i64* @counter
  ret i64 %new
}

define i64 @length(i8* %s) {
  %n = call i64 @strlen(i8* %s)
  ret i64 %n
}

define i32 @magnitude(i32 %x) {
  %r = call i32 @abs(i32 %x)
  ret i32 %r
}
)IR";

std::string message(llvm::Error error) {
  return llvm::toString(std::move(error));
}

/// Success, or a failure with LLVM's message (consumes the error).
::testing::AssertionResult Succeeded(llvm::Error error) {
  if (!error) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << message(std::move(error));
}

/// An LLJIT whose object layer is RuntimeDyld with a SectionMemoryManager
/// per object, all on `mapper`, and which resolves libc from the process.
llvm::Expected<std::unique_ptr<llvm::orc::LLJIT>> make_jit(
    LlvmMemoryMapper& mapper) {
  auto jit =
      llvm::orc::LLJITBuilder()
          .setObjectLinkingLayerCreator(
              [&mapper](llvm::orc::ExecutionSession& es, const llvm::Triple&)
                  -> llvm::Expected<std::unique_ptr<llvm::orc::ObjectLayer>> {
                return std::make_unique<llvm::orc::RTDyldObjectLinkingLayer>(
                    es, [&mapper] {
                      return std::make_unique<llvm::SectionMemoryManager>(
                          &mapper);
                    });
              })
          .create();
  if (!jit) return jit.takeError();
  auto process = llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(
      (*jit)->getDataLayout().getGlobalPrefix());
  if (!process) return process.takeError();
  (*jit)->getMainJITDylib().addGenerator(std::move(*process));
  return jit;
}

llvm::Expected<llvm::orc::ThreadSafeModule> parse_module(const char* text) {
  auto context = std::make_unique<llvm::LLVMContext>();
  llvm::SMDiagnostic diagnostic;
  std::unique_ptr<llvm::Module> module = llvm::parseIR(
      llvm::MemoryBufferRef(text, "wxa_llvm_test"), diagnostic, *context);
  if (!module)
    return llvm::createStringError(std::errc::invalid_argument, "%s",
                                   diagnostic.getMessage().str().c_str());
  return llvm::orc::ThreadSafeModule(std::move(module), std::move(context));
}

class LlvmAdapterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  }

  void SetUp() override {
    // SectionMemoryManager writes where it executes: Backend::protect only.
    WXA_SKIP_IF_UNAVAILABLE(Backend::protect);
    wxa::Options options;
    options.backend = Backend::protect;
    options.reserve_bytes = wxa::test::kSmallReserve;
    wxa::Result<Arena> arena = Arena::create(options);
    ASSERT_TRUE(Ok(arena));
    arena_.emplace(std::move(*arena));
    mapper_.emplace(*arena_);
  }

  void TearDown() override {
    mapper_.reset();
    if (arena_) {
      EXPECT_TRUE(audit_arena(*arena_));
    }
  }

  /// The tracked state of the chunk holding `address`, or free if none.
  State state_at(const void* address) const {
    wxa::Result<wxa::ChunkInfo> info = arena_->find(address);
    return info ? info->state : State::free;
  }

  std::optional<Arena> arena_;
  std::optional<LlvmMemoryMapper> mapper_;
};

template <class Fn>
Fn* function_at(std::uint64_t address) {
  return reinterpret_cast<Fn*>(static_cast<std::uintptr_t>(address));
}

// The whole path: LLJIT compiles IR, RuntimeDyld links it into blocks the
// mapper took from the arena, SectionMemoryManager seals them at finalize;
// then the code runs, and each kind of section has the state it must have.
TEST_F(LlvmAdapterTest, LljitRunsCodeConstantsGlobalsAndLibcCalls) {
  auto jit = make_jit(*mapper_);
  ASSERT_TRUE(static_cast<bool>(jit)) << message(jit.takeError());
  auto module = parse_module(kModule);
  ASSERT_TRUE(static_cast<bool>(module)) << message(module.takeError());
  auto tracker = (*jit)->getMainJITDylib().createResourceTracker();
  ASSERT_TRUE(Succeeded((*jit)->addIRModule(tracker, std::move(*module))));

  std::uint64_t addr[7] = {};
  const char* names[7] = {"prime",  "primes_address", "sum_primes", "bump",
                          "length", "magnitude",      "counter"};
  for (int i = 0; i < 7; ++i) {
    auto symbol = (*jit)->lookup(names[i]);
    ASSERT_TRUE(static_cast<bool>(symbol))
        << names[i] << ": " << message(symbol.takeError());
    addr[i] = symbol->getAddress();
  }
  auto* prime = function_at<std::int32_t(std::int32_t)>(addr[0]);
  auto* primes_address = function_at<const std::int32_t*()>(addr[1]);
  auto* sum_primes = function_at<std::int32_t(std::int32_t)>(addr[2]);
  auto* bump = function_at<std::int64_t(std::int64_t)>(addr[3]);
  auto* length = function_at<std::int64_t(const char*)>(addr[4]);
  auto* magnitude = function_at<std::int32_t(std::int32_t)>(addr[5]);
  auto* counter = reinterpret_cast<std::int64_t*>(addr[6]);

  // Run them.
  const std::int32_t primes[8] = {2, 3, 5, 7, 11, 13, 17, 19};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(prime(i), primes[i]) << i;
  EXPECT_EQ(sum_primes(8), 77);
  EXPECT_EQ(primes_address()[3], 7);
  EXPECT_EQ(bump(5), 45);
  EXPECT_EQ(bump(2), 47);
  EXPECT_EQ(*counter, 47);
  *counter = 100;  // the host writes the global the JIT code uses
  EXPECT_EQ(bump(1), 101);
  EXPECT_EQ(length("hello, wxarena"), 14);
  EXPECT_EQ(magnitude(-42), 42);

  // Every section is in the arena, in the state its kind demands.
  for (std::uint64_t a : addr)
    EXPECT_TRUE(Ok(arena_->find(reinterpret_cast<const void*>(a))));
  EXPECT_EQ(state_at(reinterpret_cast<const void*>(addr[0])),
            State::executable);
  EXPECT_EQ(state_at(reinterpret_cast<const void*>(addr[5])),
            State::executable);
  EXPECT_EQ(state_at(primes_address()), State::read_only);
  EXPECT_EQ(state_at(counter), State::writable);
  // Read-only data really is: in no view of the arena is it writable, and
  // the kernel agrees (audit_arena compares every page with the state map).
  EXPECT_TRUE(audit_arena(*arena_));
  EXPECT_TRUE(wxa::test::writable_and_executable().empty());
  const wxa::Stats stats = arena_->stats();
  EXPECT_GE(stats.chunks_in(State::executable), 1u);
  EXPECT_GE(stats.chunks_in(State::read_only), 1u);
  EXPECT_GE(stats.chunks_in(State::writable), 1u);
  EXPECT_EQ(mapper_->blocks(), stats.chunks_in(State::executable) +
                                   stats.chunks_in(State::read_only) +
                                   stats.chunks_in(State::writable));

  // Removing the module gives every block back: retired, unreachable.
  ASSERT_TRUE(Succeeded(tracker->remove()));
  EXPECT_EQ(mapper_->blocks(), 0u);
  EXPECT_TRUE(FailsWith(arena_->find(reinterpret_cast<const void*>(addr[0])),
                        Errc::not_allocated));
  EXPECT_TRUE(FailsWith(arena_->find(counter), Errc::not_allocated));
  EXPECT_EQ(arena_->stats().chunks_in(State::executable), 0u);
  EXPECT_TRUE(audit_arena(*arena_));
}

// Several modules, each linked by its own SectionMemoryManager: each gets
// fresh blocks, and the JIT's destruction releases all of them.
TEST_F(LlvmAdapterTest, ManyModulesAndJitDestructionReleaseEverything) {
  {
    auto jit = make_jit(*mapper_);
    ASSERT_TRUE(static_cast<bool>(jit)) << message(jit.takeError());
    for (int m = 0; m < 8; ++m) {
      const std::string text = "define i32 @f" + std::to_string(m) +
                               "() {\n  ret i32 " + std::to_string(m * 11) +
                               "\n}\n";
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
      EXPECT_EQ(function_at<std::int32_t()>(symbol->getAddress())(), m * 11);
      EXPECT_EQ(state_at(reinterpret_cast<const void*>(symbol->getAddress())),
                State::executable);
    }
    EXPECT_GE(mapper_->blocks(), 8u);
    EXPECT_TRUE(audit_arena(*arena_));
  }
  EXPECT_EQ(mapper_->blocks(), 0u);
  EXPECT_EQ(arena_->stats().chunks_in(State::executable), 0u);
}

// --- The mapper's rules, driven directly ---------------------------------

TEST_F(LlvmAdapterTest, RefusesToAllocateWritableAndExecutable) {
  const wxa::Stats before = arena_->stats();
  std::error_code ec;
  llvm::sys::MemoryBlock block =
      mapper_->allocateMappedMemory(Purpose::Code, 4096, nullptr, kRWX, ec);
  EXPECT_EQ(ec, std::errc::permission_denied) << ec.message();
  EXPECT_EQ(block.base(), nullptr);
  EXPECT_EQ(mapper_->last_error().code(), Errc::permission_denied);
  // Data asked for executable at once is refused too, and nothing was made.
  block =
      mapper_->allocateMappedMemory(Purpose::ROData, 4096, nullptr, kRX, ec);
  EXPECT_EQ(ec, std::errc::permission_denied);
  EXPECT_EQ(arena_->stats().allocations, before.allocations);
  EXPECT_EQ(mapper_->blocks(), 0u);
}

TEST_F(LlvmAdapterTest, BlocksArePageMultiplesAndWritable) {
  std::error_code ec;
  llvm::sys::MemoryBlock block =
      mapper_->allocateMappedMemory(Purpose::RWData, 100, nullptr, kRW, ec);
  ASSERT_FALSE(ec) << ec.message();
  const std::size_t page = arena_->page_size();
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(block.base()) % page, 0u);
  EXPECT_EQ(block.allocatedSize(), page);
  EXPECT_EQ(state_at(block.base()), State::writable);
  static_cast<char*>(block.base())[99] = 'x';
  EXPECT_FALSE(mapper_->releaseMappedMemory(block));
  EXPECT_EQ(block.base(), nullptr);
}

TEST_F(LlvmAdapterTest, DataNeverBecomesExecutable) {
  for (Purpose purpose : {Purpose::RWData, Purpose::ROData}) {
    std::error_code ec;
    llvm::sys::MemoryBlock block =
        mapper_->allocateMappedMemory(purpose, 256, nullptr, kRW, ec);
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_EQ(mapper_->protectMappedMemory(block, kRX),
              std::errc::permission_denied);
    EXPECT_EQ(mapper_->protectMappedMemory(block, Memory::MF_EXEC),
              std::errc::permission_denied);
    EXPECT_EQ(state_at(block.base()), State::writable);
    // Read-only is allowed, and back to writable.
    EXPECT_FALSE(mapper_->protectMappedMemory(block, kR));
    EXPECT_EQ(state_at(block.base()), State::read_only);
    EXPECT_EQ(mapper_->protectMappedMemory(block, kRX),
              std::errc::permission_denied);
    EXPECT_EQ(state_at(block.base()), State::read_only);
    EXPECT_FALSE(mapper_->protectMappedMemory(block, kRW));
    EXPECT_EQ(state_at(block.base()), State::writable);
    EXPECT_FALSE(mapper_->releaseMappedMemory(block));
  }
}

// SectionMemoryManager protects page-unaligned sub-ranges; the whole chunk
// follows. Code is never writable and executable: RW after RX unseals.
TEST_F(LlvmAdapterTest, UnalignedSubRangeSealsTheWholeCodeBlock) {
  const std::size_t page = arena_->page_size();
  std::error_code ec;
  llvm::sys::MemoryBlock block = mapper_->allocateMappedMemory(
      Purpose::Code, 2 * page + 100, nullptr, kRW, ec);
  ASSERT_FALSE(ec) << ec.message();
  ASSERT_EQ(block.allocatedSize(), 3 * page);
  auto* base = static_cast<std::byte*>(block.base());
  ASSERT_NE(wxa::test::write_return_imm({base + 64, 16}, 1234), 0u);

  const llvm::sys::MemoryBlock used(base + 17, page + 5);
  EXPECT_FALSE(mapper_->protectMappedMemory(used, kRX));
  for (std::size_t p = 0; p < 3; ++p)
    EXPECT_EQ(state_at(base + p * page), State::executable) << p;
  EXPECT_EQ(wxa::test::call(base + 64), 1234u);
  EXPECT_TRUE(audit_arena(*arena_));

  // Asking for write and execute is refused and changes nothing.
  EXPECT_EQ(mapper_->protectMappedMemory(used, kRWX),
            std::errc::permission_denied);
  EXPECT_EQ(state_at(base), State::executable);
  // Patching: RW unseals (not executable meanwhile), RX seals again.
  EXPECT_FALSE(mapper_->protectMappedMemory(used, kRW));
  EXPECT_EQ(state_at(base), State::writable);
  EXPECT_TRUE(audit_arena(*arena_));
  ASSERT_NE(wxa::test::write_return_imm({base + 64, 16}, 5678), 0u);
  EXPECT_FALSE(mapper_->protectMappedMemory(used, kRX));
  EXPECT_EQ(wxa::test::call(base + 64), 5678u);
  // Code may be made read-only, and executable again.
  EXPECT_FALSE(mapper_->protectMappedMemory(used, kR));
  EXPECT_EQ(state_at(base), State::read_only);
  EXPECT_FALSE(mapper_->protectMappedMemory(used, kRX));
  EXPECT_EQ(state_at(base), State::executable);
  // A zero-sized range is a no-op, as mprotect of nothing would be.
  EXPECT_FALSE(mapper_->protectMappedMemory({base + 5, 0}, kRW));
  EXPECT_EQ(state_at(base), State::executable);
  EXPECT_FALSE(mapper_->releaseMappedMemory(block));
}

TEST_F(LlvmAdapterTest, RefusesForeignCrossingAndAccessLessRanges) {
  const std::size_t page = arena_->page_size();
  std::error_code ec;
  llvm::sys::MemoryBlock block =
      mapper_->allocateMappedMemory(Purpose::Code, page, nullptr, kRW, ec);
  ASSERT_FALSE(ec) << ec.message();
  auto* base = static_cast<std::byte*>(block.base());

  char on_stack[64];
  EXPECT_EQ(mapper_->protectMappedMemory({on_stack, sizeof on_stack}, kRX),
            std::errc::invalid_argument);
  EXPECT_EQ(mapper_->protectMappedMemory({base + 8, page}, kRX),
            std::errc::invalid_argument);
  EXPECT_EQ(mapper_->protectMappedMemory(block, 0),
            std::errc::operation_not_supported);
  EXPECT_EQ(state_at(base), State::writable);

  // A chunk of the arena that the mapper did not hand out is not its own.
  wxa::Result<wxa::Chunk> other = arena_->allocate(page);
  ASSERT_TRUE(Ok(other));
  llvm::sys::MemoryBlock stranger(other->rw().data(), page);
  EXPECT_EQ(mapper_->protectMappedMemory(stranger, kRX),
            std::errc::invalid_argument);
  EXPECT_EQ(mapper_->releaseMappedMemory(stranger),
            std::errc::invalid_argument);
  EXPECT_EQ(state_at(other->rx()), State::writable);
  EXPECT_TRUE(Ok(arena_->release(*other)));

  // Releasing twice: the second is refused (the block is no longer known).
  llvm::sys::MemoryBlock copy = block;
  EXPECT_FALSE(mapper_->releaseMappedMemory(block));
  EXPECT_EQ(mapper_->releaseMappedMemory(copy), std::errc::invalid_argument);
}

TEST_F(LlvmAdapterTest, DestructorReleasesWhatLlvmDidNotRelease) {
  std::error_code ec;
  llvm::sys::MemoryBlock block =
      mapper_->allocateMappedMemory(Purpose::Code, 64, nullptr, kRW, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_FALSE(mapper_->protectMappedMemory(block, kRX));
  mapper_.reset();
  EXPECT_TRUE(FailsWith(arena_->find(block.base()), Errc::not_allocated));
  EXPECT_EQ(arena_->stats().chunks_in(State::executable), 0u);
}

// wxa::Options{} as a user gets it, and with Backend::protect forced but
// everything else default (a 1 GiB reservation): on protect the program
// links and runs, every section within the 2 GiB that x86-64's small code
// model reaches; on the backends that write code elsewhere (what automatic
// picks where memfds may be executable) MemoryMapper::check() refuses the
// arena before a JIT is built (RuntimeDyld would end the process on the
// first refused section).
TEST(LlvmAdapterDefaults, DefaultOptionsRunOnProtectAndAreRefusedElsewhere) {
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  std::vector<wxa::Options> cases(1);  // Options{}
  if (wxa::test::unavailable_reason(Backend::protect) == nullptr) {
    cases.emplace_back();
    cases.back().backend = Backend::protect;
  }
  for (const wxa::Options& options : cases) {
    wxa::Result<Arena> arena = Arena::create(options);
    ASSERT_TRUE(Ok(arena));
    SCOPED_TRACE(std::string(wxa::to_string(arena->backend())));
    EXPECT_EQ(arena->range().size(), wxa::Options{}.reserve_bytes);
    if (arena->backend() != Backend::protect) {
      EXPECT_TRUE(
          FailsWith(LlvmMemoryMapper::check(*arena), Errc::not_supported));
      continue;
    }
    ASSERT_TRUE(Ok(LlvmMemoryMapper::check(*arena)));
    LlvmMemoryMapper mapper(*arena);
    auto jit = make_jit(mapper);
    ASSERT_TRUE(static_cast<bool>(jit)) << message(jit.takeError());
    auto module = parse_module(kModule);
    ASSERT_TRUE(static_cast<bool>(module)) << message(module.takeError());
    ASSERT_TRUE(Succeeded((*jit)->addIRModule(std::move(*module))));
    auto prime = (*jit)->lookup("prime");
    auto counter = (*jit)->lookup("counter");
    auto length = (*jit)->lookup("length");
    ASSERT_TRUE(prime && counter && length);
    auto* p = function_at<std::int32_t(std::int32_t)>(prime->getAddress());
    auto* c = reinterpret_cast<std::int64_t*>(counter->getAddress());
    auto* l = function_at<std::int64_t(const char*)>(length->getAddress());
    EXPECT_EQ(p(7), 19);
    EXPECT_EQ(*c, 40);
    EXPECT_EQ(l("defaults"), 8);
    const std::uint64_t a[3] = {prime->getAddress(), counter->getAddress(),
                                length->getAddress()};
    EXPECT_LT(*std::max_element(a, a + 3) - *std::min_element(a, a + 3),
              std::uint64_t{1} << 31);
    EXPECT_TRUE(audit_arena(*arena));
    EXPECT_TRUE(wxa::test::writable_and_executable().empty());
    jit->reset();  // before the mapper
  }
}

class LlvmAdapterRefuses : public ::testing::TestWithParam<Backend> {};

// Both memfd backends run code at an address other than where it was
// written (dual_map's view, kernel_write's staging memory).
TEST_P(LlvmAdapterRefuses, ArenasWhereCodeIsWrittenElsewhere) {
  WXA_SKIP_IF_UNAVAILABLE(GetParam());
  wxa::Options options;
  options.backend = GetParam();
  options.reserve_bytes = wxa::test::kSmallReserve;
  wxa::Result<Arena> arena = Arena::create(options);
  ASSERT_TRUE(Ok(arena));
  LlvmMemoryMapper mapper(*arena);
  std::error_code ec;
  llvm::sys::MemoryBlock block =
      mapper.allocateMappedMemory(Purpose::Code, 64, nullptr, kRW, ec);
  EXPECT_EQ(ec, std::errc::operation_not_supported);
  EXPECT_EQ(ec.category().name(), std::string("wxarena"));
  EXPECT_EQ(ec.message(), wxa::to_string(Errc::not_supported));
  EXPECT_EQ(block.base(), nullptr);
  EXPECT_EQ(arena->stats().allocations, 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, LlvmAdapterRefuses,
                         ::testing::Values(Backend::dual_map,
                                           Backend::kernel_write),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return std::string(wxa::to_string(info.param));
                         });

}  // namespace
