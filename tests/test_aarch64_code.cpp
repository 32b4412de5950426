// SPDX-License-Identifier: MIT
// aarch64_code.hpp's encodings, checked against words from the GNU
// disassembler (aarch64-linux-gnu-objdump), on every host: a wrong encoding
// shows here, not as a SIGILL under qemu.
#include <gtest/gtest.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "support/aarch64_code.hpp"

namespace wxa::test::a64 {
namespace {

TEST(Aarch64Code, EncodingsMatchTheDisassembler) {
  EXPECT_EQ(movz_w(0, 0x1234), 0x52824680u);     // mov w0, #0x1234
  EXPECT_EQ(movz_w(0, 42), 0x52800540u);         // mov w0, #0x2a
  EXPECT_EQ(movk_w(0, 0x5678, 1), 0x72AACF00u);  // movk w0, #0x5678, lsl #16
  EXPECT_EQ(ret, 0xD65F03C0u);
  EXPECT_EQ(add_w(0, 0, 1), 0x0B010000u);      // add w0, w0, w1
  EXPECT_EQ(add_w_imm(0, 0, 1), 0x11000400u);  // add w0, w0, #0x1
  EXPECT_EQ(brk0, 0xD4200000u);
  EXPECT_EQ(stp_fp_lr_pre, 0xA9BF7BFDu);   // stp x29, x30, [sp, #-16]!
  EXPECT_EQ(ldp_fp_lr_post, 0xA8C17BFDu);  // ldp x29, x30, [sp], #16
  EXPECT_EQ(bl(-8), 0x97FFFFFEu);
  EXPECT_EQ(bl((std::int64_t{1} << 27) - 4), 0x95FFFFFFu);
  EXPECT_EQ(bl(-(std::int64_t{1} << 27)), 0x96000000u);
}

TEST(Aarch64Code, BlReachesOnlyAlignedOffsetsWithin128MiB) {
  EXPECT_TRUE(bl_reaches(0));
  EXPECT_TRUE(bl_reaches((std::int64_t{1} << 27) - 4));
  EXPECT_TRUE(bl_reaches(-(std::int64_t{1} << 27)));
  EXPECT_FALSE(bl_reaches(std::int64_t{1} << 27));
  EXPECT_FALSE(bl_reaches(-(std::int64_t{1} << 27) - 4));
  EXPECT_FALSE(bl_reaches(6));
}

// The words, little-endian, in the layout native_code.hpp promises: code at
// offset 0, brk #0 after it, a tail shorter than a word zero.
std::uint32_t word(const std::byte* p) {
  std::uint32_t w = 0;
  for (int b = 3; b >= 0; --b)
    w = (w << 8) | std::to_integer<std::uint32_t>(p[b]);
  return w;
}

TEST(Aarch64Code, ReturnImmIsMovzMovkRetThenTraps) {
  std::array<std::byte, 32> out{};
  ASSERT_EQ(write_return_imm(out, 0x56781234u, 22), 22u);
  EXPECT_EQ(word(&out[0]), 0x52824680u);
  EXPECT_EQ(word(&out[4]), 0x72AACF00u);
  EXPECT_EQ(word(&out[8]), ret);
  EXPECT_EQ(word(&out[12]), brk0);
  EXPECT_EQ(word(&out[16]), brk0);
  EXPECT_EQ(out[20], std::byte{0});
  EXPECT_EQ(out[21], std::byte{0});
  EXPECT_EQ(out[22], std::byte{0}) << "beyond `size`: untouched";
  EXPECT_EQ(write_return_imm(out, 1), return_imm_size);
  EXPECT_EQ(write_return_imm(out, 1, return_imm_size - 1), 0u);
  EXPECT_EQ(write_return_imm(std::span(out).first(8), 1), 0u);
}

TEST(Aarch64Code, AddArgsIsAddRet) {
  std::array<std::byte, 8> out{};
  ASSERT_EQ(write_add_args(out), add_args_size);
  EXPECT_EQ(word(&out[0]), 0x0B010000u);
  EXPECT_EQ(word(&out[4]), ret);
}

TEST(Aarch64Code, TrapBytesRepeatTheBrkWord) {
  std::array<std::byte, 10> out{};
  fill_traps(out);
  for (std::size_t i = 0; i < 8; ++i) EXPECT_EQ(out[i], trap_byte_at(i)) << i;
  EXPECT_EQ(word(&out[4]), brk0);
  EXPECT_EQ(trap_byte_at(3), std::byte{0xD4});
  EXPECT_EQ(out[8], std::byte{0});
  EXPECT_EQ(out[9], std::byte{0});
}

}  // namespace
}  // namespace wxa::test::a64
