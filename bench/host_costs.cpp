// SPDX-License-Identifier: MIT
// host/: what this machine charges for the kernel's part of a publish, to
// read the other figures against. An empty system call, and a pwrite() of
// a few bytes into a memfd whose pages are mapped (what a kernel_write
// commit of one small chunk makes: one call). The floor of
// publish/wxarena_kernel_write/size:256/batch:1 is one such call a function
// (a round's seal and the previous round's traps, adjacent, in one
// pwritev), however little the library adds around it.
#include "host_costs.hpp"

#include <benchmark/benchmark.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "strategy.hpp"
#include "workloads.hpp"

namespace wxb {
namespace {

void bm_syscall(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(::syscall(SYS_getppid));
}

void bm_pwrite_memfd(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  const long ps = ::sysconf(_SC_PAGESIZE);
  constexpr std::size_t kPages = 64;  // written in turn, like a publish
  const std::size_t len = kPages * static_cast<std::size_t>(ps);
  const int fd = ::memfd_create("wxa-bench-host", MFD_CLOEXEC);
  if (fd < 0) {
    fail_benchmark(
        state, "host",
        std::string(kRefusedPrefix) + "memfd_create: " + std::strerror(errno));
    return;
  }
  void* view = MAP_FAILED;
  if (::ftruncate(fd, static_cast<off_t>(len)) == 0)
    view = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
  if (view == MAP_FAILED) {
    fail_benchmark(state, "host",
                   std::string("ftruncate/mmap: ") + std::strerror(errno));
    ::close(fd);
    return;
  }
  // The pages exist and are mapped, as the code pages of a warm arena.
  const std::vector<std::byte> buf(std::max(len, bytes), std::byte{0xCC});
  bool ok = ::pwrite(fd, buf.data(), len, 0) == static_cast<ssize_t>(len);
  for (std::size_t p = 0; ok && p < len; p += static_cast<std::size_t>(ps))
    benchmark::DoNotOptimize(static_cast<const volatile char*>(view)[p]);
  // Each write goes to the next slot, a page or `bytes` apart.
  const std::size_t stride = std::max(bytes, static_cast<std::size_t>(ps));
  const std::size_t slots = std::max<std::size_t>(1, len / stride);
  std::size_t k = 0;
  for (auto _ : state) {
    if (!ok) break;
    const auto at = static_cast<off_t>((k++ % slots) * stride);
    ok = ::pwrite(fd, buf.data(), bytes, at) == static_cast<ssize_t>(bytes);
  }
  if (!ok)
    fail_benchmark(state, "host",
                   std::string("pwrite: ") + std::strerror(errno));
  // Teardown: nothing useful to do if these fail; the process exits soon.
  (void)::munmap(view, len);
  (void)::close(fd);
}

}  // namespace

void register_host_costs() {
  benchmark::RegisterBenchmark("host/syscall_getppid", bm_syscall);
  benchmark::RegisterBenchmark("host/pwrite_memfd", bm_pwrite_memfd)
      ->ArgName("bytes")
      ->Arg(64)
      ->Arg(4096)
      ->Arg(32768);
}

}  // namespace wxb
