// SPDX-License-Identifier: MIT
// The transition fuzzer on the real kernel: the harness's decoder and model
// run against real_platform(), each input mapping real memory.
//
// Built three ways by fuzz/meson.build: as a libFuzzer target
// (-Dfuzzing=true), with AFL++ (afl-clang-fast++ -fsanitize=fuzzer, see
// docs/reliability.md), and, with WXA_FUZZ_STANDALONE, as a plain program
// that replays files and directories (the corpus replay test of every
// build).
#include <cstddef>
#include <cstdint>

#include "platforms.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  wxa::fuzz::run_input(wxa::fuzz::real_platform(), data, size);
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
