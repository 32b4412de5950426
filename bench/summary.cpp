// SPDX-License-Identifier: MIT
// The summary printed after a run, collected from the results as Google
// Benchmark reports them (no second run), and the display reporter it wraps.
#include "summary.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string_view>
#include <tuple>

namespace wxb {
namespace {

constexpr long long kSummarySize = 256;
constexpr long long kSummaryBatches[] = {1, 64, 1024};
constexpr const char* kReference = "asmjit_rwx";
// Batch 1 is read against one pwrite of a page into a memfd (host/), the
// one system call a kernel_write commit makes, for this strategy.
constexpr long long kPwriteBytes = 4096;
constexpr const char* kPwriteReader = "wxarena_heap";

// Google Benchmark's reading of a boolean flag's value ("--flag" alone is
// true; "0", "f", "n", "false", "no", "off" are false).
bool truthy(std::string_view value) {
  if (value.empty()) return true;
  std::string lower;
  for (const char c : value)
    lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower.size() == 1)
    return std::isalnum(static_cast<unsigned char>(lower[0])) && lower != "0" &&
           lower != "f" && lower != "n";
  return lower != "false" && lower != "no" && lower != "off";
}

// --name=value, --name value is not accepted by Google Benchmark either.
bool flag_value(const char* arg, std::string_view name, std::string& value,
                bool boolean) {
  std::string_view a(arg);
  if (a.substr(0, name.size()) != name) return false;
  a.remove_prefix(name.size());
  if (a.empty() && boolean) {
    value.clear();
    return true;
  }
  if (a.empty() || a.front() != '=') return false;
  value = std::string(a.substr(1));
  return true;
}

// Google Benchmark colours the console when stdout is a terminal whose TERM
// is one it knows (src/colorprint.cc, IsColorTerminal).
bool color_terminal() {
  static constexpr const char* kTerms[] = {
      "xterm",         "xterm-color",     "xterm-256color",
      "screen",        "screen-256color", "tmux",
      "tmux-256color", "rxvt-unicode",    "rxvt-unicode-256color",
      "linux",         "cygwin"};
  const char* term = std::getenv("TERM");
  if (term == nullptr || ::isatty(STDOUT_FILENO) == 0) return false;
  return std::any_of(std::begin(kTerms), std::end(kTerms),
                     [&](const char* t) { return std::strcmp(term, t) == 0; });
}

// The parts of "publish/<strategy>/size:256/batch:64/real_time".
struct Name {
  std::string workload, strategy;
  std::map<std::string, long long> params;
};

Name parse_name(const std::string& name) {
  Name n;
  std::size_t at = 0;
  for (int part = 0; at <= name.size(); ++part) {
    std::size_t end = name.find('/', at);
    if (end == std::string::npos) end = name.size();
    const std::string piece = name.substr(at, end - at);
    if (part == 0) {
      n.workload = piece;
    } else if (part == 1) {
      n.strategy = piece;
    } else if (const auto colon = piece.find(':'); colon != std::string::npos) {
      n.params[piece.substr(0, colon)] =
          std::strtoll(piece.c_str() + colon + 1, nullptr, 10);
    }
    at = end + 1;
  }
  return n;
}

double counter(const benchmark::BenchmarkReporter::Run& run, const char* name) {
  const auto it = run.counters.find(name);
  return it == run.counters.end() ? -1.0 : it->second.value;
}

// For counters that may be negative (memory above a baseline).
double counter_or_nan(const benchmark::BenchmarkReporter::Run& run,
                      const char* name) {
  const auto it = run.counters.find(name);
  return it == run.counters.end() ? std::nan("") : it->second.value;
}

double median(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

// Plain units, no SI-suffixed counters: "57 ns", "2.31 µs", "1.5 ms".
std::string format_time(double ns) {
  char text[32];
  if (ns < 0) return "–";
  if (ns < 10)
    std::snprintf(text, sizeof text, "%.1f ns", ns);
  else if (ns < 1e3)
    std::snprintf(text, sizeof text, "%.0f ns", ns);
  else if (ns < 1e4)
    std::snprintf(text, sizeof text, "%.2f µs", ns / 1e3);
  else if (ns < 1e6)
    std::snprintf(text, sizeof text, "%.0f µs", ns / 1e3);
  else
    std::snprintf(text, sizeof text, "%.1f ms", ns / 1e6);
  return text;
}

std::string format_ratio(double x) {
  char text[32];
  if (x < 0) return "–";
  std::snprintf(text, sizeof text, x >= 100 ? "%.0f×" : "%.2f×", x);
  return text;
}

std::string format_count(double x) {
  char text[32];
  if (x < 0) return "–";
  if (x == 0)
    std::snprintf(text, sizeof text, "0");
  else if (x >= 10)
    std::snprintf(text, sizeof text, "%.1f", x);
  else if (x >= 0.01)
    std::snprintf(text, sizeof text, "%.3f", x);
  else
    std::snprintf(text, sizeof text, "%.5f", x);
  return text;
}

// 50000 -> "50,000".
std::string thousands(long long n) {
  std::string digits = std::to_string(n), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// Width on a terminal: code points, so that "µ" and "×" count once.
std::size_t width(const std::string& s) {
  std::size_t n = 0;
  for (const char c : s)
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  return n;
}

std::string left(const std::string& s, std::size_t w) {
  const std::size_t n = width(s);
  return n >= w ? s : s + std::string(w - n, ' ');
}

std::string right(const std::string& s, std::size_t w) {
  const std::size_t n = width(s);
  return n >= w ? s : std::string(w - n, ' ') + s;
}

// "refused: wxa::Arena::create (backend kernel_write): ..." out of
// "wxarena_kernel_write: refused: ...", cut to fit a line.
std::string short_error(const std::string& message) {
  std::string text = message;
  const std::string refused(kRefusedPrefix);
  if (const auto at = text.find(refused); at != std::string::npos)
    text = "refused: " + text.substr(at + refused.size());
  else if (const auto colon = text.find(": "); colon != std::string::npos)
    text = "error: " + text.substr(colon + 2);
  constexpr std::size_t kMax = 100;
  if (width(text) > kMax) {
    std::size_t cut = kMax - 3;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80)
      --cut;
    text = text.substr(0, cut) + "...";
  }
  return text;
}

constexpr std::size_t kWxWidth = 8, kTimeWidth = 10, kRatioWidth = 14,
                      kCallsWidth = 12, kVmasWidth = 7, kMemWidth = 14;

// "42.0 MiB"; NaN: not measured.
std::string format_mib(double x) {
  char text[32];
  if (std::isnan(x)) return "–";
  std::snprintf(text, sizeof text, "%.1f MiB", x);
  return text;
}

}  // namespace

bool DisplayFlags::parse(const char* arg) {
  std::string value;
  if (flag_value(arg, "--benchmark_format", value, false)) {
    format = value;
    return true;
  }
  if (flag_value(arg, "--benchmark_color", value, true)) {
    color = value.empty() ? "true" : value;
    return true;
  }
  if (flag_value(arg, "--benchmark_counters_tabular", value, true)) {
    tabular = truthy(value);
    return true;
  }
  return false;
}

std::unique_ptr<benchmark::BenchmarkReporter> make_display_reporter(
    const DisplayFlags& flags, std::string& error) {
  if (flags.format == "console") {
    const bool color =
        flags.color == "auto" ? color_terminal() : truthy(flags.color);
    int options = benchmark::ConsoleReporter::OO_None;
    if (color) options |= benchmark::ConsoleReporter::OO_Color;
    if (flags.tabular) options |= benchmark::ConsoleReporter::OO_Tabular;
    return std::make_unique<benchmark::ConsoleReporter>(
        static_cast<benchmark::ConsoleReporter::OutputOptions>(options));
  }
  if (flags.format == "json")
    return std::make_unique<benchmark::JSONReporter>();
  if (flags.format == "csv") {
    // Still offered by Google Benchmark, which marks it deprecated.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    return std::make_unique<benchmark::CSVReporter>();
#pragma GCC diagnostic pop
  }
  error = "Unexpected format: '" + flags.format + "'";
  return nullptr;
}

SummaryReporter::SummaryReporter(
    std::unique_ptr<benchmark::BenchmarkReporter> inner)
    : inner_(std::move(inner)) {}

bool SummaryReporter::ReportContext(const Context& context) {
  return inner_ ? inner_->ReportContext(context) : true;
}

void SummaryReporter::ReportRuns(const std::vector<Run>& runs) {
  if (inner_) inner_->ReportRuns(runs);
  for (const Run& run : runs) {
    const Name n = parse_name(run.run_name.str());
    long long parameter = 0;
    if (n.workload == "publish") {
      const auto size = n.params.find("size");
      const auto batch = n.params.find("batch");
      if (size == n.params.end() || size->second != kSummarySize ||
          batch == n.params.end())
        continue;
      parameter = batch->second;
    } else if (n.workload == "host" && n.strategy == "pwrite_memfd") {
      const auto bytes = n.params.find("bytes");
      if (bytes != n.params.end() && bytes->second == kPwriteBytes &&
          !run.error_occurred && run.run_type == Run::RT_Iteration) {
        const double ns = run.GetAdjustedRealTime() * 1e9 /
                          benchmark::GetTimeUnitMultiplier(run.time_unit);
        pwrite_ns_.push_back(ns);
      }
      continue;
    } else if (n.workload == "startup" || n.workload == "memory") {
      const auto functions = n.params.find("functions");
      if (functions == n.params.end()) continue;
      parameter = functions->second;
    } else {
      continue;
    }
    Result& r = results_[{n.workload, n.strategy, parameter}];
    if (run.error_occurred) {
      r.error = run.error_message;
      continue;
    }
    const double ns = counter(run, "ns_per_fn");
    if (run.run_type == Run::RT_Aggregate) {
      if (run.aggregate_name == "median") r.median_ns = ns;
      continue;
    }
    if (ns >= 0) r.ns.push_back(ns);
    double calls = counter(run, "syscalls_per_fn");
    if (calls < 0) calls = counter(run, "os_syscalls_per_fn");
    if (calls >= 0) r.syscalls = calls;
    if (const double v = counter(run, "vmas"); v >= 0) r.vmas = v;
    r.resident_per_code = counter(run, "resident_per_code");
    r.released_mib = counter_or_nan(run, "released_mib");
    r.trimmed_mib = counter_or_nan(run, "trimmed_mib");
    r.address_space = counter(run, "address_space_per_reservation");
  }
}

void SummaryReporter::Finalize() {
  if (inner_) inner_->Finalize();
}

double SummaryReporter::ns_of(const Result& r) const {
  return r.median_ns >= 0 ? r.median_ns : median(r.ns);
}

void SummaryReporter::print_scenario(
    std::ostream& out, const std::string& title, const std::string& workload,
    long long parameter, const std::vector<Factory>& factories) const {
  std::size_t name_width = std::strlen("strategy");
  for (const Factory& f : factories)
    name_width = std::max(name_width, f.name.size());
  name_width += 2;

  double reference = -1;
  if (const auto it = results_.find({workload, kReference, parameter});
      it != results_.end() && it->second.error.empty())
    reference = ns_of(it->second);

  out << title << "\n"
      << left("strategy", name_width) << left("W^X", kWxWidth)
      << right("time/fn", kTimeWidth)
      << right(std::string("× ") + kReference, kRatioWidth)
      << right("syscalls/fn", kCallsWidth) << right("VMAs", kVmasWidth) << "\n";
  for (const Factory& f : factories) {
    if (f.threads_only) continue;  // publish and startup never run it
    out << left(f.name, name_width) << left(to_string(f.wx), kWxWidth);
    const auto it = results_.find({workload, f.name, parameter});
    if (it == results_.end()) {
      out << "not run\n";
      continue;
    }
    const Result& r = it->second;
    if (!r.error.empty()) {
      out << short_error(r.error) << "\n";
      continue;
    }
    const double ns = ns_of(r);
    const double ratio = ns >= 0 && reference > 0 ? ns / reference : -1;
    out << right(format_time(ns), kTimeWidth)
        << right(format_ratio(ratio), kRatioWidth)
        << right(format_count(r.syscalls), kCallsWidth)
        << right(r.vmas < 0 ? "–" : std::to_string(std::lround(r.vmas)),
                 kVmasWidth)
        << "\n";
  }
  if (workload == "publish" && parameter == 1 && !pwrite_ns_.empty()) {
    const double pwrite = median(pwrite_ns_);
    const auto it = results_.find({workload, kPwriteReader, parameter});
    const double ns = it != results_.end() && it->second.error.empty()
                          ? ns_of(it->second)
                          : -1;
    out << "one " << kPwriteBytes
        << "-byte pwrite into a memfd (host/): " << format_time(pwrite);
    if (ns >= 0)
      out << "; " << kPwriteReader << " takes " << format_ratio(ns / pwrite)
          << " that";
    out << "\n";
  }
  out << "\n";
}

void SummaryReporter::print_memory(
    std::ostream& out, long long functions,
    const std::vector<Factory>& factories) const {
  std::size_t name_width = std::strlen("strategy");
  for (const Factory& f : factories)
    name_width = std::max(name_width, f.name.size());
  name_width += 2;
  out << "memory: " << thousands(functions)
      << " functions of 256 bytes live (published 256 at a time), then all "
         "released and trimmed\n(resident: anonymous + shared memory above "
         "the empty strategy)\n"
      << left("strategy", name_width) << left("W^X", kWxWidth)
      << right("resident/code", kMemWidth) << right("after release", kMemWidth)
      << right("after trim", kMemWidth) << right("AS/reserved", kMemWidth)
      << "\n";
  for (const Factory& f : factories) {
    if (f.threads_only) continue;
    out << left(f.name, name_width) << left(to_string(f.wx), kWxWidth);
    const auto it = results_.find({"memory", f.name, functions});
    if (it == results_.end()) {
      out << "not run\n";
      continue;
    }
    const Result& r = it->second;
    if (!r.error.empty()) {
      out << short_error(r.error) << "\n";
      continue;
    }
    out << right(format_ratio(r.resident_per_code), kMemWidth)
        << right(format_mib(r.released_mib), kMemWidth)
        << right(format_mib(r.trimmed_mib), kMemWidth)
        << right(format_ratio(r.address_space), kMemWidth) << "\n";
  }
  out << "\n";
}

void SummaryReporter::print(std::ostream& out,
                            const std::vector<Factory>& factories) const {
  const auto ran = [&](const std::string& workload, long long parameter) {
    return std::any_of(factories.begin(), factories.end(),
                       [&](const Factory& f) {
                         return results_.count({workload, f.name, parameter});
                       });
  };
  long long startup = -1, memory = -1;
  for (const auto& entry : results_) {
    const Key& key = entry.first;  // not a binding: clang 14 cannot capture one
    const bool ours = std::any_of(
        factories.begin(), factories.end(),
        [&](const Factory& f) { return f.name == std::get<1>(key); });
    if (!ours) continue;
    if (std::get<0>(key) == "startup")
      startup = std::max(startup, std::get<2>(key));
    if (std::get<0>(key) == "memory")
      memory = std::max(memory, std::get<2>(key));
  }

  out << "\nwxa_bench summary: time per function (lower is better), its ratio "
         "to "
      << kReference
      << " in this run,\nmapping system calls per function, VMAs while "
         "live, and how far the strategy keeps W^X\n(strict: no writable view "
         "of executable code; alias: each mapping W^X, but a writable alias\n"
         "of the code lives as long as it; no: writable and executable at "
         "once).\n\n";
  bool any = false;
  for (const long long batch : kSummaryBatches) {
    if (!ran("publish", batch)) continue;
    any = true;
    print_scenario(out,
                   "publish: " + std::to_string(kSummarySize) +
                       "-byte functions, batch " + std::to_string(batch) +
                       " (allocate, write, make executable, call, free)",
                   "publish", batch, factories);
  }
  if (startup >= 0) {
    any = true;
    print_scenario(out,
                   "startup: " + thousands(startup) +
                       " functions of 32-512 bytes, published 256 at a time, "
                       "each called once",
                   "startup", startup, factories);
  }
  if (memory >= 0) {
    any = true;
    print_memory(out, memory, factories);
  }
  if (!any)
    out << "(no publish run with " << kSummarySize
        << "-byte functions and no startup run to summarise)\n\n";
  out.flush();
}

std::string summary_filter(const std::vector<Factory>& factories) {
  std::string names;
  for (const Factory& f : factories)
    if (!f.threads_only) names += (names.empty() ? "" : "|") + f.name;
  std::string batches;
  for (const long long b : kSummaryBatches) {
    // Appended piece by piece: a short literal + std::to_string() makes
    // GCC 12 warn at -O3 (-Wrestrict, a false positive).
    if (!batches.empty()) batches += '|';
    batches += std::to_string(b);
  }
  return "^(publish/(" + names + ")/size:" + std::to_string(kSummarySize) +
         "/batch:(" + batches + ")/|startup/(" + names + ")/)";
}

}  // namespace wxb
