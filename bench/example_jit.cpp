// SPDX-License-Identifier: MIT
// The example JIT end to end, twice: the same Xbyak compiler, the same
// expressions (same seed), the same batches, once on a wxarena CodeHeap
// under strict W^X (example_jit_wxarena) and once on one RWX mapping with no
// protection at all (example_jit_rwx, benchmark only).
//
// One timed iteration is what a JIT does at startup: create its code memory,
// generate and compile every expression, copy the code in, publish each
// batch, call every function on the inputs. Destroying the memory is not
// timed; the interpreter does not run in the timed loop. One batch is
// compiled and run before the timed loop to warm the process up. Every
// iteration's checksum of all results must equal the interpreter's (computed
// once, jit_expr::expected_checksum()), so both variants are also checked
// against each other. An extra, untimed pass checks every single result against
// the interpreter and counts system calls and VMAs.
#include "example_jit.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "jit_expr.hpp"
#include "maps.hpp"
#include "syscall_counter.hpp"

namespace wxb {
namespace {

// The full-size parameters: the example program's own (wxa-jit-expr).
constexpr std::size_t kFunctions = 50000;
constexpr std::size_t kBatch = 1024;
// Address space for the RWX sink, per function: far more than the largest
// expression compiles to (about 1 KiB); untouched pages cost nothing.
constexpr std::size_t kRwxBytesPerFunction = 2048;

// A sink the benchmark can measure: its syscalls and its VMAs.
class MeasuredSink {
 public:
  virtual ~MeasuredSink() = default;
  virtual jit_expr::CodeSink& sink() = 0;
  virtual SyscallCounts syscalls() = 0;
  virtual long vmas() = 0;
};

class WxarenaMeasured final : public MeasuredSink {
 public:
  explicit WxarenaMeasured(std::unique_ptr<jit_expr::WxarenaSink> s)
      : s_(std::move(s)) {}
  jit_expr::CodeSink& sink() override { return *s_; }
  SyscallCounts syscalls() override {
    // The arena's own complete count, from its creation on.
    const wxa::SyscallCounts c = s_->arena().stats().syscalls;
    return {c.mmap,  c.munmap,     c.mprotect, c.madvise,
            c.memfd, c.membarrier, c.other,    c.write};
  }
  long vmas() override {
    const auto rx = s_->arena().range();
    const auto rw = s_->arena().rw_range();
    const maps::Range ranges[2] = {
        {reinterpret_cast<std::uintptr_t>(rx.data()),
         reinterpret_cast<std::uintptr_t>(rx.data() + rx.size())},
        {reinterpret_cast<std::uintptr_t>(rw.data()),
         reinterpret_cast<std::uintptr_t>(rw.data() + rw.size())}};
    const bool one_view = static_cast<const void*>(rw.data()) ==
                          static_cast<const void*>(rx.data());
    return maps::count_within({ranges, one_view ? 1u : 2u});
  }

 private:
  std::unique_ptr<jit_expr::WxarenaSink> s_;
};

// example_jit_rwx's memory: one RWX mapping (made by map_rwx() in
// rwx_floor.cpp, the only file that maps RWX), not populated, so that its
// pages are first touched by the copy as the arena's are; bump-allocated at
// the CodeHeap's default alignment (16). publish() has nothing to do. Like
// jit_expr::WxarenaSink, it keeps the list of every function added (what a
// JIT keeps to free them later), so that the two differ only in memory.
class RwxSink final : public jit_expr::CodeSink, public MeasuredSink {
 public:
  RwxSink(std::byte* base, std::size_t bytes) : base_(base), bytes_(bytes) {}
  ~RwxSink() override {
    // Nothing useful to do if this fails; the benchmark goes on.
    (void)::munmap(base_, bytes_);
  }

  const void* add(std::span<const std::uint8_t> code) override {
    const std::size_t at = (used_ + 15) & ~std::size_t{15};
    if (at + code.size() > bytes_) {
      error_ = "RWX buffer of " + std::to_string(bytes_) + " bytes is full";
      return nullptr;
    }
    std::memcpy(base_ + at, code.data(), code.size());
    used_ = at + code.size();
    functions_.push_back(base_ + at);
    return base_ + at;
  }
  bool publish() override { return true; }
  [[nodiscard]] std::string error() const override { return error_; }

  jit_expr::CodeSink& sink() override { return *this; }
  SyscallCounts syscalls() override {
    SyscallCounts c;
    c.mmap = 1;  // the one mapping, at creation
    return c;
  }
  long vmas() override {
    const maps::Range r{reinterpret_cast<std::uintptr_t>(base_),
                        reinterpret_cast<std::uintptr_t>(base_) + bytes_};
    return maps::count_within({&r, 1});
  }

 private:
  std::byte* base_;
  std::size_t bytes_, used_ = 0;
  std::vector<const void*> functions_;
  std::string error_;
};

enum class Memory { wxarena, rwx };

const char* name_of(Memory m) {
  return m == Memory::wxarena ? "example_jit_wxarena" : "example_jit_rwx";
}

std::unique_ptr<MeasuredSink> make_sink(Memory m,
                                        const jit_expr::Config& config,
                                        std::string& error) {
  if (m == Memory::rwx) {
    const std::size_t bytes =
        (config.functions * kRwxBytesPerFunction + 4095) & ~std::size_t{4095};
    std::byte* p = map_rwx(bytes, /*populate=*/false, error);
    if (!p) return nullptr;
    return std::make_unique<RwxSink>(p, bytes);
  }
  // Strict W^X on the automatic backend, as wxa-jit-expr runs by default.
  auto s = jit_expr::WxarenaSink::create();
  if (!s) {
    // A platform refusing every backend is a result; anything else a failure.
    const wxa::Errc code = s.error().code();
    if (code == wxa::Errc::not_supported ||
        code == wxa::Errc::permission_denied)
      error = kRefusedPrefix;
    error += "wxa::Arena::create: " + s.error().to_string();
    return nullptr;
  }
  return std::make_unique<WxarenaMeasured>(std::move(s).value());
}

// The report of one run, checked: no error, every function, and (verify)
// no mismatch; the checksum equal to the interpreter's.
bool check(const jit_expr::Report& r, const jit_expr::Config& config,
           std::uint64_t expected, std::string& error) {
  if (!r.error.empty()) {
    error = r.error;
    return false;
  }
  char text[160];
  if (r.functions != config.functions || r.mismatches != 0 ||
      r.checksum != expected) {
    std::snprintf(text, sizeof text,
                  "%zu of %zu functions, %zu mismatches, checksum %016" PRIx64
                  " (the interpreter's: %016" PRIx64 ")",
                  r.functions, config.functions, r.mismatches, r.checksum,
                  expected);
    error = text;
    return false;
  }
  return true;
}

// Per (functions, batch): the interpreter's checksum, and the counters of
// the untimed pass (Google Benchmark reruns a benchmark with growing
// iteration counts; neither depends on them).
std::mutex g_mutex;
std::map<std::pair<std::size_t, std::size_t>, std::uint64_t> g_expected;
std::map<std::string, benchmark::UserCounters> g_counted;

std::uint64_t expected_for(const jit_expr::Config& config) {
  std::lock_guard lock(g_mutex);
  const auto key = std::make_pair(config.functions, config.batch);
  auto it = g_expected.find(key);
  if (it == g_expected.end())
    it = g_expected.emplace(key, jit_expr::expected_checksum(config)).first;
  return it->second;
}

// The untimed pass: the same run with every result checked against the
// interpreter, system calls counted (the sink's own count and the OS-level
// counter), VMAs read while every function is live.
bool counting_pass(benchmark::State& state, Memory m, jit_expr::Config config,
                   std::uint64_t expected, std::string& error) {
  config.verify = true;
  const bool have_os = syscall_counter::start();
  std::unique_ptr<MeasuredSink> s = make_sink(m, config, error);
  jit_expr::Report r;
  SyscallCounts own;
  long vmas = -1;
  if (s) {
    r = jit_expr::run_jit(s->sink(), config);
    own = s->syscalls();
    vmas = s->vmas();
  }
  const SyscallCounts os = have_os ? syscall_counter::stop() : SyscallCounts{};
  if (!s || !check(r, config, expected, error)) return false;

  auto& k = state.counters;
  const double n = static_cast<double>(config.functions);
  k["syscalls_per_fn"] = static_cast<double>(own.total()) / n;
  k["mprotect_per_fn"] = static_cast<double>(own.mprotect) / n;
  if (have_os) k["os_syscalls_per_fn"] = static_cast<double>(os.total()) / n;
  if (vmas >= 0) k["vmas"] = static_cast<double>(vmas);
  k["code_bytes_per_fn"] = static_cast<double>(r.code_bytes) / n;
  return true;
}

void bm_example_jit(benchmark::State& state, Memory m) {
  jit_expr::Config config;
  config.functions = static_cast<std::size_t>(state.range(0));
  config.batch = static_cast<std::size_t>(state.range(1));
  config.verify = false;  // the checksum is checked instead
  const std::uint64_t expected = expected_for(config);

  // Warm up, untimed: one batch on fresh memory of the same kind, so that
  // the first timed iteration does not pay for the process's first
  // compilation (the C library growing its heap, Xbyak's first use), which
  // would fall on whichever variant runs first.
  std::string error;
  {
    jit_expr::Config warm = config;
    warm.functions = std::min(config.batch, config.functions);
    std::unique_ptr<MeasuredSink> s = make_sink(m, warm, error);
    if (!s) return fail_benchmark(state, name_of(m), error);
    const jit_expr::Report r = jit_expr::run_jit(s->sink(), warm);
    if (!r.error.empty()) return fail_benchmark(state, name_of(m), r.error);
  }

  double compile_s = 0, add_s = 0, publish_s = 0, run_s = 0;
  for (auto _ : state) {
    std::unique_ptr<MeasuredSink> s = make_sink(m, config, error);
    if (!s) break;
    const jit_expr::Report r = jit_expr::run_jit(s->sink(), config);
    state.PauseTiming();
    s.reset();
    const bool ok = check(r, config, expected, error);
    compile_s += r.compile_s;
    add_s += r.add_s;
    publish_s += r.publish_s;
    run_s += r.run_s;
    state.ResumeTiming();
    if (!ok) break;
  }
  if (!error.empty()) return fail_benchmark(state, name_of(m), error);

  const double fns =
      static_cast<double>(state.iterations()) * double(config.functions);
  state.counters["ns_per_fn"] = benchmark::Counter(
      fns / 1e9, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  // Where the time goes, as run_jit() measures it (ns per function).
  state.counters["compile_ns"] = compile_s * 1e9 / fns;
  state.counters["add_ns"] = add_s * 1e9 / fns;
  state.counters["publish_ns"] = publish_s * 1e9 / fns;
  state.counters["run_ns"] = run_s * 1e9 / fns;

  const std::string key = std::string(name_of(m)) + "/" +
                          std::to_string(config.functions) + "/" +
                          std::to_string(config.batch);
  {
    std::lock_guard lock(g_mutex);
    if (const auto it = g_counted.find(key); it != g_counted.end()) {
      for (const auto& [name, counter] : it->second)
        state.counters[name] = counter;
      return;
    }
  }
  if (!counting_pass(state, m, config, expected, error))
    return fail_benchmark(state, name_of(m), error);
  benchmark::UserCounters counted;
  for (const char* name : {"syscalls_per_fn", "mprotect_per_fn",
                           "os_syscalls_per_fn", "vmas", "code_bytes_per_fn"})
    if (const auto it = state.counters.find(name); it != state.counters.end())
      counted[name] = it->second;
  std::lock_guard lock(g_mutex);
  g_counted[key] = std::move(counted);
}

}  // namespace

void register_example_jit(Scale scale) {
  const std::int64_t functions = scale == Scale::full
                                     ? std::int64_t{kFunctions}
                                     : 2 * std::int64_t{kBatch};
  // Side by side, wxarena first, so the two are measured close in time.
  for (const Memory m : {Memory::wxarena, Memory::rwx})
    benchmark::RegisterBenchmark(
        (std::string("startup/") + name_of(m)).c_str(),
        [m](benchmark::State& state) { bm_example_jit(state, m); })
        ->ArgNames({"functions", "batch"})
        ->Args({functions, std::int64_t{kBatch}})
        ->UseRealTime();
}

}  // namespace wxb
