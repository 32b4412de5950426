// SPDX-License-Identifier: MIT
// Trap pages for kernel_write (see traps.hpp).
#include "backend/traps.hpp"

#include <cstdint>
#include <cstring>

#include "pal/cpu.hpp"

namespace wxa::detail {

const std::byte* shared_trap_page(std::size_t page) noexcept {
  static constexpr std::size_t kMaxPage = std::size_t{64} << 10;
  alignas(4096) static std::byte traps[kMaxPage];
  if (page > kMaxPage) return nullptr;
  static const bool filled = (fill_traps(traps, page), true);
  (void)filled;
  return traps;
}

std::size_t used_prefix(const std::byte* p, std::size_t len,
                        const std::byte* trap_page) noexcept {
  // Traps repeat every 1 (x86-64) or 4 (AArch64) bytes, so every 8-byte
  // aligned word of them is the same: a block is all traps when each of
  // its words equals the first word of the trap page. Large spans first
  // (memcmp with the trap page: a few instructions per 32 bytes), then
  // the span that differs block by block.
  constexpr std::size_t kBlock = 64, kWord = sizeof(std::uint64_t);
  constexpr std::size_t kSpan = 512;
  std::uint64_t traps;
  std::memcpy(&traps, trap_page, kWord);
  std::size_t end = len - len % kBlock;
  if (end != len) {
    if (std::memcmp(p + end, trap_page, len - end) != 0) return len;
  }
  while (end >= kSpan && end % kSpan == 0 &&
         std::memcmp(p + end - kSpan, trap_page, kSpan) == 0)
    end -= kSpan;
  while (end >= kBlock) {
    std::uint64_t diff = 0;
    for (std::size_t w = 0; w < kBlock; w += kWord) {
      std::uint64_t v;
      std::memcpy(&v, p + end - kBlock + w, kWord);
      diff |= v ^ traps;
    }
    if (diff) break;
    end -= kBlock;
  }
  return end;
}

}  // namespace wxa::detail
