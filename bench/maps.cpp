// SPDX-License-Identifier: MIT
// Reads /proc/self/maps into a buffer that is allocated once, so that reading
// it does not itself add a mapping between two counts.
#include "maps.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <utility>
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

// The value of the first line of `path` starting with `key` ("Pss_Anon:"),
// in bytes (the file gives kB), or -1.
double field_kb(const char* path, const char* key) noexcept {
  char text[8192];
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  std::size_t used = 0;
  while (used + 1 < sizeof text) {
    const ssize_t n = ::read(fd, text + used, sizeof text - 1 - used);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    used += static_cast<std::size_t>(n);
  }
  (void)::close(fd);  // read-only: nothing to lose
  text[used] = '\0';
  const std::size_t k = std::strlen(key);
  for (const char* line = text; *line;) {
    if (std::strncmp(line, key, k) == 0)
      return 1024.0 * std::strtod(line + k, nullptr);
    const char* nl = std::strchr(line, '\n');
    if (!nl) break;
    line = nl + 1;
  }
  return -1;
}

// st_blocks of every memfd an open descriptor names, each file once (a
// library may hold more than one descriptor of a file).
double memfd_bytes() noexcept {
  DIR* dir = ::opendir("/proc/self/fd");
  if (!dir) return -1;
  double total = 0;
  std::vector<std::pair<dev_t, ino_t>> seen;
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    char link[300], target[256];
    std::snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
    const ssize_t n = ::readlink(link, target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    if (std::strncmp(target, "/memfd:", 7) != 0) continue;
    struct stat st {};
    if (::fstat(std::atoi(e->d_name), &st) != 0) continue;
    const std::pair<dev_t, ino_t> id{st.st_dev, st.st_ino};
    if (std::find(seen.begin(), seen.end(), id) != seen.end()) continue;
    seen.push_back(id);
    total += 512.0 * static_cast<double>(st.st_blocks);
  }
  (void)::closedir(dir);
  return total;
}

}  // namespace

Usage usage() noexcept {
  Usage u;
  u.anon = field_kb("/proc/self/smaps_rollup", "Pss_Anon:");
  u.shmem = field_kb("/proc/self/smaps_rollup", "Pss_Shmem:");
  u.memfd = memfd_bytes();
  u.address_space = field_kb("/proc/self/status", "VmSize:");
  return u;
}

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
