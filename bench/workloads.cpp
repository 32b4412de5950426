// SPDX-License-Identifier: MIT
// The workloads, written once against the Strategy interface.
//
// Every benchmark times its loop, then runs the same work once more outside
// the timing ("the counting pass") to count system calls and to read the
// strategy's footprint while its functions are live, so that neither the
// syscall counter nor /proc/self/maps reads slow down what is timed.
#include "workloads.hpp"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>

#include "code_gen.hpp"
#include "maps.hpp"
#include "syscall_counter.hpp"

namespace wxb {
namespace {

constexpr std::size_t kMaxSize = 65536;
// The counting pass covers at least this many functions (or one round).
constexpr std::size_t kCountedFunctions = 1024;
// Before it, rounds covering this many bytes of functions, or this many
// functions if fewer (see bm_publish()).
constexpr std::size_t kWarmBytes = std::size_t{8} << 20;
constexpr std::size_t kWarmFunctions = 32768;

// The full-size parameters; --smoke registers smaller ones (below).
constexpr std::size_t kStartupFunctions = 50000;
constexpr std::size_t kStartupBatch = 256;
constexpr std::size_t kStartupMinSize = 32, kStartupMaxSize = 512;

constexpr std::size_t kChurnLive = 2000;
constexpr std::size_t kChurnOps = 32;  // freed and allocated per iteration
constexpr std::size_t kChurnMinSize = 32, kChurnMaxSize = 2048;

constexpr std::size_t kPressureLive = 20000;
constexpr std::size_t kPressureSize = 256;
constexpr std::size_t kPressureBatch = 256;

constexpr std::size_t kThreadsSize = 256, kThreadsBatch = 64;

constexpr std::size_t kMemoryFunctions = 100000;
constexpr std::size_t kMemorySize = 256;
constexpr std::size_t kMemoryBatch = 256;
constexpr std::size_t kMemoryRounds = 2;

const CodeTemplate& code() {
  static const CodeTemplate t(kMaxSize);
  return t;
}

std::atomic<int> g_failed{0};

void fail(benchmark::State& state, const Factory& f, const std::string& why) {
  fail_benchmark(state, f.name, why);
}

struct Instance {
  std::unique_ptr<Shared> shared;
  std::unique_ptr<Strategy> local;
};

bool make_instance(benchmark::State& state, const Factory& f,
                   const Request& request, Instance& out) {
  std::string error;
  out.shared = f.make_shared(request, error);
  if (out.shared) out.local = f.make(out.shared.get(), request, error);
  if (out.local) return true;
  fail(state, f, error);
  return false;
}

// ---------------------------------------------------------------------------
// Measuring outside the timed loop.

struct Probe {
  Footprint footprint;
  double live_bytes = 0;
  bool taken = false;
  void take(Strategy& s, double live) {
    footprint = s.footprint();
    live_bytes = live;
    taken = true;
  }
};

struct Counted {
  bool have_own = false, have_os = false;
  SyscallCounts own, os;
  std::uint64_t functions = 0;
};

// Runs body() with the thread's system calls counted, both by the strategy
// (if it keeps counts) and by the OS-level counter (if available).
template <class Body>
bool counted(Strategy& s, Counted& c, Body&& body) {
  SyscallCounts before;
  c.have_own = s.own_syscalls(before);
  c.have_os = syscall_counter::start();
  const bool ok = body();
  if (c.have_os) c.os = syscall_counter::stop();
  if (c.have_own) {
    SyscallCounts after;
    (void)s.own_syscalls(after);
    after -= before;
    c.own = after;
  }
  return ok;
}

// ns_per_fn: total functions over elapsed (real) time, inverted; in
// nanoseconds because the count is given in billions.
void report_rate(benchmark::State& state, std::uint64_t functions) {
  state.counters["ns_per_fn"] = benchmark::Counter(
      static_cast<double>(functions) / 1e9,
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// syscalls_per_fn / mprotect_per_fn come from the strategy's own complete
// count where it keeps one (wxarena's stats, the hand-written baselines),
// else from the OS-level counter; os_syscalls_per_fn is always the latter.
void report_counts(benchmark::State& state, const Counted& c) {
  auto& k = state.counters;
  const double n = static_cast<double>(c.functions);
  if (n <= 0) return;
  const SyscallCounts* src =
      c.have_own ? &c.own : (c.have_os ? &c.os : nullptr);
  if (src != nullptr) {
    k["syscalls_per_fn"] = static_cast<double>(src->total()) / n;
    k["mprotect_per_fn"] = static_cast<double>(src->mprotect) / n;
  }
  if (c.have_os)
    k["os_syscalls_per_fn"] = static_cast<double>(c.os.total()) / n;
}

void report_probe(benchmark::State& state, const Probe& p,
                  const std::string& suffix = "") {
  if (!p.taken) return;
  auto& k = state.counters;
  const Footprint& f = p.footprint;
  if (f.vmas >= 0) k["vmas" + suffix] = static_cast<double>(f.vmas);
  if (f.tracked_vmas >= 0)
    k["tracked_vmas" + suffix] = static_cast<double>(f.tracked_vmas);
  if (f.committed_bytes >= 0 && p.live_bytes > 0)
    k["committed_per_live" + suffix] = f.committed_bytes / p.live_bytes;
}

// The counting pass runs on a benchmark's first invocation only; the later
// ones (Google Benchmark reruns a benchmark with growing iteration counts)
// reuse its counters, which do not depend on the iteration count.
std::mutex g_cache_mutex;
std::map<std::string, benchmark::UserCounters> g_cache;

std::string cache_key(const benchmark::State& state, const char* workload,
                      const Factory& f) {
  return std::string(workload) + "/" + f.name + "/" +
         std::to_string(state.range(0)) + "/" + std::to_string(state.range(1)) +
         "/" + std::to_string(state.threads());
}

bool restore_counted(benchmark::State& state, const std::string& key) {
  std::lock_guard lock(g_cache_mutex);
  const auto it = g_cache.find(key);
  if (it == g_cache.end()) return false;
  for (const auto& [name, counter] : it->second) state.counters[name] = counter;
  return true;
}

// Saves every counter except the timed ones.
void save_counted(const benchmark::State& state, const std::string& key) {
  benchmark::UserCounters counted;
  for (const auto& [name, counter] : state.counters)
    if (name != "ns_per_fn" && name != "fn_per_s") counted[name] = counter;
  std::lock_guard lock(g_cache_mutex);
  g_cache[key] = std::move(counted);
}

// ---------------------------------------------------------------------------
// The work itself.

std::string wrong_value(std::size_t index, std::uint32_t got,
                        std::uint32_t expected) {
  char text[96];
  std::snprintf(text, sizeof text,
                "function %zu returned 0x%08x, expected 0x%08x", index, got,
                expected);
  return text;
}

// After a failure: gives back what a failed round still holds, so that one
// failing benchmark (say, at the kernel's VMA limit) does not leave the
// process without memory or VMAs for the next ones. Errors are ignored: the
// first one is already reported.
void abandon(Strategy& s, std::span<const Slot> slots) {
  (void)s.release(slots);
  (void)s.settle();
}

// Allocates and writes slots[i] with sizes[i] (or `size`), values from
// `value` on; on failure, abandons those it made.
bool write_all(Strategy& s, std::span<Slot> slots, std::size_t size,
               const std::size_t* sizes, std::uint32_t& value,
               std::string& error) {
  for (std::size_t i = 0; i < slots.size(); ++i) {
    const std::size_t n = sizes ? sizes[i] : size;
    if (!s.allocate(n, slots[i])) {
      error = s.error();
      abandon(s, slots.first(i));
      return false;
    }
    code().write(slots[i].rw, n, value++);
  }
  return true;
}

bool call_all(std::span<const Slot> slots, std::uint32_t first,
              std::string& error) {
  for (std::size_t i = 0; i < slots.size(); ++i) {
    const std::uint32_t got = call_generated(slots[i].rx);
    if (got != first + static_cast<std::uint32_t>(i)) {
      error = wrong_value(i, got, first + static_cast<std::uint32_t>(i));
      return false;
    }
  }
  return true;
}

bool publish_slots(Strategy& s, std::span<Slot> slots, std::string& error) {
  if (s.publish(slots)) return true;
  error = s.error();
  return false;
}

bool release_slots(Strategy& s, std::span<const Slot> slots,
                   std::string& error) {
  if (s.release(slots)) return true;
  error = s.error();
  return false;
}

// Writes and publishes every slot, `batch` at a time, with sizes[i] (or
// `size`), then calls each; on failure, abandons what it made.
bool publish_all(Strategy& s, std::span<Slot> slots, std::size_t batch,
                 std::size_t size, const std::size_t* sizes,
                 std::uint32_t& value, std::string& error) {
  const std::uint32_t first = value;
  for (std::size_t at = 0; at < slots.size(); at += batch) {
    const std::size_t k = std::min(batch, slots.size() - at);
    const std::span<Slot> part = slots.subspan(at, k);
    if (!write_all(s, part, size, sizes ? sizes + at : nullptr, value, error)) {
      abandon(s, slots.first(at));
      return false;
    }
    if (!publish_slots(s, part, error)) {
      abandon(s, slots.first(at + k));
      return false;
    }
  }
  if (!call_all(slots, first, error)) {
    abandon(s, slots);
    return false;
  }
  return true;
}

bool settle(Strategy& s, std::string& error) {
  if (s.settle()) return true;
  error = s.error();
  return false;
}

bool trim(Strategy& s, std::string& error) {
  if (s.trim()) return true;
  error = s.error();
  return false;
}

// publish: B functions written, published together, called, freed.
bool publish_round(Strategy& s, std::span<Slot> slots, std::size_t size,
                   std::uint32_t& value, std::string& error, Probe* probe) {
  const std::uint32_t first = value;
  if (!write_all(s, slots, size, nullptr, value, error)) return false;
  if (!publish_slots(s, slots, error) || !call_all(slots, first, error)) {
    abandon(s, slots);
    return false;
  }
  if (probe) probe->take(s, static_cast<double>(slots.size() * size));
  return release_slots(s, slots, error);
}

void bm_publish(benchmark::State& state, const Factory& f) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const auto batch = static_cast<std::size_t>(state.range(1));
  Instance in;
  if (!make_instance(state, f, {size * batch}, in)) return;
  Strategy& s = *in.local;

  std::vector<Slot> slots(batch);
  std::uint32_t value = 1;
  std::string error;
  for (auto _ : state) {
    if (!publish_round(s, slots, size, value, error, nullptr)) {
      fail(state, f, error);
      break;
    }
  }
  if (state.error_occurred()) return;
  report_rate(state, state.iterations() * batch);
  const std::string key = cache_key(state, "publish", f);
  if (restore_counted(state, key)) {
    if (!settle(s, error)) fail(state, f, error);
    return;
  }

  const std::size_t rounds =
      std::max<std::size_t>(1, kCountedFunctions / batch);
  // The counting pass runs on the first invocation, after as few as one
  // timed round: rounds enough to go through the pages an arena opens
  // ahead of need (8 MiB, at most 32,768 functions) run first, so that it
  // counts the steady state the timing measures (recycled pages, not the
  // first fresh ones).
  const std::size_t warm = std::max(
      rounds, std::min(kWarmFunctions / batch,
                       (kWarmBytes + size * batch - 1) / (size * batch)));
  for (std::size_t r = 0; r < warm; ++r)
    if (!publish_round(s, slots, size, value, error, nullptr))
      return fail(state, f, error);
  Counted c;
  Probe probe;
  const bool ok = counted(s, c, [&] {
    for (std::size_t r = 0; r < rounds; ++r)
      if (!publish_round(s, slots, size, value, error,
                         r == 0 ? &probe : nullptr))
        return false;
    return true;
  });
  if (!ok || !settle(s, error)) return fail(state, f, error);
  c.functions = rounds * batch;
  report_counts(state, c);
  report_probe(state, probe);
  save_counted(state, key);
}

// startup: many small functions of mixed sizes published in batches, as a
// JIT warming up, then each called once. Freeing them is not timed.
std::vector<std::size_t> startup_sizes(std::size_t functions) {
  Rng rng(0x5eed);
  std::vector<std::size_t> v(functions);
  for (auto& n : v) n = rng.between(kStartupMinSize, kStartupMaxSize);
  return v;
}

bool startup_round(Strategy& s, std::vector<Slot>& slots,
                   const std::vector<std::size_t>& sizes, std::uint32_t& value,
                   std::string& error, Probe* probe) {
  if (!publish_all(s, slots, kStartupBatch, 0, sizes.data(), value, error))
    return false;
  double bytes = 0;
  for (std::size_t n : sizes) bytes += static_cast<double>(n);
  if (probe) probe->take(s, bytes);
  return true;
}

bool startup_teardown(Strategy& s, std::vector<Slot>& slots,
                      std::string& error) {
  for (std::size_t at = 0; at < slots.size(); at += kStartupBatch) {
    const std::size_t k = std::min(kStartupBatch, slots.size() - at);
    if (!release_slots(s, {slots.data() + at, k}, error)) return false;
  }
  return settle(s, error);
}

// Startup rounds, each followed by its teardown; only one of the two is
// timed: the round (startup) or the teardown (release_all).
bool startup_rounds(benchmark::State& state, const Factory& f, Strategy& s,
                    std::vector<Slot>& slots,
                    const std::vector<std::size_t>& sizes, std::uint32_t& value,
                    bool time_teardown) {
  std::string error;
  for (auto _ : state) {
    if (time_teardown) state.PauseTiming();
    bool ok = startup_round(s, slots, sizes, value, error, nullptr);
    if (time_teardown)
      state.ResumeTiming();
    else
      state.PauseTiming();
    ok = ok && startup_teardown(s, slots, error);
    if (!time_teardown) state.ResumeTiming();
    if (!ok) {
      fail(state, f, error);
      return false;
    }
  }
  report_rate(state, state.iterations() * slots.size());
  return true;
}

std::size_t startup_capacity(const std::vector<std::size_t>& sizes) {
  std::size_t capacity = 0;
  for (std::size_t n : sizes) capacity += n + 16;
  return capacity;
}

// release_all: the startup's functions all released and that committed
// (for wxarena, the retirement of every page: traps written over all the
// code, the old code kept for undo until the write is done).
void bm_release_all(benchmark::State& state, const Factory& f) {
  const std::vector<std::size_t> sizes =
      startup_sizes(static_cast<std::size_t>(state.range(0)));
  Instance in;
  if (!make_instance(state, f, {startup_capacity(sizes)}, in)) return;
  std::vector<Slot> slots(sizes.size());
  std::uint32_t value = 1;
  (void)startup_rounds(state, f, *in.local, slots, sizes, value, true);
}

void bm_startup(benchmark::State& state, const Factory& f) {
  const auto functions = static_cast<std::size_t>(state.range(0));
  const std::vector<std::size_t> sizes = startup_sizes(functions);
  Instance in;
  if (!make_instance(state, f, {startup_capacity(sizes)}, in)) return;
  Strategy& s = *in.local;

  std::vector<Slot> slots(functions);
  std::uint32_t value = 1;
  std::string error;
  if (!startup_rounds(state, f, s, slots, sizes, value, false)) return;
  const std::string key = cache_key(state, "startup", f);
  if (restore_counted(state, key)) return;

  Counted c;
  Probe probe;
  const bool ok = counted(s, c, [&] {
    return startup_round(s, slots, sizes, value, error, &probe);
  });
  if (!ok || !startup_teardown(s, slots, error)) return fail(state, f, error);
  c.functions = functions;
  report_counts(state, c);
  report_probe(state, probe);
  save_counted(state, key);
}

// churn: a steady live set; each iteration frees kChurnOps random live
// functions and publishes kChurnOps new ones of mixed sizes.
class Churn {
 public:
  Churn(Strategy& s, std::size_t target) : s_(s), target_(target) {
    live_.reserve(target + kChurnOps);
    victims_.resize(kChurnOps);
    fresh_.resize(kChurnOps);
  }

  bool fill(std::string& error) {
    while (live_.size() < target_)
      if (!add(std::min(kChurnOps, target_ - live_.size()), error))
        return false;
    return true;
  }

  bool step(std::string& error, Probe* probe) {
    for (Slot& v : victims_) {
      const std::size_t i = rng_.between(0, live_.size() - 1);
      v = live_[i];
      live_[i] = live_.back();
      live_.pop_back();
      live_bytes_ -= v.size;
    }
    if (!release_slots(s_, victims_, error)) return false;
    if (!add(kChurnOps, error)) return false;
    if (probe) probe->take(s_, static_cast<double>(live_bytes_));
    return true;
  }

  bool clear(std::string& error) {
    const bool ok = release_slots(s_, live_, error) && settle(s_, error);
    live_.clear();
    live_bytes_ = 0;
    return ok;
  }

 private:
  bool add(std::size_t k, std::string& error) {
    const std::span<Slot> batch(fresh_.data(), k);
    std::size_t sizes[kChurnOps];
    for (std::size_t i = 0; i < k; ++i)
      sizes[i] = rng_.between(kChurnMinSize, kChurnMaxSize);
    const std::uint32_t first = value_;
    if (!write_all(s_, batch, 0, sizes, value_, error)) return false;
    if (!publish_slots(s_, batch, error) || !call_all(batch, first, error)) {
      abandon(s_, batch);
      return false;
    }
    for (const Slot& slot : batch) {
      live_.push_back(slot);
      live_bytes_ += slot.size;
    }
    return true;
  }

  Strategy& s_;
  std::size_t target_;
  Rng rng_{0xc4u};
  std::vector<Slot> live_, victims_, fresh_;
  std::size_t live_bytes_ = 0;
  std::uint32_t value_ = 1;
};

void bm_churn(benchmark::State& state, const Factory& f) {
  const auto live = static_cast<std::size_t>(state.range(0));
  Instance in;
  if (!make_instance(state, f, {(live + kChurnOps) * kChurnMaxSize}, in))
    return;
  Strategy& s = *in.local;
  Churn churn(s, live);
  std::string error, ignored;
  if (!churn.fill(error)) {
    (void)churn.clear(ignored);
    return fail(state, f, error);
  }
  for (auto _ : state) {
    if (!churn.step(error, nullptr)) {
      fail(state, f, error);
      break;
    }
  }
  if (state.error_occurred()) {
    (void)churn.clear(ignored);
    return;
  }
  report_rate(state, state.iterations() * kChurnOps);
  const std::string key = cache_key(state, "churn", f);
  if (restore_counted(state, key)) {
    if (!churn.clear(error)) fail(state, f, error);
    return;
  }

  const std::size_t rounds = kCountedFunctions / kChurnOps;
  Counted c;
  Probe probe;
  const bool ok = counted(s, c, [&] {
    for (std::size_t r = 0; r < rounds; ++r)
      if (!churn.step(error, r + 1 == rounds ? &probe : nullptr)) return false;
    return true;
  });
  if (!ok) {
    (void)churn.clear(ignored);
    return fail(state, f, error);
  }
  if (!churn.clear(error)) return fail(state, f, error);
  c.functions = rounds * kChurnOps;
  report_counts(state, c);
  report_probe(state, probe);
  save_counted(state, key);
}

// vma_pressure: `live` functions of kPressureSize bytes, then every second
// one freed.
bool pressure_round(Strategy& s, std::vector<Slot>& slots,
                    std::vector<Slot>& odd, std::vector<Slot>& even,
                    std::uint32_t& value, std::string& error, Probe* full,
                    Probe* half) {
  if (!publish_all(s, slots, kPressureBatch, kPressureSize, nullptr, value,
                   error))
    return false;
  if (full) full->take(s, static_cast<double>(slots.size() * kPressureSize));
  odd.clear();
  even.clear();
  for (std::size_t i = 0; i < slots.size(); ++i)
    (i % 2 ? odd : even).push_back(slots[i]);
  if (!release_slots(s, odd, error) || !settle(s, error)) {
    abandon(s, even);
    return false;
  }
  if (half) half->take(s, static_cast<double>(even.size() * kPressureSize));
  return release_slots(s, even, error) && settle(s, error);
}

void bm_vma_pressure(benchmark::State& state, const Factory& f) {
  const auto live = static_cast<std::size_t>(state.range(0));
  Instance in;
  if (!make_instance(state, f, {live * (kPressureSize + 16)}, in)) return;
  Strategy& s = *in.local;
  std::vector<Slot> slots(live), odd, even;
  odd.reserve(live);
  even.reserve(live);
  std::uint32_t value = 1;
  std::string error;
  for (auto _ : state) {
    if (!pressure_round(s, slots, odd, even, value, error, nullptr, nullptr)) {
      fail(state, f, error);
      break;
    }
  }
  if (state.error_occurred()) return;
  report_rate(state, state.iterations() * live);
  const std::string key = cache_key(state, "vma_pressure", f);
  if (restore_counted(state, key)) return;

  Counted c;
  Probe full, half;
  const bool ok = counted(s, c, [&] {
    return pressure_round(s, slots, odd, even, value, error, &full, &half);
  });
  if (!ok) return fail(state, f, error);
  c.functions = live;
  report_counts(state, c);
  report_probe(state, full);
  report_probe(state, half, "_after_free");
  save_counted(state, key);
}

// memory: kMemoryFunctions functions of kMemorySize bytes published
// kMemoryBatch at a time and kept live, then all released, settled and
// trimmed, kMemoryRounds times, as a JIT that compiles a working set and
// throws it away. Measured from the process's resident memory (anonymous
// and shared, each page once, see maps::Usage) and address space: what the live
// code costs per byte of code, what stays after everything is released (before
// and after trim()), and the address space taken against the strategy's own
// reservation. Resident figures are above the empty strategy (made, nothing
// allocated), whose own cost is reported apart.
struct MemoryFigures {
  maps::Usage before, empty, live, released, trimmed;
  double peak_address_space = -1;
  double reserved = -1;
  void note(const maps::Usage& u) {
    peak_address_space = std::max(peak_address_space, u.address_space);
  }
};

bool memory_round(Strategy& s, std::vector<Slot>& slots, std::uint32_t& value,
                  std::string& error, MemoryFigures& m, bool last) {
  if (!publish_all(s, slots, kMemoryBatch, kMemorySize, nullptr, value, error))
    return false;
  const maps::Usage live = maps::usage();
  m.note(live);
  if (live.resident() > m.live.resident()) m.live = live;
  const Footprint f = s.footprint();
  m.reserved = f.reserved_bytes;
  for (std::size_t at = 0; at < slots.size(); at += kMemoryBatch) {
    const std::size_t k = std::min(kMemoryBatch, slots.size() - at);
    if (!release_slots(s, {slots.data() + at, k}, error)) return false;
  }
  if (!settle(s, error)) return false;
  const maps::Usage released = maps::usage();
  m.note(released);
  if (!trim(s, error)) return false;
  const maps::Usage trimmed = maps::usage();
  m.note(trimmed);
  if (last) {
    m.released = released;
    m.trimmed = trimmed;
  }
  return true;
}

void report_memory(benchmark::State& state, const MemoryFigures& m,
                   double code_bytes) {
  auto& k = state.counters;
  constexpr double kMiB = 1024.0 * 1024.0;
  const double empty = m.empty.resident();
  if (empty >= 0 && m.before.resident() >= 0)
    k["empty_mib"] = (empty - m.before.resident()) / kMiB;
  if (empty >= 0 && m.live.resident() >= 0) {
    k["resident_per_code"] = (m.live.resident() - empty) / code_bytes;
    k["resident_mib"] = (m.live.resident() - empty) / kMiB;
    k["resident_anon_mib"] = (m.live.anon - m.empty.anon) / kMiB;
  }
  if (empty >= 0 && m.released.resident() >= 0)
    k["released_mib"] = (m.released.resident() - empty) / kMiB;
  if (empty >= 0 && m.trimmed.resident() >= 0)
    k["trimmed_mib"] = (m.trimmed.resident() - empty) / kMiB;
  // Memfd pages the process holds but has not mapped are not in Pss.
  if (m.live.memfd >= 0 && m.empty.memfd >= 0)
    k["memfd_mib"] = (m.live.memfd - m.empty.memfd) / kMiB;
  if (m.trimmed.memfd >= 0 && m.empty.memfd >= 0)
    k["memfd_trimmed_mib"] = (m.trimmed.memfd - m.empty.memfd) / kMiB;
  if (m.before.address_space >= 0 && m.peak_address_space >= 0) {
    const double grown = m.peak_address_space - m.before.address_space;
    k["address_space_mib"] = grown / kMiB;
    if (m.reserved > 0) k["address_space_per_reservation"] = grown / m.reserved;
  }
}

void bm_memory(benchmark::State& state, const Factory& f) {
  const auto functions = static_cast<std::size_t>(state.range(0));
  // Everything the workload itself holds is made before the first reading.
  std::vector<Slot> slots(functions);
  std::uint32_t value = 1;
  std::string error;
  MemoryFigures m;
  (void)code();
  m.before = maps::usage();
  Instance in;
  if (!make_instance(state, f, {functions * (kMemorySize + 16)}, in)) return;
  Strategy& s = *in.local;
  m.empty = maps::usage();
  m.note(m.empty);
  for (auto _ : state) {
    for (std::size_t r = 0; r < kMemoryRounds; ++r) {
      if (!memory_round(s, slots, value, error, m, r + 1 == kMemoryRounds)) {
        fail(state, f, error);
        break;
      }
    }
  }
  if (state.error_occurred()) return;
  report_memory(state, m, static_cast<double>(functions * kMemorySize));
}

// threads: publish with N threads, one Strategy each on one Shared. The
// threads meet at a rendezvous so that shared state is made before anyone
// uses it and the counting pass (thread 0 alone) runs while the others wait.
class Rendezvous {
 public:
  void wait(int parties) {
    std::unique_lock lock(mutex_);
    const std::uint64_t generation = generation_;
    if (++arrived_ == parties) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation_ != generation; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int arrived_ = 0;
  std::uint64_t generation_ = 0;
};

Rendezvous g_rendezvous;
std::unique_ptr<Shared> g_shared;  // written by thread 0 between rendezvous
std::string g_shared_error;

void bm_threads(benchmark::State& state, const Factory& f) {
  const int parties = state.threads();
  const bool leader = state.thread_index() == 0;
  const Request request{kThreadsSize * kThreadsBatch};
  if (leader) {
    g_shared_error.clear();
    g_shared = f.make_shared(request, g_shared_error);
  }
  g_rendezvous.wait(parties);

  std::string error = g_shared_error;
  std::unique_ptr<Strategy> s;
  if (g_shared) s = f.make(g_shared.get(), request, error);
  if (!s) fail(state, f, error);

  std::vector<Slot> slots(kThreadsBatch);
  // Distinct values per thread, so a function called through another
  // thread's slot would be caught.
  std::uint32_t value = static_cast<std::uint32_t>(state.thread_index() + 1)
                        << 24;
  bool failed = !s;
  for (auto _ : state) {
    // No break: every thread must reach the end-of-loop barrier.
    if (failed) continue;
    if (!publish_round(*s, slots, kThreadsSize, value, error, nullptr)) {
      fail(state, f, error);
      failed = true;
    }
  }
  if (!failed) {
    report_rate(state, state.iterations() * kThreadsBatch);
    state.counters["fn_per_s"] = benchmark::Counter(
        static_cast<double>(state.iterations() * kThreadsBatch),
        benchmark::Counter::kIsRate);
  }

  g_rendezvous.wait(parties);
  const std::string key = cache_key(state, "threads", f);
  if (leader && !failed && !restore_counted(state, key)) {
    const std::size_t rounds = kCountedFunctions / kThreadsBatch;
    Counted c;
    Probe probe;
    const bool ok = counted(*s, c, [&] {
      for (std::size_t r = 0; r < rounds; ++r)
        if (!publish_round(*s, slots, kThreadsSize, value, error,
                           r == 0 ? &probe : nullptr))
          return false;
      return true;
    });
    if (ok) {
      c.functions = rounds * kThreadsBatch;
      report_counts(state, c);
      report_probe(state, probe);
      save_counted(state, key);
    } else {
      fail(state, f, error);
    }
  }
  g_rendezvous.wait(parties);
  if (s && !settle(*s, error) && !failed) fail(state, f, error);
  s.reset();
  g_rendezvous.wait(parties);
  if (leader) g_shared.reset();
}

// ---------------------------------------------------------------------------

using Body = void (*)(benchmark::State&, const Factory&);

benchmark::internal::Benchmark* add(const std::string& workload,
                                    const Factory& f, Body body) {
  const Factory* fp = &f;
  return benchmark::RegisterBenchmark(
             (workload + "/" + f.name).c_str(),
             [fp, body](benchmark::State& state) { body(state, *fp); })
      ->UseRealTime();
}

}  // namespace

void register_workloads(const std::vector<Factory>& factories, Scale scale) {
  const bool full = scale == Scale::full;
  const std::vector<std::int64_t> sizes =
      full ? std::vector<std::int64_t>{64, 256, 4096, 65536}
           : std::vector<std::int64_t>{256, 65536};
  const std::vector<std::int64_t> batches =
      full ? std::vector<std::int64_t>{1, 64, 1024}
           : std::vector<std::int64_t>{1, 64};
  const std::int64_t startup = full ? kStartupFunctions : 2 * kStartupBatch;
  const std::int64_t churn = full ? kChurnLive : 4 * kChurnOps;
  const std::int64_t pressure = full ? kPressureLive : 2 * kPressureBatch;
  const std::int64_t memory = full ? kMemoryFunctions : 2 * kMemoryBatch;

  // One family per argument set, strategies side by side, so the figures
  // compared with each other are measured close together in time.
  for (const std::int64_t size : sizes)
    for (const std::int64_t batch : batches)
      for (const Factory& f : factories)
        if (!f.threads_only)
          add("publish", f, bm_publish)
              ->ArgNames({"size", "batch"})
              ->Args({size, batch});
  for (const Factory& f : factories)
    if (!f.threads_only)
      add("startup", f, bm_startup)
          ->ArgNames({"functions", "batch"})
          ->Args({startup, std::int64_t{kStartupBatch}});
  for (const Factory& f : factories)
    if (!f.threads_only)
      add("release_all", f, bm_release_all)
          ->ArgNames({"functions", "batch"})
          ->Args({startup, std::int64_t{kStartupBatch}});
  for (const Factory& f : factories)
    if (f.frees_single && !f.threads_only)
      add("churn", f, bm_churn)
          ->ArgNames({"live", "ops"})
          ->Args({churn, std::int64_t{kChurnOps}});
  for (const Factory& f : factories)
    if (!f.threads_only)
      add("vma_pressure", f, bm_vma_pressure)
          ->ArgNames({"live", "size"})
          ->Args({pressure, std::int64_t{kPressureSize}})
          ->Iterations(1);
  for (const Factory& f : factories)
    if (!f.threads_only)
      add("memory", f, bm_memory)
          ->ArgNames({"functions", "size"})
          ->Args({memory, std::int64_t{kMemorySize}})
          ->Iterations(1);
  for (const Factory& f : factories)
    add("threads", f, bm_threads)
        ->ArgNames({"size", "batch"})
        ->Args({std::int64_t{kThreadsSize}, std::int64_t{kThreadsBatch}})
        ->Threads(1)
        ->Threads(2);
}

void fail_benchmark(benchmark::State& state, const std::string& who,
                    const std::string& why) {
  if (why.rfind(kRefusedPrefix, 0) != 0)
    g_failed.fetch_add(1, std::memory_order_relaxed);
  const std::string message =
      who + ": " + (why.empty() ? "could not be created" : why);
  state.SkipWithError(message.c_str());
}

int failed_benchmarks() noexcept {
  return g_failed.load(std::memory_order_relaxed);
}

}  // namespace wxb
