// SPDX-License-Identifier: MIT
// Counts the calling thread's mapping system calls, whoever makes them (our
// code, libc, LLVM, asmjit, mimalloc), through Linux Syscall User Dispatch.
//
// While counting, every system call of the thread traps to a SIGSYS handler
// that counts it and re-issues it from an allowed address (see
// Documentation/admin-guide/syscall-user-dispatch.rst). That costs a few
// microseconds a call, so it is only switched on outside timed regions.
#pragma once

#include "strategy.hpp"

namespace wxb::syscall_counter {

/// True if counting works in this process (Linux >= 5.11 on x86-64, and no
/// policy refusing the prctl). Probed once.
[[nodiscard]] bool available() noexcept;

/// Starts counting on the calling thread (counts restart at zero).
/// False if unavailable.
[[nodiscard]] bool start() noexcept;

/// Stops counting on the calling thread and returns the counts.
SyscallCounts stop() noexcept;

}  // namespace wxb::syscall_counter
