// SPDX-License-Identifier: MIT
// Runs a program to completion and captures its output, for tests that judge
// other programs (the seccomp oracle, the audit listener's proof).
#pragma once

#include <string>
#include <vector>

namespace wxa::test {

/// How a finished child ended.
struct ProcessResult {
  int exit_code = -1;  ///< exit status, or -1 if killed by a signal
  int signal = 0;      ///< the terminating signal, or 0
  std::string out;     ///< everything written to stdout
  std::string err;     ///< everything written to stderr
};

/// Runs argv[0] (a path; no PATH search) with argv, this process's
/// environment plus `extra_env` ("NAME=value", overriding same names), stdin
/// from /dev/null, and waits for it. Throws std::system_error if it cannot be
/// started or waited for. Thread-safe: its pipes are close-on-exec, so
/// concurrent calls do not leak descriptors into each other's children.
[[nodiscard]] ProcessResult run_process(
    const std::vector<std::string>& argv,
    const std::vector<std::string>& extra_env = {});

/// Why this process cannot start programs built for its own machine, or
/// nullptr if it can. Under qemu-user without binfmt_misc, the emulator runs
/// this process but the kernel cannot run an executable of the emulated
/// machine: execve() fails with ENOEXEC. Probed once, by starting this same
/// (GoogleTest) executable with arguments that make it list no test.
[[nodiscard]] const char* exec_unavailable_reason();

/// The absolute path of the running executable (/proc/self/exe).
[[nodiscard]] std::string self_executable();

/// The value of environment variable `name`, or "" if unset.
[[nodiscard]] std::string env_or_empty(const char* name);

}  // namespace wxa::test
