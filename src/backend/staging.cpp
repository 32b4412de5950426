// SPDX-License-Identifier: MIT
// The staging pool: where kernel_write's writable chunks live until a
// commit copies them into the code (see staging.hpp).
#include "backend/staging.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

namespace wxa::detail {

Result<void> StagingPool::allocate(std::size_t pages, unsigned shift) noexcept {
  pages_ = pages;
  shift_ = shift;
  words_ = (pages + 63) / 64;
  stage_of_ = meta_zeroed<std::uint32_t>(pages);
  owner_ = meta_zeroed<std::uint32_t>(2 * pages);
  free_bits_ = meta_zeroed<std::uint64_t>(words_);
  if (!stage_of_ || !owner_ || !free_bits_)
    return Error(Errc::out_of_memory, kNoMemory);
  // Pages past the end count as used, so a search never hands them out.
  if (pages % 64) free_bits_[words_ - 1] = ~std::uint64_t{0} << (pages % 64);
  return {};
}

void StagingPool::set_lanes(unsigned lane_shift, std::size_t count) noexcept {
  lane_shift_ = lane_shift;
  for (std::size_t l = 0; l < count; ++l) low_[l] = (l << lane_shift_) / 64;
}

Result<void> StagingPool::map(Pal& pal, const std::byte* code, bool name,
                              SyscallCounts& n) noexcept {
  pal_ = &pal;
  const auto at = reinterpret_cast<std::uintptr_t>(code);
  const std::uintptr_t reach = (std::uintptr_t{1} << 31) - 1;
  const std::uintptr_t lo = at + bytes() > reach ? at + bytes() - reach : 0;
  const std::size_t staging = 2 * bytes();
  const std::uintptr_t hi =
      at > std::numeric_limits<std::uintptr_t>::max() - reach
          ? std::numeric_limits<std::uintptr_t>::max()
          : at + reach;
  Result<std::byte*> st = pal.reserve(staging, lo, hi, n);
  if (!st && st.error().code() == Errc::unreachable_anchor)
    st = pal.reserve(staging, 0, 0, n);
  if (!st) return st.error();
  base_ = *st;
  if (Result<void> r = pal.protect(base_, staging, Access::read_write, n); !r)
    return r;
  if (name && pal.capabilities().vma_naming) {
    // Best effort: a name only helps people read /proc/<pid>/maps.
    (void)pal.name(base_, staging, "wxarena-staging", n);
  }
  return {};
}

void StagingPool::unmap(SyscallCounts& n) noexcept {
  if (base_) (void)pal_->unmap(base_, 2 * bytes(), n);
  base_ = nullptr;
}

std::byte* StagingPool::take(std::uint32_t head, std::uint32_t pages) noexcept {
  std::ptrdiff_t s = take_free(head, pages);
  // No run of the pool's part holds it: the chunk's own page in the mirror
  // half.
  if (s < 0) s = static_cast<std::ptrdiff_t>(pages_ + head);
  const auto si = static_cast<std::uint32_t>(s);
  for (std::uint32_t k = 0; k < pages; ++k) owner_[si + k] = head + 1;
  stage_of_[head] = si + 1;
  return base_ + (std::size_t{si} << shift_);
}

void StagingPool::give_back(std::uint32_t head, std::uint32_t pages) noexcept {
  if (!stage_of_[head]) return;
  const std::uint32_t s = stage_of_[head] - 1;
  for (std::uint32_t k = 0; k < pages; ++k) owner_[s + k] = 0;
  stage_of_[head] = 0;
  if (s >= pages_) return;  // the mirror half: nothing to give back
  for (std::uint32_t k = 0; k < pages; ++k)
    free_bits_[(s + k) / 64] &= ~(std::uint64_t{1} << ((s + k) % 64));
  std::size_t& low = low_[s >> lane_shift_];
  low = std::min<std::size_t>(low, s / 64);
}

std::byte* StagingPool::staged(std::uint32_t head) const noexcept {
  return stage_of_[head] ? base_ + (std::size_t{stage_of_[head] - 1} << shift_)
                         : nullptr;
}

std::ptrdiff_t StagingPool::page_of(const void* p) const noexcept {
  auto u = reinterpret_cast<std::uintptr_t>(p);
  auto b = reinterpret_cast<std::uintptr_t>(base_);
  if (u < b || u - b >= 2 * bytes()) return -1;
  const std::size_t s = (u - b) >> shift_;
  if (!owner_[s]) return -1;
  const std::uint32_t head = owner_[s] - 1;
  return static_cast<std::ptrdiff_t>(head + (s - (stage_of_[head] - 1)));
}

Result<void> StagingPool::trim(SyscallCounts& n) noexcept {
  // Staging pages nobody holds give their memory back: the pool's free
  // runs, and the mirror half's pages of chunks not staged there.
  auto held = [this](std::size_t i) {
    return i < pages_ ? used(i) : owner_[i] != 0;
  };
  std::size_t i = 0;
  while (i < 2 * pages_) {
    if (held(i)) {
      ++i;
      continue;
    }
    std::size_t j = i + 1;
    while (j < 2 * pages_ && !held(j) && (j != pages_)) ++j;
    if (Result<void> r =
            pal_->decommit(base_ + (i << shift_), (j - i) << shift_, n);
        !r)
      return r;
    i = j;
  }
  return {};
}

// Lowest-address first fit in the staging bitmap, within the part of the
// pool beside the chunk's lane: pages used last are reused first, so
// staging stays warm (no page fault per publish), and threads, which
// allocate in lanes of their own, keep to staging pages of their own (the
// pages they write and the kernel reads stay in their core's cache; the
// bitmap itself is shared, under the arena's lock).
std::ptrdiff_t StagingPool::take_free(std::uint32_t head,
                                      std::uint32_t pages) noexcept {
  const std::size_t lane = head >> lane_shift_;
  const std::size_t end =
      std::min(pages_, (lane + 1) << lane_shift_);  // word-aligned or pages_
  std::size_t& low = low_[lane];
  std::size_t s = low * 64;
  while (s + pages <= end) {
    if (used(s)) {
      // Skip whole used words.
      const std::size_t w = s / 64;
      const std::uint64_t rest = ~free_bits_[w] >> (s % 64);
      s = rest ? s + static_cast<std::size_t>(std::countr_zero(rest))
               : (w + 1) * 64;
      continue;
    }
    std::size_t e = s + 1;
    while (e < s + pages && !used(e)) ++e;
    if (e == s + pages) {
      for (std::size_t k = s; k < e; ++k)
        free_bits_[k / 64] |= std::uint64_t{1} << (k % 64);
      while (low * 64 < end && free_bits_[low] == ~std::uint64_t{0}) ++low;
      return static_cast<std::ptrdiff_t>(s);
    }
    s = e;
  }
  return -1;
}

}  // namespace wxa::detail
