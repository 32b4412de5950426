// SPDX-License-Identifier: MIT
// Reads /proc/<pid>/maps without library code and audits arenas against it.
// On Windows the same audit runs over VirtualQuery's view of the address
// space, turned into the same Mapping records (read_maps() below).

#include "support/maps.hpp"

#ifdef _WIN32
#include <windows.h>
#else
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <wxarena/arena.hpp>

namespace wxa::test {
namespace {

std::string hex(std::uintptr_t value) {
  char buf[2 + 16 + 1];
  std::snprintf(buf, sizeof buf, "0x%" PRIxPTR, value);
  return buf;
}

#ifndef _WIN32
std::string read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), path);
  std::string text;
  char buf[16384];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      ::close(fd);
      throw std::system_error(error, std::generic_category(), path);
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  if (::close(fd) != 0) {
    throw std::system_error(errno, std::generic_category(), path);
  }
  return text;
}
#endif

// Splits off the next field up to `separator` (or the end); throws if empty.
std::string_view take(std::string_view& rest, char separator,
                      std::string_view line) {
  const std::size_t at = rest.find(separator);
  const std::string_view field = rest.substr(0, at);
  if (field.empty()) {
    throw std::runtime_error("malformed maps line: " + std::string(line));
  }
  rest =
      at == std::string_view::npos ? std::string_view() : rest.substr(at + 1);
  return field;
}

std::uint64_t number(std::string_view field, int base, std::string_view line) {
  std::uint64_t value = 0;
  const auto [end, ec] =
      std::from_chars(field.data(), field.data() + field.size(), value, base);
  if (ec != std::errc() || end != field.data() + field.size()) {
    throw std::runtime_error("malformed number in maps line: " +
                             std::string(line));
  }
  return value;
}

std::string_view protection_of(wxa::Access access) noexcept {
  switch (access) {
    case wxa::Access::none:
      return "---";
    case wxa::Access::read:
      return "r--";
    case wxa::Access::read_write:
      return "rw-";
    case wxa::Access::read_execute:
      return "r-x";
  }
  return "???";
}

// Equal protections, or (where maps cannot tell them apart) both readable
// and not writable.
bool same_protection(const std::string& actual, const std::string& want) {
  if (actual == want) return true;
  if (maps_tell_read_from_execute()) return false;
  auto readonly = [](const std::string& p) { return p == "r--" || p == "r-x"; };
  return readonly(actual) && readonly(want);
}

struct Mismatch {
  std::uintptr_t address = 0;
  const Expected* expected = nullptr;
  std::string actual;  // a protection, or "unmapped"
};

// One merged walk over two address-ordered sequences: O(expected + maps).
std::optional<Mismatch> first_mismatch(const std::vector<Expected>& expected,
                                       const std::vector<Mapping>& maps) {
  auto map = maps.begin();
  for (const Expected& want : expected) {
    std::uintptr_t at = want.begin;
    // Expected ranges are sorted, so the cursor only moves forward.
    while (map != maps.end() && map->end <= at) ++map;
    while (at < want.end) {
      if (map == maps.end() || map->begin > at) {
        return Mismatch{at, &want, "unmapped"};
      }
      const std::string actual = map->protection();
      if (!same_protection(actual, want.protection))
        return Mismatch{at, &want, actual};
      at = std::min(map->end, want.end);
      if (at == map->end) ++map;
    }
  }
  return std::nullopt;
}

std::string describe(const Mismatch& m) {
  std::string s = "at " + hex(m.address) + ": expected " +
                  m.expected->protection + ", kernel has " + m.actual;
  if (!m.expected->what.empty()) s += " (" + m.expected->what + ")";
  return s;
}

std::string describe(const std::vector<Mapping>& mappings) {
  std::string s;
  for (const Mapping& m : mappings) {
    s += "\n  " + hex(m.begin) + "-" + hex(m.end) + " " + m.perms() + " " +
         m.name;
  }
  return s;
}

// The audit proper; see audit_arena() in maps.hpp.
::testing::AssertionResult audit_runs(const wxa::Arena& arena,
                                      const std::vector<wxa::RunInfo>& runs,
                                      const std::vector<Mapping>& maps) {
  const auto rx_base = reinterpret_cast<std::uintptr_t>(arena.range().data());
  const auto rx_limit = rx_base + arena.range().size();
  const auto rw_base =
      reinterpret_cast<std::uintptr_t>(arena.rw_range().data());
  // kernel_write: writable bytes are staged in ordinary memory, not in a
  // view of the pages; checked below instead of page by page.
  const bool staged = arena.backend() == wxa::Backend::kernel_write;
  const bool dual = rw_base != rx_base && !staged;

  // The runs must tile the reservation, lowest address first.
  std::vector<Expected> rx_view, rw_view;
  std::uintptr_t cursor = rx_base;
  for (const wxa::RunInfo& run : runs) {
    const auto rx = reinterpret_cast<std::uintptr_t>(run.rx);
    const std::string state(wxa::to_string(run.state));
    if (rx != cursor || run.bytes == 0) {
      return ::testing::AssertionFailure()
             << "arena.runs() do not tile range(): run at " << hex(rx) << " ("
             << run.bytes << " bytes, " << state << ") where " << hex(cursor)
             << " was expected";
    }
    cursor += run.bytes;
    const std::string what = state + (run.open ? " (open)" : "") + " run at " +
                             hex(rx) + ", " + std::to_string(run.bytes) +
                             " bytes";
    rx_view.push_back({rx, cursor, std::string(protection_of(run.rx_access)),
                       "executable view, " + what});
    if (dual) {
      const std::uintptr_t rw = run.rw != nullptr
                                    ? reinterpret_cast<std::uintptr_t>(run.rw)
                                    : rw_base + (rx - rx_base);
      rw_view.push_back({rw, rw + run.bytes,
                         std::string(protection_of(run.rw_access)),
                         "writable view, " + what});
    }
  }
  if (cursor != rx_limit) {
    return ::testing::AssertionFailure()
           << "arena.runs() end at " << hex(cursor) << ", range() at "
           << hex(rx_limit);
  }
  // A dual arena's writable view need not lie above its executable one.
  std::sort(
      rw_view.begin(), rw_view.end(),
      [](const Expected& a, const Expected& b) { return a.begin < b.begin; });

  std::string failures;
  if (const auto m = first_mismatch(rx_view, maps)) failures += describe(*m);
  if (const auto m = first_mismatch(rw_view, maps)) {
    failures += (failures.empty() ? "" : "; ") + describe(*m);
  }
  if (staged) {
    // The staging range is ordinary read-write memory, never executable,
    // and no mapping anywhere in the process may write the code's memfd.
    const auto rw_limit = rw_base + arena.rw_range().size();
    std::vector<std::pair<std::string, std::uint64_t>> code_files;
    for (const Mapping& m : maps) {
      if (m.end > rw_base && m.begin < rw_limit && (m.execute || !m.write)) {
        failures += (failures.empty() ? "" : "; ") + std::string("at ") +
                    hex(std::max(m.begin, rw_base)) +
                    ": expected rw-, kernel has " + m.protection() +
                    " (staging memory)";
      }
      if (m.end > rx_base && m.begin < rx_limit && m.shared && m.inode)
        code_files.emplace_back(m.dev, m.inode);
    }
    for (const Mapping& m : maps) {
      if (!m.write || !m.inode) continue;
      for (const auto& f : code_files)
        if (m.dev == f.first && m.inode == f.second)
          failures +=
              (failures.empty() ? "" : "; ") +
              std::string("a writable mapping of the code's memfd at ") +
              hex(m.begin) + " (" + m.perms() + ")";
    }
  }
  std::vector<Mapping> wx;
  for (const Mapping& m : maps) {
    if (m.write && m.execute) wx.push_back(m);
  }
  if (!wx.empty()) {
    failures += (failures.empty() ? "" : "; ") +
                std::string("writable+executable mappings in the process:") +
                describe(wx);
  }
  if (!failures.empty()) return ::testing::AssertionFailure() << failures;
  return ::testing::AssertionSuccess();
}

}  // namespace

std::string Mapping::protection() const {
  return {read ? 'r' : '-', write ? 'w' : '-', execute ? 'x' : '-'};
}

std::string Mapping::perms() const {
  return protection() + (shared ? 's' : 'p');
}

Mapping parse_maps_line(std::string_view line) {
  // "begin-end perms offset major:minor inode   name", see proc(5).
  Mapping m;
  std::string_view rest = line;
  m.begin = number(take(rest, '-', line), 16, line);
  m.end = number(take(rest, ' ', line), 16, line);
  const std::string_view perms = take(rest, ' ', line);
  if (perms.size() != 4 || m.end < m.begin) {
    throw std::runtime_error("malformed maps line: " + std::string(line));
  }
  m.read = perms[0] == 'r';
  m.write = perms[1] == 'w';
  m.execute = perms[2] == 'x';
  m.shared = perms[3] == 's';
  m.offset = number(take(rest, ' ', line), 16, line);
  m.dev = std::string(take(rest, ' ', line));
  m.inode = number(take(rest, ' ', line), 10, line);
  // The name is padded with spaces and may itself contain spaces.
  const std::size_t start = rest.find_first_not_of(' ');
  if (start != std::string_view::npos) m.name = std::string(rest.substr(start));
  return m;
}

#ifdef _WIN32
std::vector<Mapping> read_maps(pid_t pid) {
  // Every region VirtualQuery reports that is not free, as one Mapping per
  // run of equal protection and kind within one allocation: reserved pages
  // and committed no-access pages are both "---", as one inaccessible VMA
  // is on Linux. Shared means a view of a section.
  if (pid != 0) throw std::runtime_error("read_maps: only this process");
  SYSTEM_INFO si;
  ::GetSystemInfo(&si);
  auto at = reinterpret_cast<std::uintptr_t>(si.lpMinimumApplicationAddress);
  const auto top =
      reinterpret_cast<std::uintptr_t>(si.lpMaximumApplicationAddress);
  std::vector<Mapping> maps;
  const void* last_base = nullptr;
  while (at < top) {
    MEMORY_BASIC_INFORMATION mbi;
    if (::VirtualQuery(reinterpret_cast<void*>(at), &mbi, sizeof mbi) == 0) {
      throw std::system_error(static_cast<int>(::GetLastError()),
                              std::system_category(), "VirtualQuery");
    }
    const auto begin = reinterpret_cast<std::uintptr_t>(mbi.BaseAddress);
    const std::uintptr_t end = begin + mbi.RegionSize;
    if (end <= at) break;
    at = end;
    if (mbi.State == MEM_FREE) continue;
    Mapping m;
    m.begin = begin;
    m.end = end;
    const DWORD prot = mbi.State == MEM_COMMIT ? (mbi.Protect & 0xFF) : 0;
    m.read = prot & (PAGE_READONLY | PAGE_READWRITE | PAGE_WRITECOPY |
                     PAGE_EXECUTE_READ | PAGE_EXECUTE_READWRITE |
                     PAGE_EXECUTE_WRITECOPY);
    m.write = prot & (PAGE_READWRITE | PAGE_WRITECOPY | PAGE_EXECUTE_READWRITE |
                      PAGE_EXECUTE_WRITECOPY);
    m.execute = prot & (PAGE_EXECUTE | PAGE_EXECUTE_READ |
                        PAGE_EXECUTE_READWRITE | PAGE_EXECUTE_WRITECOPY);
    m.shared = mbi.Type == MEM_MAPPED;
    m.dev = "00:00";
    m.name = mbi.Type == MEM_IMAGE ? "[image]" : "";
    if (!maps.empty() && maps.back().end == m.begin &&
        last_base == mbi.AllocationBase && maps.back().perms() == m.perms()) {
      maps.back().end = m.end;
    } else {
      maps.push_back(std::move(m));
    }
    last_base = mbi.AllocationBase;
  }
  return maps;
}
#else
std::vector<Mapping> read_maps(pid_t pid) {
  const std::string path =
      pid == 0 ? "/proc/self/maps" : "/proc/" + std::to_string(pid) + "/maps";
  const std::string text = read_file(path);
  std::vector<Mapping> maps;
  std::string_view rest = text;
  while (!rest.empty()) {
    const std::size_t eol = rest.find('\n');
    const std::string_view line = rest.substr(0, eol);
    if (!line.empty()) maps.push_back(parse_maps_line(line));
    rest = eol == std::string_view::npos ? std::string_view()
                                         : rest.substr(eol + 1);
  }
  return maps;
}

#endif

bool maps_tell_read_from_execute() {
#ifdef _WIN32
  return true;  // VirtualQuery reports every page's own protection
#else
  static const bool exact = [] {
    const long ps = ::sysconf(_SC_PAGESIZE);
    const auto page = static_cast<std::size_t>(ps);
    void* p = ::mmap(nullptr, 2 * page, PROT_READ | PROT_EXEC,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    // Where anonymous memory cannot be executable (a W^X policy), this is
    // the kernel's own file: nothing to probe.
    if (p == MAP_FAILED) return true;
    auto* second = static_cast<std::byte*>(p) + page;
    bool result = true;
    if (::mprotect(second, page, PROT_READ) == 0) {
      const Mapping m = mapping_at(second);
      result = m.protection() == "r--";
    }
    if (::munmap(p, 2 * page) != 0)
      throw std::system_error(errno, std::generic_category(), "munmap");
    return result;
  }();
  return exact;
#endif
}

bool maps_list_every_mapping() {
  static const bool complete = [] {
    volatile int local = 0;
    const Mapping m = mapping_at(const_cast<const int*>(&local));
    return m.end != 0;
  }();
  return complete;
}

bool madvise_keeps_guard_pages_apart() {
#ifdef _WIN32
  return true;  // no merging of reservations to guard against
#else
  static const bool apart = [] {
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    void* p = ::mmap(nullptr, 3 * page, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
      throw std::system_error(errno, std::generic_category(), "mmap");
    auto* middle = static_cast<std::byte*>(p) + page;
    bool result = false;
    if (::madvise(middle, page, MADV_DONTDUMP) == 0) {
      const Mapping m = mapping_at(middle);
      result = m.begin == reinterpret_cast<std::uintptr_t>(middle) &&
               m.end == m.begin + page;
    }
    if (::munmap(p, 3 * page) != 0)
      throw std::system_error(errno, std::generic_category(), "munmap");
    return result;
  }();
  return apart;
#endif
}

std::vector<Mapping> writable_and_executable() {
  std::vector<Mapping> found;
  for (Mapping& m : read_maps()) {
    if (m.write && m.execute) found.push_back(std::move(m));
  }
  return found;
}

std::size_t count_vmas(const void* begin, const void* end) {
  const auto b = reinterpret_cast<std::uintptr_t>(begin);
  const auto e = reinterpret_cast<std::uintptr_t>(end);
  std::size_t n = 0;
  for (const Mapping& m : read_maps()) n += m.begin < e && b < m.end;
  return n;
}

Mapping mapping_at(const void* address) {
  const auto a = reinterpret_cast<std::uintptr_t>(address);
  for (Mapping& m : read_maps()) {
    if (m.contains(a)) return std::move(m);
  }
  return {};
}

::testing::AssertionResult check_protection(
    const std::vector<Expected>& expected, const std::vector<Mapping>& maps) {
  if (const auto m = first_mismatch(expected, maps)) {
    return ::testing::AssertionFailure() << describe(*m);
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult audit_arena(const wxa::Arena& arena) {
  // runs() first: the snapshot then also sees any mapping runs() made.
  const std::vector<wxa::RunInfo> runs = arena.runs();
  return audit_runs(arena, runs, read_maps());
}

::testing::AssertionResult audit_arena(const wxa::Arena& arena,
                                       const std::vector<Mapping>& maps) {
  return audit_runs(arena, arena.runs(), maps);
}

}  // namespace wxa::test
