// SPDX-License-Identifier: MIT
// Writes small, real AArch64 (AAPCS64) functions into a writable span, so
// tests can run code that actually landed in executable memory on AArch64.
//
// The same layout rule as x86_code.hpp: the entry is at offset 0, the
// instructions come first, and the rest up to the requested size is traps
// (`brk #0`, the word the library fills retired pages with; a tail shorter
// than a word is zero). Instructions are 32-bit little-endian words, so a
// function written here must start 4-byte aligned. Header-only, free of OS
// calls, and usable on any host: the encodings are checked on x86-64 too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace wxa::test::a64 {

/// `brk #0`: a breakpoint (SIGTRAP when run).
inline constexpr std::uint32_t brk0 = 0xD4200000;
/// `ret` (to x30).
inline constexpr std::uint32_t ret = 0xD65F03C0;

/// `movz w<rd>, #imm16, lsl #(16 * hw)`.
constexpr std::uint32_t movz_w(unsigned rd, std::uint16_t imm16,
                               unsigned hw = 0) noexcept {
  return 0x52800000U | ((hw & 1U) << 21) | (std::uint32_t{imm16} << 5) |
         (rd & 31U);
}
/// `movk w<rd>, #imm16, lsl #(16 * hw)`.
constexpr std::uint32_t movk_w(unsigned rd, std::uint16_t imm16,
                               unsigned hw = 0) noexcept {
  return 0x72800000U | ((hw & 1U) << 21) | (std::uint32_t{imm16} << 5) |
         (rd & 31U);
}
/// `add w<rd>, w<rn>, w<rm>` (shifted register, no shift).
constexpr std::uint32_t add_w(unsigned rd, unsigned rn, unsigned rm) noexcept {
  return 0x0B000000U | ((rm & 31U) << 16) | ((rn & 31U) << 5) | (rd & 31U);
}

/// `add w<rd>, w<rn>, #imm12`.
constexpr std::uint32_t add_w_imm(unsigned rd, unsigned rn,
                                  std::uint16_t imm12) noexcept {
  return 0x11000000U | ((std::uint32_t{imm12} & 0xFFFU) << 10) |
         ((rn & 31U) << 5) | (rd & 31U);
}
/// `stp x29, x30, [sp, #-16]!`: a frame record pushed.
inline constexpr std::uint32_t stp_fp_lr_pre = 0xA9BF7BFD;
/// `ldp x29, x30, [sp], #16`: and popped.
inline constexpr std::uint32_t ldp_fp_lr_post = 0xA8C17BFD;

/// True if `bl` at some address reaches that address + `byte_offset`:
/// word-aligned and within the signed 26-bit word offset (±128 MiB).
constexpr bool bl_reaches(std::int64_t byte_offset) noexcept {
  return byte_offset % 4 == 0 && byte_offset >= -(std::int64_t{1} << 27) &&
         byte_offset < (std::int64_t{1} << 27);
}
/// `bl <here + byte_offset>`; check bl_reaches() first.
constexpr std::uint32_t bl(std::int64_t byte_offset) noexcept {
  return 0x94000000U |
         (static_cast<std::uint32_t>(byte_offset / 4) & 0x03FFFFFFU);
}

/// Bytes of the function write_return_imm() writes (movz, movk, ret).
inline constexpr std::size_t return_imm_size = 12;
/// Bytes of the function write_add_args() writes (add, ret).
inline constexpr std::size_t add_args_size = 8;

/// The byte at `offset` of memory filled with traps by fill_traps() (and by
/// the library's trap fill of reused pages).
constexpr std::byte trap_byte_at(std::size_t offset) noexcept {
  return std::byte((brk0 >> (8 * (offset % 4))) & 0xFF);
}

/// Fills `out` with `brk #0` words, counting from out[0]; a tail shorter than
/// a word is zero.
inline void fill_traps(std::span<std::byte> out) noexcept {
  const std::size_t whole = out.size() / 4 * 4;
  for (std::size_t i = 0; i < whole; ++i) out[i] = trap_byte_at(i);
  for (std::size_t i = whole; i < out.size(); ++i) out[i] = std::byte{0};
}

namespace detail {
// Stores `words` little-endian at the start of `out` and pads with traps to
// `size` bytes (0: no padding). Returns the bytes written, or 0 if they do
// not fit or `size` is smaller than the code.
template <std::size_t N>
std::size_t emit(std::span<std::byte> out, const std::uint32_t (&words)[N],
                 std::size_t size) noexcept {
  const std::size_t code = N * 4;
  const std::size_t total = size == 0 ? code : size;
  if (total < code || total > out.size()) return 0;
  for (std::size_t w = 0; w < N; ++w)
    for (std::size_t b = 0; b < 4; ++b)
      out[4 * w + b] = std::byte((words[w] >> (8 * b)) & 0xFF);
  fill_traps(out.subspan(code, total - code));
  return total;
}
}  // namespace detail

/// Writes `unsigned f()` returning `value`:
///   movz w0, #(value & 0xffff)
///   movk w0, #(value >> 16), lsl #16
///   ret
///   brk #0 ...   up to `size` bytes
/// `size` 0 means the minimal 12 bytes. Returns the bytes written (== size if
/// non-zero), or 0 if `size` is non-zero and below 12, or `out` is too small.
inline std::size_t write_return_imm(std::span<std::byte> out,
                                    std::uint32_t value,
                                    std::size_t size = 0) noexcept {
  const std::uint32_t code[] = {
      movz_w(0, static_cast<std::uint16_t>(value & 0xFFFF)),
      movk_w(0, static_cast<std::uint16_t>(value >> 16), 1),
      ret,
  };
  return detail::emit(out, code, size);
}

/// Writes `int f(int a, int b)` returning a + b (wrapping):
///   add w0, w0, w1
///   ret
///   brk #0 ...   up to `size` bytes
/// Same `size` and return rules as write_return_imm (minimal: 8 bytes).
inline std::size_t write_add_args(std::span<std::byte> out,
                                  std::size_t size = 0) noexcept {
  const std::uint32_t code[] = {add_w(0, 0, 1), ret};
  return detail::emit(out, code, size);
}

}  // namespace wxa::test::a64
