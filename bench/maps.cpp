// SPDX-License-Identifier: MIT
// Reads /proc/self/maps into a buffer that is allocated once, so that reading
// it does not itself add a mapping between two counts.
#include "maps.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <vector>

namespace wxb::maps {
namespace {

std::mutex g_mutex;
// 20,000+ VMAs are ~100 bytes each; grows if ever needed. Allocated on
// first use, before any strategy takes a baseline.
std::vector<char> g_text(std::size_t{16} << 20);
std::vector<Range> g_lines = [] {
  std::vector<Range> v;
  v.reserve(100000);
  return v;
}();

// Fills g_lines; false if the file cannot be read. Caller holds g_mutex.
bool snapshot() noexcept {
  const int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  std::size_t used = 0;
  for (;;) {
    if (used == g_text.size()) g_text.resize(g_text.size() * 2);
    const ssize_t n = ::read(fd, g_text.data() + used, g_text.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      (void)::close(fd);  // the read error is the one reported
      return false;
    }
    if (n == 0) break;
    used += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0) return false;

  g_lines.clear();
  const char* p = g_text.data();
  const char* const end = p + used;
  while (p < end) {
    char* next = nullptr;
    const auto begin = std::strtoull(p, &next, 16);
    Range r{static_cast<std::uintptr_t>(begin), 0};
    if (next < end && *next == '-')
      r.end = static_cast<std::uintptr_t>(std::strtoull(next + 1, &next, 16));
    g_lines.push_back(r);
    while (next < end && *next != '\n') ++next;
    p = next + 1;
  }
  return true;
}

}  // namespace

long count_all() noexcept {
  std::lock_guard lock(g_mutex);
  if (!snapshot()) return -1;
  return static_cast<long>(g_lines.size());
}

long count_within(std::span<const Range> ranges) noexcept {
  std::lock_guard lock(g_mutex);
  if (!snapshot()) return -1;
  long n = 0;
  for (const Range& line : g_lines) {
    for (const Range& r : ranges) {
      if (line.begin < r.end && r.begin < line.end) {
        ++n;
        break;
      }
    }
  }
  return n;
}

}  // namespace wxb::maps
