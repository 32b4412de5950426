// SPDX-License-Identifier: MIT
// Names for JIT code in the perf map format, so `perf report` can name it.
//
// Layering: includes result.hpp only.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "wxarena/result.hpp"

namespace wxa {

/// Appends "START SIZE name" (hex start and size) to /tmp/perf-<pid>.map,
/// the file perf reads to name code in anonymous memory. Each line is one
/// write(2), so threads may call this concurrently. Newlines in `name` are
/// replaced by spaces. Errors: zero_size, null_pointer, and the OS's.
[[nodiscard]] Result<void> perf_map_add(const void* rx, std::size_t size,
                                        std::string_view name) noexcept;

/// The file perf_map_add() writes to.
[[nodiscard]] std::string perf_map_path();

}  // namespace wxa
