// SPDX-License-Identifier: MIT
// The kernel_write backend's staging pool: the ordinary read-write memory
// where writable chunks are written before a commit copies them into the
// code, which chunk holds which staging pages, the search for free ones,
// which pages hold traps only, and giving pages back after commits.
//
// Layering: layer 3 (with the backends); includes the platform layer and
// metadata helpers only. Not thread-safe: the arena's lock covers it,
// except fill(), which the allocating thread calls on its own new chunk.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "meta.hpp"
#include "pal/pal.hpp"

namespace wxa::detail {

/// A bounded pool: an eighth of the code's reservation (all of it up to
/// kFullPoolBytes), so that writable chunks not yet sealed hold at most that
/// at once. Reserved right next to the code, so that every staging page is
/// within 32-bit reach of every code page while both fit (a JIT may keep
/// read-write data there and reach it from code); mapped read+write once,
/// never executable; it costs no memory until written. Reused lowest
/// address first, so staging stays warm, in one part per lane (a chunk is
/// staged in its lane's part first). After a commit that gave staging back,
/// pages above what recent commits used go back to the OS (settle()), so
/// the resident pool follows what is written and not yet committed.
class StagingPool {
 public:
  /// The most lanes a pool is split into.
  static constexpr std::size_t kMaxLanes = 64;
  /// Up to this size the pool is as large as the code's reservation.
  static constexpr std::size_t kFullPoolBytes = std::size_t{64} << 20;
  /// Pages a part keeps resident above what the last commits used.
  static constexpr std::size_t kWarmPages = 64;

  StagingPool() noexcept = default;
  StagingPool(const StagingPool&) = delete;
  StagingPool& operator=(const StagingPool&) = delete;

  /// The records for the staging of `pages` code pages of 1 << shift bytes
  /// in `lanes` lanes of 1 << lane_shift pages, all free. Errors:
  /// out_of_memory. Makes no system call.
  /// `traps`: a page of trap instructions, kept for the pool's life.
  [[nodiscard]] Result<void> allocate(std::size_t pages, unsigned shift,
                                      unsigned lane_shift, std::size_t lanes,
                                      const std::byte* traps) noexcept;
  /// Reserves the staging memory anywhere, before the code is placed (the
  /// code then goes right below it: see map()).
  [[nodiscard]] Result<void> reserve(Pal& pal, SyscallCounts& n) noexcept;
  /// Gives back what reserve() took, so that map() places the staging anew.
  /// On failure the reservation stays (unmap() gives it back).
  [[nodiscard]] Result<void> unreserve(SyscallCounts& n) noexcept;
  /// Where reserve() put the staging memory (nullptr before).
  [[nodiscard]] std::byte* base() const noexcept { return base_; }
  /// Reserves the staging memory unless reserve() did: right above `code`
  /// (the code view, `pages` pages long) where that is free, else right
  /// below it, else within 32-bit reach of all of it, else anywhere; then
  /// makes it read+write and names it when `name`. A JIT may keep
  /// read-write data in staging and reach it from code with 32-bit
  /// PC-relative fixups (include/wxarena/adapters/). On failure, what it
  /// reserved stays until unmap().
  [[nodiscard]] Result<void> map(Pal& pal, const std::byte* code, bool name,
                                 SyscallCounts& n) noexcept;
  /// Unmaps the staging memory (idempotent).
  void unmap(SyscallCounts& n) noexcept;

  /// Staging for the chunk at page `head` of `pages` pages: a free run of
  /// its lane's part of the pool, else of another part, else anywhere in
  /// the pool; nullptr when writable chunks hold the pool (or it is too
  /// fragmented for this one). No system call.
  [[nodiscard]] std::byte* take(std::uint32_t head,
                                std::uint32_t pages) noexcept;
  /// Traps over the staging of a new chunk wherever it may hold anything
  /// else (pages given back read as zeros, pages written and not cleaned
  /// hold old bytes, and a page cleaned by a seal may have been written
  /// since through a stale writable pointer: it is checked, and filled if
  /// so). The chunk's owner calls it, without the arena's lock.
  void fill(std::uint32_t head, std::uint32_t pages) noexcept;
  /// The chunk's staging holds other bytes than traps (an unsealed chunk's
  /// code was copied in).
  void mark_written(std::uint32_t head, std::uint32_t pages) noexcept;
  /// Gives back what take() gave the chunk at `head` (if anything). With
  /// `written` other than kUnknown, the chunk's staging holds traps after
  /// its first `written` bytes: those get traps too, and the pages are
  /// clean (the next chunk staged there needs no fill).
  static constexpr std::size_t kUnknown = ~std::size_t{0};
  void give_back(std::uint32_t head, std::uint32_t pages,
                 std::size_t written) noexcept;
  /// The chunk's staging, or nullptr.
  [[nodiscard]] std::byte* staged(std::uint32_t head) const noexcept;
  /// The code page a staging address stands for, or -1.
  [[nodiscard]] std::ptrdiff_t page_of(const void* p) const noexcept;
  /// All of the staging memory.
  [[nodiscard]] std::span<std::byte> range() const noexcept {
    return {base_, pool_pages_ << shift_};
  }
  /// After a commit: if staging was given back since the last one, pages
  /// above what commits used since then (and kWarmPages) go back to the OS,
  /// free ones only. A failure keeps them (tried again later).
  void settle(SyscallCounts& n) noexcept;
  /// Gives back the memory of every staging page nobody holds.
  [[nodiscard]] Result<void> trim(SyscallCounts& n) noexcept;

  /// Bytes held by writable chunks now.
  [[nodiscard]] std::size_t held_bytes() const noexcept {
    return held_pages_ << shift_;
  }
  /// Bytes that may be resident: held, or free but not given back yet.
  [[nodiscard]] std::size_t resident_bytes() const noexcept;

 private:
  [[nodiscard]] bool used(std::size_t s) const noexcept {
    return free_bits_[s / 64] >> (s % 64) & 1;
  }
  [[nodiscard]] std::ptrdiff_t take_free(std::size_t begin, std::size_t end,
                                         std::size_t& low,
                                         std::uint32_t pages) noexcept;
  [[nodiscard]] Result<void> give_back_free(std::size_t part, std::size_t from,
                                            SyscallCounts& n) noexcept;

  Pal* pal_ = nullptr;
  std::size_t pages_ = 0;  // code pages
  unsigned shift_ = 0;
  unsigned lane_shift_ = 0;  // code pages per lane: 1 << lane_shift_
  std::size_t parts_ = 1;    // one per lane
  std::size_t part_pages_ = 0, pool_pages_ = 0;
  std::byte* base_ = nullptr;
  const std::byte* traps_ = nullptr;    // a page of them
  MetaArray<std::uint32_t> stage_of_;   // chunk head -> staging page + 1
  MetaArray<std::uint32_t> owner_;      // staging page -> chunk head + 1
  MetaArray<std::uint64_t> free_bits_;  // 1 = staging page used
  // Staging page -> 1 if it holds traps only. A byte each: the allocating
  // thread clears its chunk's without the arena's lock.
  MetaArray<std::uint8_t> clean_;
  std::size_t held_pages_ = 0;
  bool gave_back_ = false;  // a chunk's staging came back since settle()
  // Per part: the first word that may have room, the end of the pages that
  // may be resident, and the end of the pages used since settle().
  std::size_t low_[kMaxLanes] = {};
  std::size_t dirty_top_[kMaxLanes] = {};
  std::size_t high_[kMaxLanes] = {};
};

}  // namespace wxa::detail
