// SPDX-License-Identifier: MIT
// The example JIT (examples/jit_expr.hpp) end to end, on wxarena and on RWX
// memory: startup/example_jit_wxarena and startup/example_jit_rwx.
#pragma once

#include "workloads.hpp"

namespace wxb {

/// Registers both example JIT benchmarks (full: 50,000 functions; smoke:
/// two batches). Call after register_workloads().
void register_example_jit(Scale scale);

}  // namespace wxb
