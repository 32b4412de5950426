// SPDX-License-Identifier: MIT
// wxa-audit: reports every writable+executable mapping of a process and the
// wxarena regions in it, from /proc/PID/maps or a saved copy of that file.
// A kernel_write arena's code (/memfd:wxarena-code) must have no writable
// mapping at all: one is reported like a writable+executable mapping.
//
// Exit status: 0 when no mapping is writable and executable and no
// kernel_write code is mapped writable, 1 otherwise, 2 when the maps cannot
// be read or the arguments are wrong.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

namespace {

struct Mapping {
  unsigned long long begin = 0, end = 0, offset = 0;
  std::string perms, name;
};

bool parse_line(const std::string& line, Mapping& m) {
  char perms[8] = {};
  int name_at = 0;
  unsigned long long inode = 0;
  char dev[32] = {};
  if (std::sscanf(line.c_str(), "%llx-%llx %7s %llx %31s %llu %n", &m.begin,
                  &m.end, perms, &m.offset, dev, &inode, &name_at) < 6)
    return false;
  m.perms = perms;
  m.name = name_at > 0 && static_cast<std::size_t>(name_at) <= line.size()
               ? line.substr(name_at)
               : std::string();
  return m.perms.size() >= 3;
}

// What a wxarena page with this protection is: the arena's state map is
// private, but each state has its own protection (see DESIGN.md).
const char* state_of(const Mapping& m) {
  const std::string p = m.perms.substr(0, 3);
  if (m.name.rfind("[anon:wxarena-staging", 0) == 0)
    return p == "rw-" ? "staging" : "UNEXPECTED";
  // kernel_write: every page in use is read+execute (code, traps, or the
  // code of a chunk being rewritten in staging); read-only data is r--.
  if (m.name.rfind("/memfd:wxarena-code", 0) == 0 && p == "r-x")
    return "code, traps or open";
  if (p == "r-x") return "executable";
  if (p == "r--") return "read_only";
  if (p == "rw-") return "writable or open";
  if (p == "---") return "free or retired";
  return "UNEXPECTED";
}

bool is_arena(const Mapping& m) {
  return m.name.rfind("[anon:wxarena", 0) == 0 ||
         m.name.rfind("/memfd:wxarena", 0) == 0;
}

int usage() {
  std::cerr << "usage: wxa-audit PID | wxa-audit --maps FILE [--quiet]\n"
               "Lists writable+executable mappings and wxarena regions; exits "
               "1 if any\n"
               "mapping is writable and executable.\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string path;
  bool quiet = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--maps" && i + 1 < argc) {
      path = argv[++i];
    } else if (a == "--quiet") {
      quiet = true;
    } else if (a == "-h" || a == "--help") {
      usage();
      return 0;
    } else if (path.empty() &&
               a.find_first_not_of("0123456789") == std::string::npos) {
      path = "/proc/" + a + "/maps";
    } else {
      return usage();
    }
  }
  if (path.empty()) return usage();

  std::ifstream in(path);
  if (!in) {
    std::cerr << "wxa-audit: cannot read " << path << ": "
              << std::strerror(errno) << "\n";
    return 2;
  }
  std::vector<Mapping> wx, code_writable;
  std::map<std::string, std::map<std::string, unsigned long long>>
      arena;  // name -> state -> bytes
  std::size_t lines = 0, arena_vmas = 0;
  std::string line;
  while (std::getline(in, line)) {
    Mapping m;
    if (!parse_line(line, m)) {
      std::cerr << "wxa-audit: " << path << ": unreadable line: " << line
                << "\n";
      return 2;
    }
    ++lines;
    if (m.perms[1] == 'w' && m.perms[2] == 'x') wx.push_back(m);
    if (m.perms[1] == 'w' && m.name.rfind("/memfd:wxarena-code", 0) == 0)
      code_writable.push_back(m);
    if (is_arena(m)) {
      ++arena_vmas;
      arena[m.name][state_of(m)] += m.end - m.begin;
    }
  }
  if (lines == 0) {
    std::cerr << "wxa-audit: " << path << ": no mappings\n";
    return 2;
  }

  if (!quiet) {
    std::printf("%zu mappings read from %s\n", lines, path.c_str());
    if (arena.empty()) {
      std::printf(
          "no wxarena regions (arenas are named where the kernel allows it)\n");
    } else {
      std::printf("wxarena regions: %zu VMAs\n", arena_vmas);
      for (const auto& [name, states] : arena)
        for (const auto& [state, bytes] : states)
          std::printf("  %-28s %-18s %10llu KiB\n", name.c_str(), state.c_str(),
                      bytes >> 10);
    }
  }
  if (!code_writable.empty()) {
    std::printf("%zu writable mapping%s of kernel_write code:\n",
                code_writable.size(), code_writable.size() == 1 ? "" : "s");
    for (const Mapping& m : code_writable)
      std::printf("  %llx-%llx %s %s\n", m.begin, m.end, m.perms.c_str(),
                  m.name.c_str());
  }
  if (wx.empty()) {
    if (!quiet && code_writable.empty())
      std::printf("no writable+executable mapping: W^X holds\n");
    return code_writable.empty() ? 0 : 1;
  }
  std::printf("%zu writable+executable mapping%s:\n", wx.size(),
              wx.size() == 1 ? "" : "s");
  for (const Mapping& m : wx)
    std::printf("  %llx-%llx %s %s\n", m.begin, m.end, m.perms.c_str(),
                m.name.empty() ? "[anonymous]" : m.name.c_str());
  return 1;
}
