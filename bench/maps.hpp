// SPDX-License-Identifier: MIT
// Counting lines of /proc/self/maps (kernel VMAs), in total or within ranges,
// and the process's resident memory and address space.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

namespace wxb::maps {

struct Range {
  std::uintptr_t begin = 0, end = 0;  // [begin, end)
};

/// Number of lines of /proc/self/maps, or -1 if it cannot be read.
[[nodiscard]] long count_all() noexcept;

/// Number of lines of /proc/self/maps whose mapping intersects any of
/// `ranges`, or -1 if it cannot be read.
[[nodiscard]] long count_within(std::span<const Range> ranges) noexcept;

/// What the process holds, in bytes; a field is negative if it cannot be
/// read.
struct Usage {
  /// Proportional resident memory (Pss_Anon, Pss_Shmem of
  /// /proc/self/smaps_rollup): a page mapped twice in the process counts
  /// once.
  double anon = -1, shmem = -1;
  /// Memory allocated to the memfds the process holds open (st_blocks),
  /// mapped or not.
  double memfd = -1;
  double address_space = -1;  ///< VmSize of /proc/self/status
  /// Anonymous memory, and shared memory whether mapped or not: a memfd's
  /// pages count when written but not mapped, or after the mappings went,
  /// and shared mappings whose file was closed count as mapped. (A process
  /// whose shared memory is in both kinds is undercounted.)
  [[nodiscard]] double resident() const noexcept {
    return anon < 0 || shmem < 0 ? -1 : anon + std::max(shmem, memfd);
  }
};

/// Reads the process's Usage now (walks its page tables: not for timed code).
[[nodiscard]] Usage usage() noexcept;

}  // namespace wxb::maps
