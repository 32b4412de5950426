// SPDX-License-Identifier: MIT
// Real x86-64 functions of an exact size for the benchmarks: `mov eax, imm32;
// ret` followed by int3 padding, copied from a template like a JIT copies
// its assembler buffer, so the whole size is written every time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace wxb {

/// The signature of every generated function.
using GeneratedFn = std::uint32_t();

class CodeTemplate {
 public:
  /// Shortest function: B8 imm32 (mov eax, imm32), C3 (ret).
  static constexpr std::size_t min_size = 6;

  explicit CodeTemplate(std::size_t max_size)
      : bytes_(max_size < min_size ? min_size : max_size,
               std::byte{0xCC}) {  // int3
    bytes_[0] = std::byte{0xB8};
    bytes_[5] = std::byte{0xC3};
  }

  [[nodiscard]] std::size_t max_size() const noexcept { return bytes_.size(); }

  /// Writes a function of exactly `size` bytes (min_size <= size <=
  /// max_size()) at `dst` that returns `value`.
  void write(std::byte* dst, std::size_t size,
             std::uint32_t value) const noexcept {
    std::memcpy(dst, bytes_.data(), size);
    std::memcpy(dst + 1, &value, sizeof value);
  }

 private:
  std::vector<std::byte> bytes_;
};

/// Calls a generated function at its executable address.
[[nodiscard]] inline std::uint32_t call_generated(const void* rx) noexcept {
  return reinterpret_cast<GeneratedFn*>(const_cast<void*>(rx))();
}

/// A small deterministic PRNG (xorshift64*), the same sequence every run.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) noexcept : s_(seed ? seed : 1) {}
  std::uint64_t next() noexcept {
    s_ ^= s_ >> 12;
    s_ ^= s_ << 25;
    s_ ^= s_ >> 27;
    return s_ * 0x2545F4914F6CDD1DULL;
  }
  /// Uniform in [lo, hi].
  std::size_t between(std::size_t lo, std::size_t hi) noexcept {
    return lo + static_cast<std::size_t>(next() % (hi - lo + 1));
  }

 private:
  std::uint64_t s_;
};

}  // namespace wxb
