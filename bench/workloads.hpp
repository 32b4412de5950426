// SPDX-License-Identifier: MIT
// The workloads (publish, startup, release_all, churn, vma_pressure, memory,
// threads), registered once per strategy as
// `<workload>/<strategy>/<arg>:<value>...`.
#pragma once

#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "strategy.hpp"

namespace wxb {

/// full: the parameters of docs/benchmarks.md. smoke: every workload and
/// strategy on small parameters, to check they run and compute right.
enum class Scale { full, smoke };

/// Registers every workload for every factory. The factories must outlive
/// the benchmark run.
void register_workloads(const std::vector<Factory>& factories, Scale scale);

/// Ends the benchmark in `state` with "who: why". A strategy error or a
/// wrong result counts toward failed_benchmarks(); a refusal (`why` starts
/// with kRefusedPrefix: a policy, a kernel limit, the arena's VMA budget) is
/// a result, only reported.
void fail_benchmark(benchmark::State& state, const std::string& who,
                    const std::string& why);

/// Benchmarks that failed (a wrong result or a strategy error), as opposed
/// to those skipped because a strategy cannot run here.
[[nodiscard]] int failed_benchmarks() noexcept;

}  // namespace wxb
