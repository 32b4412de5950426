// SPDX-License-Identifier: MIT
// Self-test of x86_code.hpp: Capstone disassembles what the writers produce,
// and the code runs from a memfd mapped executable (allowed by every policy).

#include <capstone/capstone.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "support/backends.hpp"
#include "support/x86_code.hpp"

namespace wxa::test {
namespace {

struct Insn {
  std::string text;  // "mnemonic operands"
  std::size_t size;
};

// Disassembles all of `code` (stops early only if Capstone does).
std::vector<Insn> disassemble(std::span<const std::byte> code) {
  csh handle = 0;
  EXPECT_EQ(cs_open(CS_ARCH_X86, CS_MODE_64, &handle), CS_ERR_OK);
  cs_insn* insns = nullptr;
  const std::size_t n =
      cs_disasm(handle, reinterpret_cast<const std::uint8_t*>(code.data()),
                code.size(), 0x1000, 0, &insns);
  std::vector<Insn> out;
  for (std::size_t i = 0; i < n; ++i) {
    std::string text = insns[i].mnemonic;
    if (insns[i].op_str[0] != '\0') text += std::string(" ") + insns[i].op_str;
    out.push_back({text, insns[i].size});
  }
  cs_free(insns, n);
  EXPECT_EQ(cs_close(&handle), CS_ERR_OK);
  return out;
}

std::vector<std::string> texts(const std::vector<Insn>& insns) {
  std::vector<std::string> out;
  for (const Insn& i : insns) out.push_back(i.text);
  return out;
}

TEST(X86Code, ReturnImmMinimalIsMovRet) {
  std::array<std::byte, 16> buf{};
  ASSERT_EQ(write_return_imm(buf, 0xDEADBEEF), return_imm_size);
  EXPECT_EQ(texts(disassemble(std::span(buf).first(return_imm_size))),
            (std::vector<std::string>{"mov eax, 0xdeadbeef", "ret"}));
}

TEST(X86Code, ReturnImmPadsWithInt3ToTheExactSize) {
  std::array<std::byte, 64> buf{};
  buf.fill(std::byte{0x55});
  ASSERT_EQ(write_return_imm(buf, 7, 9), 9u);
  const std::vector<Insn> insns = disassemble(std::span(buf).first(9));
  EXPECT_EQ(texts(insns), (std::vector<std::string>{"mov eax, 7", "ret", "int3",
                                                    "int3", "int3"}));
  EXPECT_EQ(buf[9], std::byte{0x55}) << "wrote past the requested size";
}

TEST(X86Code, AddArgsIsLeaRet) {
  std::array<std::byte, 8> buf{};
  ASSERT_EQ(write_add_args(buf, 8), 8u);
  EXPECT_EQ(texts(disassemble(buf)),
            (std::vector<std::string>{"lea eax, [rdi + rsi]", "ret", "int3",
                                      "int3", "int3", "int3"}));
}

TEST(X86Code, RefusesSizesThatDoNotFit) {
  std::array<std::byte, 8> buf{};
  EXPECT_EQ(write_return_imm(buf, 1, 5), 0u);  // below the code
  EXPECT_EQ(write_return_imm(buf, 1, 9), 0u);  // beyond the span
  EXPECT_EQ(write_return_imm(std::span(buf).first(5), 1), 0u);
  EXPECT_EQ(write_add_args(std::span(buf).first(3)), 0u);
  EXPECT_EQ(buf, (std::array<std::byte, 8>{})) << "a refusal wrote bytes";
}

// Code in a memfd written through a shared RW view and run through a second
// view mapped read+execute from the start: no mapping is ever W+X, and no
// anonymous memory gains PROT_EXEC, so this works under every policy.
class MemfdCode {
 public:
  MemfdCode() {
    fd_ = static_cast<int>(syscall(SYS_memfd_create, "x86_code_test", 1u));
    if (fd_ < 0) return;
    if (ftruncate(fd_, static_cast<off_t>(size_)) != 0) return;
    void* rw = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (rw == MAP_FAILED) return;
    rw_ = static_cast<std::byte*>(rw);
    void* rx = mmap(nullptr, size_, PROT_READ | PROT_EXEC, MAP_SHARED, fd_, 0);
    if (rx != MAP_FAILED) rx_ = rx;
  }
  MemfdCode(const MemfdCode&) = delete;
  MemfdCode& operator=(const MemfdCode&) = delete;
  ~MemfdCode() {
    if (rx_ != nullptr) {
      EXPECT_EQ(munmap(rx_, size_), 0);
    }
    if (rw_ != nullptr) {
      EXPECT_EQ(munmap(rw_, size_), 0);
    }
    if (fd_ >= 0) {
      EXPECT_EQ(close(fd_), 0);
    }
  }
  [[nodiscard]] bool ok() const noexcept { return rx_ != nullptr; }
  [[nodiscard]] std::span<std::byte> rw() const noexcept {
    return {rw_, size_};
  }
  template <class Fn>
  [[nodiscard]] Fn* entry() const noexcept {
    return reinterpret_cast<Fn*>(rx_);
  }

 private:
  std::size_t size_ = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  int fd_ = -1;
  std::byte* rw_ = nullptr;
  void* rx_ = nullptr;
};

TEST(X86Code, GeneratedFunctionsRun) {
  if (!host().shared_exec)
    GTEST_SKIP() << "this host refuses to map a memfd PROT_EXEC (probe: "
                    "shared_exec), so generated code cannot be run here";
  MemfdCode code;
  ASSERT_TRUE(code.ok()) << "memfd views: " << std::strerror(errno);
  fill_traps(code.rw());
  ASSERT_NE(write_return_imm(code.rw(), 0x12345678, 64), 0u);
  EXPECT_EQ(code.entry<unsigned()>()(), 0x12345678u);
  ASSERT_NE(write_add_args(code.rw()), 0u);
  EXPECT_EQ(code.entry<int(int, int)>()(40, 2), 42);
  EXPECT_EQ(code.entry<int(int, int)>()(-5, 3), -2);
}

}  // namespace
}  // namespace wxa::test
