// SPDX-License-Identifier: MIT
// /proc/self/maps seen by file offset: which views of a dual_map arena's memfd
// exist, with which permissions.
//
// The scanner allocates nothing and calls only open/read/close, so it is also
// safe in a fork() child (tests/test_fork.cpp). map_lines() and
// views_match_state() allocate and are for the parent only.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "support/maps.hpp"
#include "wxarena/arena.hpp"

namespace wxa::test {

/// One line of /proc/self/maps.
struct MapLine {
  std::uintptr_t begin = 0, end = 0;
  char perms[5] = {};  // "r-xs"
  std::uint64_t offset = 0;
  std::uint64_t inode = 0;
  char path[256] = {};  // truncated if longer

  [[nodiscard]] bool readable() const noexcept { return perms[0] == 'r'; }
  [[nodiscard]] bool writable() const noexcept { return perms[1] == 'w'; }
  [[nodiscard]] bool executable() const noexcept { return perms[2] == 'x'; }
  [[nodiscard]] bool shared() const noexcept { return perms[3] == 's'; }
  /// A view of a wxarena shared object ("/memfd:wxarena (deleted)").
  [[nodiscard]] bool wxarena_memfd() const noexcept {
    return std::strncmp(path, "/memfd:wxarena", 14) == 0;
  }
  /// The file offsets [offset_begin, offset_end) the line maps.
  [[nodiscard]] std::uint64_t offset_end() const noexcept {
    return offset + (end - begin);
  }
  [[nodiscard]] bool overlaps_offsets(std::uint64_t a,
                                      std::uint64_t b) const noexcept {
    return offset < b && a < offset_end();
  }
};

namespace detail_maps {
inline bool parse_line(const char* s, MapLine& out) noexcept {
  char* e = nullptr;
  out = MapLine{};
  out.begin = std::strtoull(s, &e, 16);
  if (*e != '-') return false;
  out.end = std::strtoull(e + 1, &e, 16);
  while (*e == ' ') ++e;
  for (int i = 0; i < 4 && *e && *e != ' '; ++i) out.perms[i] = *e++;
  while (*e == ' ') ++e;
  out.offset = std::strtoull(e, &e, 16);
  while (*e == ' ') ++e;
  while (*e && *e != ' ') ++e;  // device
  while (*e == ' ') ++e;
  out.inode = std::strtoull(e, &e, 10);
  while (*e == ' ') ++e;
  std::size_t n = std::strlen(e);
  if (n >= sizeof out.path) n = sizeof out.path - 1;
  std::memcpy(out.path, e, n);
  out.path[n] = '\0';
  return true;
}
}  // namespace detail_maps

/// Calls f(const MapLine&) for every line of /proc/self/maps; f returns
/// false to stop. Allocates nothing (fork-child safe). False if the file
/// could not be read.
template <class F>
bool for_each_map_line(F&& f) noexcept {
  int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[8192];
  std::size_t have = 0;
  bool eof = false;
  MapLine line;
  for (;;) {
    char* nl = static_cast<char*>(std::memchr(buf, '\n', have));
    if (!nl) {
      if (eof) break;
      if (have == sizeof buf) have = 0;  // absurd line: drop it
      ssize_t r = ::read(fd, buf + have, sizeof buf - have);
      if (r < 0) {
        if (errno == EINTR) continue;
        ::close(fd);
        return false;
      }
      if (r == 0) {
        eof = true;
        if (have > 0 && have < sizeof buf) buf[have++] = '\n';
      }
      have += r > 0 ? static_cast<std::size_t>(r) : 0;
      continue;
    }
    *nl = '\0';
    const bool keep = !detail_maps::parse_line(buf, line) || f(line);
    const std::size_t used = static_cast<std::size_t>(nl - buf) + 1;
    std::memmove(buf, buf + used, have - used);
    have -= used;
    if (!keep) break;
  }
  ::close(fd);
  return true;
}

/// The line mapping address p (fork-child safe); false if p is unmapped.
inline bool map_line_at(const void* p, MapLine& out) noexcept {
  const auto u = reinterpret_cast<std::uintptr_t>(p);
  bool found = false;
  for_each_map_line([&](const MapLine& l) {
    if (u >= l.begin && u < l.end) {
      out = l;
      found = true;
      return false;
    }
    return true;
  });
  return found;
}

/// The inode of the memfd behind a dual_map arena: that of the first memfd
/// view found inside its rx or rw reservation (0 if none is mapped).
inline std::uint64_t arena_memfd_inode(const Arena& arena) noexcept {
  const auto rx = reinterpret_cast<std::uintptr_t>(arena.range().data());
  const auto rw = reinterpret_cast<std::uintptr_t>(arena.rw_range().data());
  const std::uintptr_t n = arena.range().size();
  std::uint64_t inode = 0;
  for_each_map_line([&](const MapLine& l) {
    const bool inside = (l.begin >= rx && l.end <= rx + n) ||
                        (l.begin >= rw && l.end <= rw + n);
    if (inside && l.wxarena_memfd()) {
      inode = l.inode;
      return false;
    }
    return true;
  });
  return inode;
}

/// Whether any view (anywhere in the process) of the memfd `inode` that
/// overlaps the file offsets [a, b) has the permission `perm` ('w' or 'x').
/// Fork-child safe.
inline bool memfd_view_with(std::uint64_t inode, std::uint64_t a,
                            std::uint64_t b, char perm) noexcept {
  const int i = perm == 'r' ? 0 : perm == 'w' ? 1 : 2;
  bool hit = false;
  for_each_map_line([&](const MapLine& l) {
    if (l.wxarena_memfd() && l.inode == inode && l.overlaps_offsets(a, b) &&
        l.perms[i] == perm) {
      hit = true;
      return false;
    }
    return true;
  });
  return hit;
}

/// Every line of /proc/self/maps (allocates: not for fork children).
inline std::vector<MapLine> map_lines() {
  std::vector<MapLine> lines;
  for_each_map_line([&](const MapLine& l) {
    lines.push_back(l);
    return true;
  });
  return lines;
}

/// Checks strict mode for a dual_map arena from its own runs(): no sealed
/// page (executable or read-only) has a writable view of its memfd offsets
/// anywhere in the process; no page but executable ones has an executable
/// view; every view that must exist is the arena's memfd, shared, at the
/// expected offset (address - view base) with the expected permissions; and
/// inaccessible pages are anonymous placeholders, not memfd views.
inline ::testing::AssertionResult views_match_state(const Arena& arena) {
  if (arena.backend() != Backend::dual_map)
    return ::testing::AssertionFailure() << "not a dual_map arena";
  const std::vector<MapLine> lines = map_lines();
  const auto rx_base = reinterpret_cast<std::uintptr_t>(arena.range().data());
  const auto rw_base =
      reinterpret_cast<std::uintptr_t>(arena.rw_range().data());
  const std::uintptr_t size = arena.range().size();
  std::uint64_t inode = 0;
  for (const MapLine& l : lines) {
    const bool inside = (l.begin >= rx_base && l.end <= rx_base + size) ||
                        (l.begin >= rw_base && l.end <= rw_base + size);
    if (inside && l.wxarena_memfd()) {
      if (inode && l.inode != inode)
        return ::testing::AssertionFailure()
               << "two memfds (inodes " << inode << ", " << l.inode
               << ") are mapped in one arena";
      inode = l.inode;
    }
  }

  auto expect = [](Access a) -> const char* {
    switch (a) {
      case Access::none:
        return "---";
      case Access::read:
        return "r--";
      case Access::read_write:
        return "rw-";
      case Access::read_execute:
        return "r-x";
    }
    return "???";
  };
  // [a, b) of one view must be covered, without gaps, by lines with the
  // expected permissions, mapping the expected memfd offsets.
  auto check_view = [&](std::uintptr_t base, std::uintptr_t a, std::uintptr_t b,
                        Access access,
                        const char* view) -> ::testing::AssertionResult {
    std::uintptr_t at = a;
    for (const MapLine& l : lines) {
      if (l.end <= at || l.begin >= b) continue;
      if (l.begin > at) break;  // a gap: reported below
      // Where the maps file merges r-- with r-x neighbours (qemu-user),
      // only "readable, not writable" can be checked for those two.
      const bool same =
          std::strncmp(l.perms, expect(access), 3) == 0 ||
          (!maps_tell_read_from_execute() &&
           (access == Access::read || access == Access::read_execute) &&
           l.readable() && !l.writable());
      if (!same)
        return ::testing::AssertionFailure()
               << view << " view at " << reinterpret_cast<void*>(at) << " is "
               << l.perms << ", expected " << expect(access);
      if (access == Access::none) {
        if (l.wxarena_memfd())
          return ::testing::AssertionFailure()
                 << view << " view at " << reinterpret_cast<void*>(at)
                 << " is an inaccessible memfd view, not a placeholder";
      } else {
        const std::uint64_t want = at - base;
        const std::uint64_t got = l.offset + (at - l.begin);
        if (!l.wxarena_memfd() || l.inode != inode || !l.shared() ||
            got != want)
          return ::testing::AssertionFailure()
                 << view << " view at " << reinterpret_cast<void*>(at)
                 << " maps '" << l.path << "' (inode " << l.inode
                 << ") at offset " << got
                 << ", expected the arena's memfd (inode " << inode
                 << ") at offset " << want;
      }
      at = l.end;
      if (at >= b) return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure()
           << view << " view at " << reinterpret_cast<void*>(at)
           << " is not mapped";
  };

  for (const RunInfo& r : arena.runs()) {
    const auto rx = reinterpret_cast<std::uintptr_t>(r.rx);
    const auto rw = reinterpret_cast<std::uintptr_t>(r.rw);
    const std::uint64_t off = rx - rx_base, end = off + r.bytes;
    const bool sealed =
        r.state == State::executable || r.state == State::read_only;
    for (const MapLine& l : lines) {
      if (!l.wxarena_memfd() || l.inode != inode ||
          !l.overlaps_offsets(off, end))
        continue;
      if (sealed && l.writable())
        return ::testing::AssertionFailure()
               << to_string(r.state) << " pages at offsets [" << off << ", "
               << end << ") have a writable view at "
               << reinterpret_cast<void*>(l.begin) << " (" << l.perms << ")";
      if (r.state != State::executable && l.executable() &&
          (r.state != State::read_only || maps_tell_read_from_execute()))
        return ::testing::AssertionFailure()
               << to_string(r.state) << " pages at offsets [" << off << ", "
               << end << ") have an executable view at "
               << reinterpret_cast<void*>(l.begin) << " (" << l.perms << ")";
    }
    if (auto ok = check_view(rx_base, rx, rx + r.bytes, r.rx_access, "rx"); !ok)
      return ok << " (" << to_string(r.state) << " run)";
    if (auto ok = check_view(rw_base, rw, rw + r.bytes, r.rw_access, "rw"); !ok)
      return ok << " (" << to_string(r.state) << " run)";
  }
  return ::testing::AssertionSuccess();
}

}  // namespace wxa::test
