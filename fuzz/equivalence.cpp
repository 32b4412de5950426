// SPDX-License-Identifier: MIT
// Replays inputs on the real platform and on SimPal and compares their
// transcripts: every operation's result and error code, the injected
// failures' calls, each arena's final runs() and its address-free stats.
// A difference is a bug in SimPal, or a finding about the library.
#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "platforms.hpp"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000  // Linux 4.17
#endif

namespace {

bool read_file(const std::string& path, std::vector<std::uint8_t>& out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  std::uint8_t buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
    out.insert(out.end(), buf, buf + n);
  std::fclose(f);
  return true;
}

// True if both platforms told the same story.
bool compare(const std::string& path) {
  std::vector<std::uint8_t> data;
  if (!read_file(path, data)) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    return false;
  }
  wxa::fuzz::record_transcript(true);
  wxa::fuzz::run_input(wxa::fuzz::real_platform(), data.data(), data.size());
  const std::vector<std::string> real = wxa::fuzz::transcript();
  wxa::fuzz::run_input(wxa::fuzz::sim_platform(), data.data(), data.size());
  const std::vector<std::string> sim = wxa::fuzz::transcript();
  wxa::fuzz::record_transcript(false);
  const std::size_t n = std::max(real.size(), sim.size());
  for (std::size_t i = 0; i < n; ++i) {
    const std::string a = i < real.size() ? real[i] : "(nothing)";
    const std::string b = i < sim.size() ? sim[i] : "(nothing)";
    if (a == b) continue;
    std::printf("%s: line %zu differs\n  real: %s\n  sim:  %s\n", path.c_str(),
                i + 1, a.c_str(), b.c_str());
    return false;
  }
  std::printf("%s: %zu lines agree\n", path.c_str(), real.size());
  return true;
}

// Reserves the holes among this process's mappings that the kernel's
// top-down search would meet before the free area below them, so that it
// has, as SimPal, one place for the next reservation: right below the
// lowest. A hole the loader left between two libraries, or memory given
// back since, would otherwise take a small reservation that SimPal, whose
// address space has none, places below the last one. Which holes: those
// above a probe of 1 GiB (the kernel puts it in the highest gap that
// fits, so the gaps above it are smaller), up to the mapping below the
// stack (the gap right below the stack is left as it is: the stack grows
// into it). The plugs are PROT_NONE, cost no memory and stay; without
// MAP_NORESERVE, unlike the library's reservations, so that the kernel
// never merges one with a reservation next to it. False (with the reason
// on stderr) if a call failed.
bool plug_holes() {
  constexpr std::size_t kProbe = std::size_t{1} << 30;
  void* probe = ::mmap(nullptr, kProbe, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (probe == MAP_FAILED) return true;  // (an address-space limit): as is
  const auto floor = reinterpret_cast<std::uintptr_t>(probe) + kProbe;
  struct Range {
    std::uintptr_t begin, end;
  };
  std::vector<Range> holes;
  std::ifstream maps("/proc/self/maps");
  bool ok = maps.is_open();
  if (!ok) std::fprintf(stderr, "cannot read /proc/self/maps\n");
  std::uintptr_t last = 0;  // the end of the mapping before
  bool stack = false;       // (not known: nothing is plugged)
  std::string line;
  while (ok && !stack && std::getline(maps, line)) {
    unsigned long long b = 0, e = 0;
    if (std::sscanf(line.c_str(), "%llx-%llx", &b, &e) != 2) continue;
    stack = line.find("[stack]") != std::string::npos;
    if (!stack && last >= floor && b > last) holes.push_back({last, b});
    last = e;
  }
  if (!stack) holes.clear();
  if (::munmap(probe, kProbe) != 0) {
    std::perror("munmap");
    ok = false;
  }
  for (const Range& h : holes) {
    void* want = reinterpret_cast<void*>(h.begin);
    const std::size_t bytes = h.end - h.begin;
    void* p = ::mmap(want, bytes, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    // (EEXIST: mapped since the maps were read. A kernel without
    // MAP_FIXED_NOREPLACE takes the address as a hint.)
    if (p == MAP_FAILED && errno != EEXIST) {
      std::perror("mmap of a hole");
      ok = false;
    } else if (p != MAP_FAILED && p != want && ::munmap(p, bytes) != 0) {
      std::perror("munmap");
      ok = false;
    }
  }
  return ok;
}

// SimPal places reservations as Linux does: top down, each new one right
// below the last, and a range just unmapped is the next one's. The
// seeds' stories depend on it (a stale pointer lands in a later arena, or
// nowhere). Empty if this process's mmap places so; else what differs (an
// emulator such as qemu-user has an allocator of its own).
std::string placement_differs() {
  const std::size_t ps = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t bytes = 16 * ps;
  auto map = [&] {
    void* p = ::mmap(nullptr, bytes, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? nullptr : static_cast<char*>(p);
  };
  char* a = map();
  char* b = map();
  std::string why;
  if (!a || !b)
    why = "mmap failed";
  else if (b + bytes != a)
    why = "a second mapping is not placed right below the first";
  if (b && ::munmap(b, bytes) != 0) why = "munmap failed";
  char* c = why.empty() ? map() : nullptr;
  if (why.empty() && c != b)
    why = "a range just unmapped is not the next mapping's";
  if (c && ::munmap(c, bytes) != 0) why = "munmap failed";
  if (a && ::munmap(a, bytes) != 0) why = "munmap failed";
  return why;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    struct stat st {};
    if (::stat(argv[i], &st) != 0) {
      std::fprintf(stderr, "no such input: %s\n", argv[i]);
      return 2;
    }
    if (!S_ISDIR(st.st_mode)) {
      files.emplace_back(argv[i]);
      continue;
    }
    DIR* d = ::opendir(argv[i]);
    if (!d) return 2;
    std::vector<std::string> in_dir;
    while (const dirent* e = ::readdir(d))
      if (e->d_name[0] != '.')
        in_dir.push_back(std::string(argv[i]) + "/" + e->d_name);
    ::closedir(d);
    std::sort(in_dir.begin(), in_dir.end());
    files.insert(files.end(), in_dir.begin(), in_dir.end());
  }
  if (files.empty()) {
    std::fprintf(stderr, "no inputs\n");
    return 2;
  }
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  // A sanitizer's allocator maps memory of its own between the library's
  // calls (its threads too), so where the kernel places a reservation is
  // not reproducible: the probe below passes or not from one run to the
  // next.
  std::printf(
      "SKIP: under a sanitizer, whose allocator maps memory between the "
      "library's calls; the kernel's placement is not reproducible\n");
  return 77;
#endif
#endif
  if (!plug_holes()) return 2;
  if (const std::string why = placement_differs(); !why.empty()) {
    std::printf(
        "SKIP: this platform places mappings unlike Linux (%s); "
        "SimPal models Linux's placement\n",
        why.c_str());
    return 77;
  }
  std::size_t differ = 0;
  // (What the replays allocated and gave back may have left holes too.)
  for (const std::string& f : files) {
    if (!plug_holes()) return 2;
    differ += !compare(f);
  }
  std::printf("%zu of %zu inputs differ between the kernel and SimPal\n",
              differ, files.size());
  return differ == 0 ? 0 : 1;
}
