// SPDX-License-Identifier: MIT
// The areas of the suite that need a Linux facility, skipped on Windows with
// the reason, so that a run's report says what did not run there and why.
// The files themselves are built on Linux only (tests/meson.build); the
// Windows counterparts, where there are any, are in test_windows.cpp.
#include <gtest/gtest.h>

namespace {

// test_oracle.cpp
TEST(SeccompOracle, NeedsLinux) {
  GTEST_SKIP() << "the W^X oracle is a seccomp filter: Linux only";
}

// test_perf_map.cpp
TEST(PerfMap, NeedsLinux) {
  GTEST_SKIP() << "perf(1) maps in /tmp/perf-PID.map are a Linux convention; "
                  "WindowsPal.PerfMapsAreNotSupported checks the refusal";
}

// test_dual_map.cpp
TEST(DualMapStrict, NeedsLinux) {
  GTEST_SKIP() << "reads the memfd's views from /proc/self/maps; "
                  "WindowsDualMap.* check the section's two views with "
                  "VirtualQuery";
}

// test_fork.cpp
TEST(Fork, NeedsLinux) {
  GTEST_SKIP() << "Windows has no fork(); the section handle is not "
                  "inheritable";
}

// test_exhaustion.cpp
TEST(Exhaustion, NeedsLinux) {
  GTEST_SKIP() << "each case runs in a fork()ed child under an rlimit or a "
                  "seccomp filter";
}

}  // namespace
