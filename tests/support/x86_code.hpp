// SPDX-License-Identifier: MIT
// Writes small, real x86-64 functions (System V, or Win64 on Windows) into a
// writable span, so tests can run code that actually landed in executable
// memory.
//
// Layout rule for every writer here: the function's entry is at offset 0, the
// instructions come first, and any bytes after the final `ret` up to the
// requested size are int3 (0xCC). So every byte is meaningful: a jump or fall
// into the padding traps (SIGTRAP) instead of running whatever was there.
// Header-only and free of OS calls; usable from programs without gtest.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace wxa::test {

inline constexpr std::byte x86_int3{0xCC};
inline constexpr std::byte x86_ret{0xC3};
inline constexpr std::byte x86_nop{0x90};

/// Bytes of the smallest function write_return_imm() writes.
inline constexpr std::size_t return_imm_size = 6;
/// Bytes of the smallest function write_add_args() writes.
inline constexpr std::size_t add_args_size = 4;

/// Fills `out` with int3.
inline void fill_traps(std::span<std::byte> out) noexcept {
  for (std::byte& b : out) b = x86_int3;
}

namespace x86_detail {
// Copies `code` to the start of `out` and pads with int3 to `size` bytes (0:
// no padding). Returns the bytes written, or 0 if they do not fit or `size`
// is smaller than the code.
inline std::size_t emit(std::span<std::byte> out,
                        std::span<const std::byte> code,
                        std::size_t size) noexcept {
  const std::size_t total = size == 0 ? code.size() : size;
  if (total < code.size() || total > out.size()) return 0;
  for (std::size_t i = 0; i < code.size(); ++i) out[i] = code[i];
  fill_traps(out.subspan(code.size(), total - code.size()));
  return total;
}
}  // namespace x86_detail

/// Writes `unsigned f()` returning `value`:
///   B8 imm32   mov eax, value
///   C3         ret
///   CC ...     int3 up to `size` bytes
/// `size` 0 means the minimal 6 bytes. Returns the bytes written (== size if
/// non-zero), or 0 if `size` is non-zero and below 6, or `out` is too small.
inline std::size_t write_return_imm(std::span<std::byte> out,
                                    std::uint32_t value,
                                    std::size_t size = 0) noexcept {
  const std::byte code[return_imm_size] = {
      std::byte{0xB8},
      std::byte(value & 0xFF),
      std::byte((value >> 8) & 0xFF),
      std::byte((value >> 16) & 0xFF),
      std::byte((value >> 24) & 0xFF),
      x86_ret,
  };
  return x86_detail::emit(out, code, size);
}

/// Writes `int f(int a, int b)` returning a + b (wrapping), in this
/// platform's C calling convention:
///   8D 04 37   lea eax, [rdi + rsi]   System V (a in rdi, b in rsi)
///   8D 04 11   lea eax, [rcx + rdx]   Win64 (a in rcx, b in rdx)
///   C3         ret
///   CC ...     int3 up to `size` bytes
/// Same `size` and return rules as write_return_imm (minimal: 4 bytes).
inline std::size_t write_add_args(std::span<std::byte> out,
                                  std::size_t size = 0) noexcept {
#ifdef _WIN32
  constexpr std::byte modrm_sib{0x11};
#else
  constexpr std::byte modrm_sib{0x37};
#endif
  const std::byte code[add_args_size] = {
      std::byte{0x8D},
      std::byte{0x04},
      modrm_sib,
      x86_ret,
  };
  return x86_detail::emit(out, code, size);
}

}  // namespace wxa::test
