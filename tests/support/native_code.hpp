// SPDX-License-Identifier: MIT
// Real functions for the machine the tests run on: x86_code.hpp's writers on
// x86-64, aarch64_code.hpp's on AArch64, under one set of names, so that a
// test which writes, seals and calls code runs on both.
//
//   write_return_imm(out, value[, size])  `unsigned f()` returning value
//   write_add_args(out[, size])           `int f(int a, int b)`: a + b
//   fill_traps(out)                       traps (int3 / brk #0)
//   return_imm_size, add_args_size        their minimal sizes
//   trap_byte_at(offset)                  the byte at `offset` (from any
//                                         word boundary, e.g. an address)
//                                         of trap-filled memory, as the
//                                         library's trap fill writes it
//   code_alignment                        where an entry may start
#pragma once

#include <cstddef>

#if defined(__x86_64__)
#include "support/x86_code.hpp"

namespace wxa::test {
inline constexpr std::size_t code_alignment = 1;
constexpr std::byte trap_byte_at(std::size_t) noexcept { return x86_int3; }
}  // namespace wxa::test

#elif defined(__aarch64__)
#include "support/aarch64_code.hpp"

namespace wxa::test {
inline constexpr std::size_t code_alignment = 4;
inline constexpr std::size_t return_imm_size = a64::return_imm_size;
inline constexpr std::size_t add_args_size = a64::add_args_size;
using a64::fill_traps;
using a64::trap_byte_at;
using a64::write_add_args;
using a64::write_return_imm;
}  // namespace wxa::test

#else
#error "no code writer for this architecture (tests/support/native_code.hpp)"
#endif
