// SPDX-License-Identifier: MIT
// wxa_bench: every way a JIT can get executable memory, side by side in one
// run; see docs/benchmarks.md. Adds --quick to Google Benchmark's flags.
#include <benchmark/benchmark.h>
#include <sys/utsname.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench_config.h"
#if WXB_HAVE_EXAMPLE_JIT
#include "example_jit.hpp"
#endif
#include "strategy.hpp"
#include "syscall_counter.hpp"
#include "workloads.hpp"

namespace {

// --quick: the comparison that matters, in well under a minute.
constexpr const char* kQuickFilter =
    "--benchmark_filter=^(publish/[^/]+/size:(256|65536)/batch:(1|64|1024)/"
    "|startup/|vma_pressure/)";
constexpr const char* kQuickMinTime = "--benchmark_min_time=0.05";
// --smoke: every workload and strategy on small parameters, run once.
constexpr const char* kSmokeMinTime = "--benchmark_min_time=0.001";

bool starts_with(const char* arg, std::string_view prefix) {
  return std::string_view(arg).substr(0, prefix.size()) == prefix;
}

std::vector<wxb::Factory>& factories() {
  static std::vector<wxb::Factory> all = [] {
    std::vector<wxb::Factory> v;
#if WXB_HAVE_WXARENA
    wxb::add_wxarena_strategies(v);
#endif
    wxb::add_baseline_strategies(v);
#if WXB_HAVE_LLVM
    wxb::add_llvm_strategies(v);
#endif
#if WXB_HAVE_ASMJIT
    wxb::add_asmjit_strategies(v);
#endif
    wxb::add_rwx_floor_strategy(v);
    return v;
  }();
  return all;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args;
  bool quick = false, smoke = false, have_filter = false, have_min_time = false;
  for (int i = 0; i < argc; ++i) {
    if (i > 0 && std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
      continue;
    }
    if (i > 0 && std::strcmp(argv[i], "--smoke") == 0) {
      smoke = true;
      continue;
    }
    if (starts_with(argv[i], "--benchmark_filter")) have_filter = true;
    if (starts_with(argv[i], "--benchmark_min_time")) have_min_time = true;
    if (std::strcmp(argv[i], "--help") == 0)
      std::printf(
          "wxa_bench [--quick | --smoke] [Google Benchmark flags]\n"
          "  --quick  size 256 and 65536 publish, startup (the example JIT\n"
          "           included) and vma_pressure, min time 0.05 s (explicit\n"
          "           flags take precedence)\n"
          "  --smoke  every workload and strategy, small parameters, min\n"
          "           time 0.001 s; exit status 1 if any result is wrong\n\n");
    args.push_back(argv[i]);
  }
  if (quick && smoke) {
    std::fprintf(stderr, "wxa_bench: --quick and --smoke exclude each other\n");
    return 2;
  }
  if (quick && !have_filter) args.push_back(const_cast<char*>(kQuickFilter));
  if (quick && !have_min_time) args.push_back(const_cast<char*>(kQuickMinTime));
  if (smoke && !have_min_time) args.push_back(const_cast<char*>(kSmokeMinTime));
  int n = static_cast<int>(args.size());
  args.push_back(nullptr);

  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 2;

  std::string names;
  for (const wxb::Factory& f : factories())
    names += (names.empty() ? "" : " ") + f.name;
  if (utsname u{}; ::uname(&u) == 0)
    benchmark::AddCustomContext("kernel",
                                std::string(u.sysname) + " " + u.release);
  const unsigned cores = std::thread::hardware_concurrency();
  benchmark::AddCustomContext(
      "cores", "this machine has " + std::to_string(cores) +
                   " cores; threads:2 can at best double threads:1");
  benchmark::AddCustomContext("strategies", names);
  benchmark::AddCustomContext(
      "syscall_counter",
      wxb::syscall_counter::available()
          ? "syscall user dispatch (os_syscalls_per_fn)"
          : "unavailable: syscalls_per_fn only where a strategy counts "
            "its own");
  if (quick) benchmark::AddCustomContext("mode", "quick");
  if (smoke) benchmark::AddCustomContext("mode", "smoke (small parameters)");

  wxb::register_workloads(factories(),
                          smoke ? wxb::Scale::smoke : wxb::Scale::full);
#if WXB_HAVE_EXAMPLE_JIT
  wxb::register_example_jit(smoke ? wxb::Scale::smoke : wxb::Scale::full);
#endif
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

  if (const int failed = wxb::failed_benchmarks(); failed > 0) {
    std::fprintf(stderr, "wxa_bench: %d benchmark(s) failed\n", failed);
    return 1;
  }
  return 0;
}
