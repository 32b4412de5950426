// SPDX-License-Identifier: MIT
// The two platforms the transition fuzzers run on.
#pragma once

#include "harness.hpp"

namespace wxa::fuzz {

/// The kernel: real mappings, /proc/self/maps, code that is called.
Platform& real_platform();

/// SimPal: mappings simulated in memory, its own maps(); code is compared
/// with what was written and its page must be executable in the model.
/// Capabilities named in WXA_SIM_CAPS (comma-separated Capabilities
/// fields) are switched off.
Platform& sim_platform();

}  // namespace wxa::fuzz
