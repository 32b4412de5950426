// SPDX-License-Identifier: MIT
// Counting lines of /proc/self/maps (kernel VMAs), in total or within ranges.
#pragma once

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

}  // namespace wxb::maps
