// SPDX-License-Identifier: MIT
// The workloads (publish, startup, churn, vma_pressure, threads), registered
// once per strategy as `<workload>/<strategy>/<arg>:<value>...`.
#pragma once

#include <vector>

#include "strategy.hpp"

namespace wxb {

/// full: the parameters of docs/benchmarks.md. smoke: every workload and
/// strategy on small parameters, to check they run and compute right.
enum class Scale { full, smoke };

/// Registers every workload for every factory. The factories must outlive
/// the benchmark run.
void register_workloads(const std::vector<Factory>& factories, Scale scale);

/// Benchmarks that failed (a wrong result or a strategy error), as opposed
/// to those skipped because a strategy cannot run here.
[[nodiscard]] int failed_benchmarks() noexcept;

}  // namespace wxb
