// SPDX-License-Identifier: MIT
// rwx_probe: tries every kind of mapping the W^X oracle judges and prints, one
// line per case, "<case> ok" or "<case> <errno name>", so a test can check
// what the kernel allowed under each wxa-seccomp-run policy.
//
// Usage: rwx_probe            run every case; exit 0 if the probe itself
//                             worked (refusals are results, not failures)
//        rwx_probe --exit N   print nothing and exit with status N
//
// The first line is "policy <WXA_SECCOMP_POLICY or none>". A case that runs
// code prints "ok" only if the code returned the value written into it.
// memfd_create is a case of its own: where the host refuses it (a sandbox's
// filter, a kernel without it), each case that needs a memfd prints
// "<case> no_memfd" instead of being tried.
// Deliberately free of gtest and of library code: it judges the kernel only.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <span>
#include <string>

#include "support/native_code.hpp"

namespace {

constexpr std::uint32_t magic = 0x2A17C0DE;

std::size_t page_size() noexcept {
  const long n = sysconf(_SC_PAGESIZE);  // cannot fail on Linux
  return static_cast<std::size_t>(n);
}

const char* errno_name(int error) noexcept {
  switch (error) {
    case EACCES:
      return "EACCES";
    case EPERM:
      return "EPERM";
    case ENOMEM:
      return "ENOMEM";
    case EINVAL:
      return "EINVAL";
    case ENOSYS:
      return "ENOSYS";
    case EBADF:
      return "EBADF";
    case ENODEV:
      return "ENODEV";
    default:
      return nullptr;
  }
}

void report(const char* name, int error) noexcept {
  if (error == 0) {
    std::printf("%s ok\n", name);
  } else if (const char* e = errno_name(error)) {
    std::printf("%s %s\n", name, e);
  } else {
    std::printf("%s errno%d\n", name, error);
  }
}

// A setup step (not a judged case) failed: the probe cannot go on.
[[noreturn]] void die(const char* what) noexcept {
  std::fprintf(stderr, "rwx_probe: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

void unmap(void* p, std::size_t size) noexcept {
  if (munmap(p, size) != 0) die("munmap");
}

// mmap that reports errno, unmapping on success.
void try_mmap(const char* name, int prot, int flags, int fd = -1) noexcept {
  const std::size_t size = page_size();
  void* p = mmap(nullptr, size, prot, flags, fd, 0);
  if (p == MAP_FAILED) {
    report(name, errno);
    return;
  }
  report(name, 0);
  unmap(p, size);
}

void* map_or_die(int prot, int flags, int fd = -1) noexcept {
  void* p = mmap(nullptr, page_size(), prot, flags, fd, 0);
  if (p == MAP_FAILED) die("mmap (setup)");
  return p;
}

int pkey_mprotect_raw(void* p, std::size_t size, int prot) noexcept {
  // pkey -1 means "no key": the call behaves as mprotect (pkey_mprotect(2)).
  return static_cast<int>(syscall(SYS_pkey_mprotect, p, size, prot, -1));
}

// Maps anonymous RW, then changes protection with `change`.
template <class Change>
void try_change(const char* name, int from_prot, Change change) noexcept {
  void* p = map_or_die(from_prot, MAP_PRIVATE | MAP_ANONYMOUS);
  report(name, change(p, page_size()) == 0 ? 0 : errno);
  unmap(p, page_size());
}

// A one-page memfd, or -1 with errno set when the host refuses
// memfd_create (a result, not a failure of the probe).
int make_memfd() noexcept {
  const int fd = static_cast<int>(
      syscall(SYS_memfd_create, "rwx_probe", unsigned{MFD_CLOEXEC}));
  if (fd < 0) return -1;
  if (ftruncate(fd, static_cast<off_t>(page_size())) != 0) die("ftruncate");
  return fd;
}

void no_memfd(const char* name) noexcept { std::printf("%s no_memfd\n", name); }

using Fn = std::uint32_t();

bool call_returns_magic(const void* code) noexcept {
  return reinterpret_cast<Fn*>(const_cast<void*>(code))() == magic;
}

// The dual_map recipe: write through a shared RW view, run through a shared
// RX view of the same memfd, mapped executable from the start.
void run_dual_map() noexcept {
  const int fd = make_memfd();
  if (fd < 0) return no_memfd("run_dual_map");
  const std::size_t size = page_size();
  auto* rw = static_cast<std::byte*>(
      map_or_die(PROT_READ | PROT_WRITE, MAP_SHARED, fd));
  wxa::test::fill_traps({rw, size});
  if (wxa::test::write_return_imm({rw, size}, magic) == 0) die("write code");
  unmap(rw, size);
  void* rx = mmap(nullptr, size, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
  if (rx == MAP_FAILED) {
    report("run_dual_map", errno);
  } else {
    std::printf("run_dual_map %s\n",
                call_returns_magic(rx) ? "ok" : "wrong_value");
    unmap(rx, size);
  }
  if (close(fd) != 0) die("close");
}

// The protect recipe: write anonymous RW memory, mprotect it RX, call it.
void run_rw_then_rx() noexcept {
  const std::size_t size = page_size();
  auto* p = static_cast<std::byte*>(
      map_or_die(PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS));
  wxa::test::fill_traps({p, size});
  if (wxa::test::write_return_imm({p, size}, magic) == 0) die("write code");
  if (mprotect(p, size, PROT_READ | PROT_EXEC) != 0) {
    report("run_rw_then_rx", errno);
  } else {
    std::printf("run_rw_then_rx %s\n",
                call_returns_magic(p) ? "ok" : "wrong_value");
  }
  unmap(p, size);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--exit") == 0) {
    return std::atoi(argv[2]);
  }
  if (argc != 1) {
    std::fprintf(stderr, "usage: rwx_probe [--exit N]\n");
    return 2;
  }
  const char* policy = std::getenv("WXA_SECCOMP_POLICY");
  std::printf("policy %s\n", policy != nullptr ? policy : "none");

  constexpr int anon = MAP_PRIVATE | MAP_ANONYMOUS;
  constexpr int r = PROT_READ, rw = PROT_READ | PROT_WRITE;
  constexpr int rx = PROT_READ | PROT_EXEC;
  constexpr int rwx = PROT_READ | PROT_WRITE | PROT_EXEC;

  try_mmap("mmap_anon_none", PROT_NONE, anon | MAP_NORESERVE);
  try_mmap("mmap_anon_r", r, anon);
  try_mmap("mmap_anon_rw", rw, anon);
  try_mmap("mmap_anon_rx", rx, anon);
  try_mmap("mmap_anon_rwx", rwx, anon);
  try_mmap("mmap_anon_wx", PROT_WRITE | PROT_EXEC, anon);

  const auto to = [](int prot) {
    return [prot](void* p, std::size_t n) { return mprotect(p, n, prot); };
  };
  const auto pkey_to = [](int prot) {
    return [prot](void* p, std::size_t n) {
      return pkey_mprotect_raw(p, n, prot);
    };
  };
  try_change("mprotect_anon_rw_to_r", rw, to(r));
  try_change("mprotect_anon_rw_to_none", rw, to(PROT_NONE));
  try_change("mprotect_anon_rw_to_rx", rw, to(rx));
  try_change("mprotect_anon_rw_to_rwx", rw, to(rwx));
  try_change("mprotect_anon_none_to_rw", PROT_NONE, to(rw));
  try_change("pkey_mprotect_anon_rw_to_r", rw, pkey_to(r));
  try_change("pkey_mprotect_anon_rw_to_rx", rw, pkey_to(rx));
  try_change("pkey_mprotect_anon_rw_to_rwx", rw, pkey_to(rwx));

  // File-backed code: the probe's own executable, and a memfd.
  const int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  if (self < 0) die("open /proc/self/exe");
  try_mmap("mmap_file_r", r, MAP_PRIVATE, self);
  try_mmap("mmap_file_rx", rx, MAP_PRIVATE, self);
  if (close(self) != 0) die("close");

  const int fd = make_memfd();
  report("memfd_create", fd >= 0 ? 0 : errno);
  if (fd >= 0) {
    try_mmap("mmap_memfd_rw_shared", rw, MAP_SHARED, fd);
    try_mmap("mmap_memfd_rx_shared", rx, MAP_SHARED, fd);
    try_mmap("mmap_memfd_rwx_shared", rwx, MAP_SHARED, fd);
    void* p = map_or_die(r, MAP_SHARED, fd);
    report("mprotect_memfd_r_to_rx",
           mprotect(p, page_size(), rx) == 0 ? 0 : errno);
    unmap(p, page_size());
    if (close(fd) != 0) die("close");
  } else {
    for (const char* name : {"mmap_memfd_rw_shared", "mmap_memfd_rx_shared",
                             "mmap_memfd_rwx_shared", "mprotect_memfd_r_to_rx"})
      no_memfd(name);
  }

  run_dual_map();
  run_rw_then_rx();

  if (std::fflush(stdout) != 0) die("fflush");
  return 0;
}
