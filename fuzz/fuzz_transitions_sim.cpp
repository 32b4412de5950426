// SPDX-License-Identifier: MIT
// The transition fuzzer on a simulated platform: the harness's decoder and
// model run against sim_platform() (tests/support/sim_pal.hpp), thousands
// of inputs a second, with the same corpus as fuzz_transitions.
//
// WXA_SIM_CAPS switches host capabilities off for a whole run, to explore
// hardened hosts, e.g. WXA_SIM_CAPS=anon_exec,barrier (see sim_platform.cpp).
// Built as a libFuzzer target (-Dfuzzing=true) and, with
// WXA_FUZZ_STANDALONE, as fuzz_transitions_sim_replay.
#include <cstddef>
#include <cstdint>

#include "platforms.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  wxa::fuzz::run_input(wxa::fuzz::sim_platform(), data, size);
  return 0;
}

#ifdef WXA_FUZZ_STANDALONE
int main(int argc, char** argv) {
  return wxa::fuzz::replay_main(argc, argv,
                                [](const std::uint8_t* d, std::size_t n) {
                                  (void)LLVMFuzzerTestOneInput(d, n);
                                });
}
#endif

#ifndef WXA_FUZZ_STANDALONE
// AddressSanitizer's defaults for this target (ASAN_OPTIONS overrides
// them): short allocation stacks and no fill of new blocks, which cost a
// quarter of its time; a crash replays with full stacks through
// ASAN_OPTIONS=malloc_context_size=30.
extern "C" const char* __asan_default_options() {
  return "malloc_context_size=4:max_malloc_fill_size=0:quarantine_size_mb=16";
}
#endif
