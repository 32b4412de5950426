// SPDX-License-Identifier: MIT
// wxa_bench: every way a JIT can get executable memory, side by side in one
// run; see docs/benchmarks.md. Adds --quick, --smoke and --summary to Google
// Benchmark's flags, and prints a summary after Google Benchmark's output.
#include <benchmark/benchmark.h>
#include <sys/utsname.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench_config.h"
#if WXB_HAVE_EXAMPLE_JIT
#include "example_jit.hpp"
#endif
#include "host_costs.hpp"
#include "strategy.hpp"
#include "summary.hpp"
#include "syscall_counter.hpp"
#include "workloads.hpp"

namespace {

// --quick: the comparison that matters, in well under a minute.
constexpr const char* kQuickFilter =
    "--benchmark_filter=^(publish/[^/]+/size:(256|65536)/batch:(1|64|1024)/"
    "|startup/|vma_pressure/|memory/|host/)";
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
  bool quick = false, smoke = false, summary_only = false, have_filter = false,
       have_min_time = false, list_only = false;
  wxb::DisplayFlags display;
  for (int i = 0; i < argc; ++i) {
    if (i > 0 && std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
      continue;
    }
    if (i > 0 && std::strcmp(argv[i], "--smoke") == 0) {
      smoke = true;
      continue;
    }
    if (i > 0 && std::strcmp(argv[i], "--summary") == 0) {
      summary_only = true;
      continue;
    }
    if (starts_with(argv[i], "--benchmark_filter")) have_filter = true;
    if (starts_with(argv[i], "--benchmark_min_time")) have_min_time = true;
    if (starts_with(argv[i], "--benchmark_list_tests"))
      list_only = std::strcmp(argv[i], "--benchmark_list_tests") == 0 ||
                  std::strcmp(argv[i], "--benchmark_list_tests=true") == 0;
    (void)display.parse(argv[i]);  // also left for Google Benchmark to check
    if (std::strcmp(argv[i], "--help") == 0)
      std::printf(
          "wxa_bench [--quick | --smoke] [--summary] [Google Benchmark "
          "flags]\n"
          "  --quick    size 256 and 65536 publish, startup (the example JIT\n"
          "             included), vma_pressure, memory and host/, min time\n"
          "             0.05 s (explicit flags take precedence)\n"
          "  --smoke    every workload and strategy, small parameters, min\n"
          "             time 0.001 s; exit status 1 if any result is wrong\n"
          "  --summary  only the summary: runs publish 256 B at batch 1, 64\n"
          "             and 1024 and startup, min time 0.05 s (with --smoke:\n"
          "             their small parameters, 0.001 s)\n"
          "Every run ends with the summary (on stderr when stdout carries\n"
          "--benchmark_format=json or csv).\n\n");
    args.push_back(argv[i]);
  }
  if (quick && smoke) {
    std::fprintf(stderr, "wxa_bench: --quick and --smoke exclude each other\n");
    return 2;
  }
  const std::string summary_filter =
      "--benchmark_filter=" + wxb::summary_filter(factories());
  if (summary_only && !have_filter)
    args.push_back(const_cast<char*>(summary_filter.c_str()));
  else if (quick && !have_filter)
    args.push_back(const_cast<char*>(kQuickFilter));
  if ((quick || (summary_only && !smoke)) && !have_min_time)
    args.push_back(const_cast<char*>(kQuickMinTime));
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
  wxb::register_host_costs();
  // Google Benchmark's own display (none with --summary), wrapped so that
  // the summary is collected from the same results.
  std::unique_ptr<benchmark::BenchmarkReporter> inner;
  if (!summary_only) {
    std::string error;
    inner = wxb::make_display_reporter(display, error);
    if (!inner) {
      std::fprintf(stderr, "wxa_bench: %s\n", error.c_str());
      return 1;
    }
  }
  wxb::SummaryReporter reporter(std::move(inner));
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  // JSON or CSV on stdout stays parseable: the summary goes to stderr.
  const bool text_stdout = summary_only || display.format == "console";
  if (!list_only)
    reporter.print(text_stdout ? std::cout : std::cerr, factories());

  if (const int failed = wxb::failed_benchmarks(); failed > 0) {
    std::fprintf(stderr, "wxa_bench: %d benchmark(s) failed\n", failed);
    return 1;
  }
  return 0;
}
