// SPDX-License-Identifier: MIT
// perf map lines for JIT code (see include/wxarena/perf_map.hpp).
#include "wxarena/perf_map.hpp"

#include <cstdio>

#include "pal/pal.hpp"

namespace wxa {

Result<void> perf_map_add(const void* rx, std::size_t size,
                          std::string_view name) noexcept {
  if (!rx) return Error(Errc::null_pointer);
  if (size == 0) return Error(Errc::zero_size);
  char line[512];
  int n = std::snprintf(line, sizeof line, "%zx %zx ",
                        reinterpret_cast<std::size_t>(rx), size);
  if (n < 0) return Error(Errc::invalid_argument);
  std::size_t len = static_cast<std::size_t>(n);
  for (char c : name) {
    if (len + 2 > sizeof line) break;  // long names are cut, not refused
    line[len++] = (c == '\n' || c == '\r') ? ' ' : c;
  }
  line[len++] = '\n';
  return detail::append_perf_map(line, len);
}

std::string perf_map_path() {
  char path[64];
  detail::perf_map_name(path, sizeof path);
  return path;
}

}  // namespace wxa
