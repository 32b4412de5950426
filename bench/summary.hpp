// SPDX-License-Identifier: MIT
// The summary printed after a run: every strategy's time per function for
// 256-byte functions at batch 1, 64 and 1024 and for startup, against
// asmjit_rwx, with its system calls, VMAs and how far it keeps W^X; and the
// memory workload's resident memory and address space.
#pragma once

#include <benchmark/benchmark.h>

#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "strategy.hpp"

namespace wxb {

/// How Google Benchmark's own display is asked for on the command line
/// (--benchmark_format, --benchmark_color, --benchmark_counters_tabular),
/// read by main() before benchmark::Initialize() consumes the flags.
struct DisplayFlags {
  std::string format = "console";
  std::string color = "auto";
  bool tabular = false;
  /// Reads one argument; false if it is none of the flags above.
  bool parse(const char* arg);
};

/// The reporter Google Benchmark would make for `flags` when given none:
/// console, JSON or CSV on stdout. Null (and a message in `error`) for an
/// unknown format.
std::unique_ptr<benchmark::BenchmarkReporter> make_display_reporter(
    const DisplayFlags& flags, std::string& error);

/// A display reporter that passes every call on to `inner` (none: it shows
/// nothing) and keeps the results the summary needs.
class SummaryReporter final : public benchmark::BenchmarkReporter {
 public:
  explicit SummaryReporter(std::unique_ptr<benchmark::BenchmarkReporter> inner);

  bool ReportContext(const Context& context) override;
  void ReportRuns(const std::vector<Run>& runs) override;
  void Finalize() override;

  /// Writes the summary tables: a row per factory for each scenario that ran.
  void print(std::ostream& out, const std::vector<Factory>& factories) const;

 private:
  struct Result {
    std::vector<double> ns;  // ns per function, one per repetition
    double median_ns = -1;   // the median aggregate, when reported
    double syscalls = -1, vmas = -1;
    // memory: resident per byte of live code, MiB left after release and
    // after trim, address space per reservation.
    double resident_per_code = -1, released_mib = -1, trimmed_mib = -1,
           address_space = -1;
    std::string error;  // the run ended with this message
  };
  // (workload, strategy, parameter) -> result; the parameter is the batch
  // for publish (size 256), the function count for startup and memory.
  using Key = std::tuple<std::string, std::string, long long>;

  void print_scenario(std::ostream& out, const std::string& title,
                      const std::string& workload, long long parameter,
                      const std::vector<Factory>& factories) const;
  void print_memory(std::ostream& out, long long functions,
                    const std::vector<Factory>& factories) const;
  [[nodiscard]] double ns_of(const Result& r) const;

  std::unique_ptr<benchmark::BenchmarkReporter> inner_;
  std::map<Key, Result> results_;
  std::vector<double> pwrite_ns_;  // host/pwrite_memfd of a page, per run
};

/// The --benchmark_filter that runs what the summary shows, for `factories`.
std::string summary_filter(const std::vector<Factory>& factories);

}  // namespace wxb
