// SPDX-License-Identifier: MIT
// The staging pool: where kernel_write's writable chunks live until a
// commit copies them into the code (see staging.hpp).
#include "backend/staging.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

#include "pal/cpu.hpp"

namespace wxa::detail {

Result<void> StagingPool::allocate(std::size_t pages, unsigned shift,
                                   unsigned lane_shift, std::size_t lanes,
                                   const std::byte* traps) noexcept {
  traps_ = traps;
  pages_ = pages;
  shift_ = shift;
  lane_shift_ = lane_shift;
  parts_ = std::clamp<std::size_t>(lanes, 1, kMaxLanes);
  // An eighth of the code, or all of it up to kFullPoolBytes; a part per
  // lane, each a whole number of bitmap words.
  const std::size_t pool =
      std::max((pages + 7) / 8, std::min(pages, kFullPoolBytes >> shift));
  part_pages_ = ((pool + parts_ - 1) / parts_ + 63) / 64 * 64;
  pool_pages_ = part_pages_ * parts_;
  stage_of_ = meta_zeroed<std::uint32_t>(pages);
  owner_ = meta_zeroed<std::uint32_t>(pool_pages_);
  free_bits_ = meta_zeroed<std::uint64_t>(pool_pages_ / 64);
  clean_ = meta_zeroed<std::uint8_t>(pool_pages_);
  if (!stage_of_ || !owner_ || !free_bits_ || !clean_)
    return Error(Errc::out_of_memory, kNoMemory);
  for (std::size_t p = 0; p < parts_; ++p) {
    low_[p] = p * part_pages_ / 64;
    dirty_top_[p] = high_[p] = p * part_pages_;
  }
  return {};
}

Result<void> StagingPool::reserve(Pal& pal, SyscallCounts& n) noexcept {
  pal_ = &pal;
  Result<std::byte*> st = pal.reserve(pool_pages_ << shift_, 0, 0, n);
  if (!st) return st.error();
  base_ = *st;
  return {};
}

Result<void> StagingPool::unreserve(SyscallCounts& n) noexcept {
  if (!base_) return {};
  if (Result<void> r = pal_->unmap(base_, pool_pages_ << shift_, n); !r)
    return r;
  base_ = nullptr;
  return {};
}

Result<void> StagingPool::map(Pal& pal, const std::byte* code, bool name,
                              SyscallCounts& n) noexcept {
  pal_ = &pal;
  const std::size_t staging = pool_pages_ << shift_;
  if (!base_) {
    const std::size_t code_bytes = pages_ << shift_;
    const std::uintptr_t page = std::uintptr_t{1} << shift_;
    const auto at = reinterpret_cast<std::uintptr_t>(code);
    constexpr std::uintptr_t kMax = std::numeric_limits<std::uintptr_t>::max();
    // Right above the code (past its guard, with its own): a lane's code
    // and its part of the pool are about one reservation apart.
    const std::uintptr_t above = at + code_bytes + page;
    Result<std::byte*> st = Error(Errc::unreachable_anchor);
    if (above < kMax - staging - 2 * page)
      st = pal.reserve(staging, above, above + staging + 2 * page, n);
    // Else right below it.
    const std::uintptr_t room = staging + 3 * page;
    if (!st && st.error().code() == Errc::unreachable_anchor && at > room)
      st = pal.reserve(staging, at - room, at - page, n);
    // Else within 32-bit reach of every code page; else anywhere.
    if (!st && st.error().code() == Errc::unreachable_anchor) {
      const std::uintptr_t reach = (std::uintptr_t{1} << 31) - 1;
      st = pal.reserve(staging,
                       at + code_bytes > reach ? at + code_bytes - reach : 0,
                       at > kMax - reach ? kMax : at + reach, n);
    }
    if (!st && st.error().code() == Errc::unreachable_anchor)
      st = pal.reserve(staging, 0, 0, n);
    if (!st) return st.error();
    base_ = *st;
  }
  if (Result<void> r = pal.protect(base_, staging, Access::read_write, n); !r)
    return r;
  // Small pages: the pool gives pages back one by one after a commit, which
  // a transparent huge page around them would keep resident (on a host
  // whose transparent huge pages are "always", a few pages written filled
  // a 2 MiB page).
  if (Result<void> r = pal.small_pages(base_, staging, n);
      !r && r.error().code() != Errc::not_supported)
    return r;
  if (name && pal.capabilities().vma_naming) {
    // Best effort: a name only helps people read /proc/<pid>/maps.
    (void)pal.name(base_, staging, "wxarena-staging", n);
  }
  return {};
}

void StagingPool::unmap(SyscallCounts& n) noexcept {
  if (base_) (void)pal_->unmap(base_, pool_pages_ << shift_, n);
  base_ = nullptr;
}

std::byte* StagingPool::take(std::uint32_t head, std::uint32_t pages) noexcept {
  // The chunk's lane's part first, then the other parts, then (a chunk
  // larger than a part) anywhere.
  const std::size_t own =
      std::min<std::size_t>(head >> lane_shift_, parts_ - 1);
  std::ptrdiff_t s =
      take_free(own * part_pages_, (own + 1) * part_pages_, low_[own], pages);
  for (std::size_t p = 0; s < 0 && p < parts_; ++p)
    if (p != own)
      s = take_free(p * part_pages_, (p + 1) * part_pages_, low_[p], pages);
  if (s < 0 && pages > part_pages_) {
    std::size_t low = 0;
    s = take_free(0, pool_pages_, low, pages);
  }
  if (s < 0) return nullptr;
  const auto si = static_cast<std::uint32_t>(s);
  for (std::uint32_t k = 0; k < pages; ++k) owner_[si + k] = head + 1;
  stage_of_[head] = si + 1;
  held_pages_ += pages;
  const std::size_t part = si / part_pages_;
  dirty_top_[part] = std::max<std::size_t>(dirty_top_[part], si + pages);
  high_[part] = std::max<std::size_t>(high_[part], si + pages);
  return base_ + (std::size_t{si} << shift_);
}

void StagingPool::fill(std::uint32_t head, std::uint32_t pages) noexcept {
  const std::uint32_t s = stage_of_[head] - 1;
  const std::size_t ps = std::size_t{1} << shift_;
  for (std::uint32_t k = 0; k < pages; ++k) {
    std::byte* page = base_ + (std::size_t{s + k} << shift_);
    // Reading a clean page costs about what filling it does, but no byte a
    // stale pointer wrote into it meanwhile survives.
    if (!clean_[s + k] || std::memcmp(page, traps_, ps) != 0)
      fill_traps(page, ps);
    clean_[s + k] = 0;  // the owner writes it from now on
  }
}

void StagingPool::mark_written(std::uint32_t head,
                               std::uint32_t pages) noexcept {
  std::memset(clean_.get() + (stage_of_[head] - 1), 0, pages);
}

void StagingPool::give_back(std::uint32_t head, std::uint32_t pages,
                            std::size_t written) noexcept {
  if (!stage_of_[head]) return;
  const std::uint32_t s = stage_of_[head] - 1;
  if (written != kUnknown) {
    // Traps over what was written: the cost is that, not the chunk's size.
    fill_traps(base_ + (std::size_t{s} << shift_), written);
    std::memset(clean_.get() + s, 1, pages);
  }
  for (std::uint32_t k = 0; k < pages; ++k) owner_[s + k] = 0;
  stage_of_[head] = 0;
  held_pages_ -= pages;
  gave_back_ = true;
  for (std::uint32_t k = 0; k < pages; ++k)
    free_bits_[(s + k) / 64] &= ~(std::uint64_t{1} << ((s + k) % 64));
  std::size_t& low = low_[s / part_pages_];
  low = std::min<std::size_t>(low, s / 64);
}

std::byte* StagingPool::staged(std::uint32_t head) const noexcept {
  return stage_of_[head] ? base_ + (std::size_t{stage_of_[head] - 1} << shift_)
                         : nullptr;
}

std::ptrdiff_t StagingPool::page_of(const void* p) const noexcept {
  auto u = reinterpret_cast<std::uintptr_t>(p);
  auto b = reinterpret_cast<std::uintptr_t>(base_);
  if (u < b || u - b >= pool_pages_ << shift_) return -1;
  const std::size_t s = (u - b) >> shift_;
  if (!owner_[s]) return -1;
  const std::uint32_t head = owner_[s] - 1;
  return static_cast<std::ptrdiff_t>(head + (s - (stage_of_[head] - 1)));
}

void StagingPool::settle(SyscallCounts& n) noexcept {
  if (!gave_back_) return;
  gave_back_ = false;
  for (std::size_t p = 0; p < parts_; ++p) {
    const std::size_t start = p * part_pages_;
    const std::size_t keep =
        start + std::max(kWarmPages, high_[p] - start) + kWarmPages / 4;
    if (dirty_top_[p] > keep) (void)give_back_free(p, keep, n);
    high_[p] = start;
  }
}

Result<void> StagingPool::trim(SyscallCounts& n) noexcept {
  for (std::size_t p = 0; p < parts_; ++p) {
    if (Result<void> r = give_back_free(p, p * part_pages_, n); !r) return r;
    high_[p] = dirty_top_[p];
  }
  return {};
}

std::size_t StagingPool::resident_bytes() const noexcept {
  std::size_t pages = 0;
  for (std::size_t p = 0; p < parts_; ++p)
    pages += dirty_top_[p] - p * part_pages_;
  return pages << shift_;
}

// The free pages of a part from page `from` up to its dirty top go back
// (one call per free run, in practice one); the dirty top becomes the end
// of the last page still held there (or `from`).
Result<void> StagingPool::give_back_free(std::size_t part, std::size_t from,
                                         SyscallCounts& n) noexcept {
  const std::size_t to = dirty_top_[part];
  std::size_t top = from;
  for (std::size_t i = from; i < to;) {
    if (used(i)) {
      top = ++i;
      continue;
    }
    std::size_t j = i + 1;
    while (j < to && !used(j)) ++j;
    std::memset(clean_.get() + i, 0, j - i);  // zeros once given back
    if (Result<void> r =
            pal_->decommit(base_ + (i << shift_), (j - i) << shift_, n);
        !r)
      return r;
    i = j;
  }
  dirty_top_[part] = top;
  return {};
}

// Lowest-address first fit in [begin, end) of the bitmap, whose first word
// that may have room is `low`: pages used last are reused first, so
// staging stays warm (no page fault per publish), and threads, which
// allocate in lanes of their own, keep to staging pages of their own (the
// pages they write and the kernel reads stay in their core's cache; the
// bitmap itself is shared, under the arena's lock).
std::ptrdiff_t StagingPool::take_free(std::size_t begin, std::size_t end,
                                      std::size_t& low,
                                      std::uint32_t pages) noexcept {
  std::size_t s = std::max(begin, low * 64);
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
