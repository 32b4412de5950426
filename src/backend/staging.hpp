// SPDX-License-Identifier: MIT
// The kernel_write backend's staging pool: the ordinary read-write memory
// where writable chunks are written before a commit copies them into the
// code, which chunk holds which staging pages, and the search for free ones.
//
// Layering: layer 3 (with the backends); includes the platform layer and
// metadata helpers only. Not thread-safe: the arena's lock covers it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "meta.hpp"
#include "pal/pal.hpp"

namespace wxa::detail {

/// Twice the code's size of address space (it costs no memory until
/// written), mapped read+write once and never executable. Its first half
/// is a pool reused lowest address first, so staging stays warm, in one
/// part per lane (a chunk is staged in its lane's part); its second half
/// mirrors the code page by page, so a chunk always has staging even when
/// the pool is too fragmented to hold it in one piece.
class StagingPool {
 public:
  /// The most lanes a pool is split into.
  static constexpr std::size_t kMaxLanes = 64;

  StagingPool() noexcept = default;
  StagingPool(const StagingPool&) = delete;
  StagingPool& operator=(const StagingPool&) = delete;

  /// The records for `pages` code pages of 1 << shift bytes, all free.
  /// Errors: out_of_memory. Makes no system call.
  [[nodiscard]] Result<void> allocate(std::size_t pages,
                                      unsigned shift) noexcept;
  /// Splits the pool into `count` lanes of 1 << lane_shift pages.
  void set_lanes(unsigned lane_shift, std::size_t count) noexcept;
  /// Reserves the staging memory, within rel32 reach of `code` (the code
  /// view, pages() pages long) where the address space allows, so that a
  /// JIT may keep read-write data there and reach it from code; names it
  /// when `name`. On failure, what it reserved stays until unmap().
  [[nodiscard]] Result<void> map(Pal& pal, const std::byte* code, bool name,
                                 SyscallCounts& n) noexcept;
  /// Unmaps the staging memory (idempotent).
  void unmap(SyscallCounts& n) noexcept;

  /// Staging for the chunk at page `head` of `pages` pages: a free run of
  /// its lane's part of the pool, else the chunk's own pages in the mirror
  /// half. No system call.
  [[nodiscard]] std::byte* take(std::uint32_t head,
                                std::uint32_t pages) noexcept;
  /// Gives back what take() gave the chunk at `head` (if anything).
  void give_back(std::uint32_t head, std::uint32_t pages) noexcept;
  /// The chunk's staging, or nullptr.
  [[nodiscard]] std::byte* staged(std::uint32_t head) const noexcept;
  /// The code page a staging address stands for, or -1.
  [[nodiscard]] std::ptrdiff_t page_of(const void* p) const noexcept;
  /// All of the staging memory.
  [[nodiscard]] std::span<std::byte> range() const noexcept {
    return {base_, 2 * bytes()};
  }
  /// Gives back the memory of staging pages nobody holds.
  [[nodiscard]] Result<void> trim(SyscallCounts& n) noexcept;

 private:
  [[nodiscard]] std::size_t bytes() const noexcept { return pages_ << shift_; }
  [[nodiscard]] bool used(std::size_t s) const noexcept {
    return free_bits_[s / 64] >> (s % 64) & 1;
  }
  [[nodiscard]] std::ptrdiff_t take_free(std::uint32_t head,
                                         std::uint32_t pages) noexcept;

  Pal* pal_ = nullptr;
  std::size_t pages_ = 0;
  unsigned shift_ = 0;
  unsigned lane_shift_ = 0;  // pages per lane: 1 << lane_shift_
  std::byte* base_ = nullptr;
  MetaArray<std::uint32_t> stage_of_;   // chunk head -> staging page + 1
  MetaArray<std::uint32_t> owner_;      // staging page -> chunk head + 1
  MetaArray<std::uint64_t> free_bits_;  // 1 = staging page used
  std::size_t words_ = 0;
  // Per lane: the first word of its part of the pool that may have room.
  std::size_t low_[kMaxLanes] = {};
};

}  // namespace wxa::detail
