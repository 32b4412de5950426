// SPDX-License-Identifier: MIT
// The real platform of the transition fuzzers: the kernel, audited through
// /proc/self/maps and /proc/self/fd; sealed code is called.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "pal/pal.hpp"
#include "platforms.hpp"

namespace {

using wxa::fuzz::expect;
using wxa::fuzz::Vma;

std::vector<Vma> read_maps() {
  std::string text;
  const int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  expect(fd >= 0, "cannot open /proc/self/maps: %s", std::strerror(errno));
  char buf[16384];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    expect(r >= 0, "cannot read /proc/self/maps: %s", std::strerror(errno));
    if (r == 0) break;
    text.append(buf, static_cast<std::size_t>(r));
  }
  ::close(fd);
  std::vector<Vma> out;
  const char* p = text.c_str();
  while (*p) {
    unsigned long b = 0, e = 0;
    Vma v;
    if (std::sscanf(p, "%lx-%lx %4s", &b, &e, v.perms) == 3) {
      v.begin = b;
      v.end = e;
      out.push_back(v);
    }
    const char* nl = std::strchr(p, '\n');
    if (!nl) break;
    p = nl + 1;
  }
  return out;
}

// Whether /proc/self/maps tells r-- pages from r-x neighbours. Linux does;
// qemu-user builds the file from its host mappings, where both are r-- and
// merge, and prints the first page's protection for the whole range. Probed
// once on a real two-page mapping (where anonymous memory may not be
// executable, this is the kernel's own file).
bool exact_maps() {
  static const bool exact = [] {
    const auto ps = static_cast<std::size_t>(::getpagesize());
    void* p = ::mmap(nullptr, 2 * ps, PROT_READ | PROT_EXEC,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return true;
    const std::uintptr_t second = reinterpret_cast<std::uintptr_t>(p) + ps;
    bool result = true;
    if (::mprotect(reinterpret_cast<void*>(second), ps, PROT_READ) == 0)
      for (const Vma& v : read_maps())
        if (v.begin <= second && second < v.end)
          result = std::strncmp(v.perms, "r--", 3) == 0;
    expect(::munmap(p, 2 * ps) == 0, "munmap: %s", std::strerror(errno));
    return result;
  }();
  return exact;
}

std::size_t count_fds() {
  DIR* d = ::opendir("/proc/self/fd");
  expect(d != nullptr, "cannot open /proc/self/fd");
  std::size_t n = 0;
  while (const dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
  ::closedir(d);
  return n;
}

class RealPlatform final : public wxa::fuzz::Platform {
 public:
  wxa::detail::Pal& pal() noexcept override {
    return wxa::detail::system_pal();
  }
  void maps(std::vector<Vma>& out) override { out = read_maps(); }
  bool maps_exact() override { return exact_maps(); }
  std::size_t handles() override { return count_fds(); }
  bool returns(std::uintptr_t rx, std::uint32_t value, unsigned& got) override {
    got = reinterpret_cast<unsigned (*)()>(rx)();
    return got == value;
  }
};

}  // namespace

wxa::fuzz::Platform& wxa::fuzz::real_platform() {
  static RealPlatform platform;
  return platform;
}
