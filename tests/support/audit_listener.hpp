// SPDX-License-Identifier: MIT
// A GoogleTest listener that fails any test after which a writable and
// executable mapping exists anywhere in the process (DESIGN.md invariant 1).
//
// Linking audit_listener.cpp into a test binary installs it for every test:
// a static initializer appends it to UnitTest's listeners before main runs.
// The check re-reads /proc/self/maps once per test; it runs on the thread
// that runs the tests, and sees mappings made by every thread.
#pragma once

#include <gtest/gtest.h>

namespace wxa::test {

/// At the end of each test, adds a non-fatal failure to that test (while it
/// is still the current test, so it counts in the result and the exit code)
/// naming every writable+executable mapping found in /proc/self/maps.
class WxAuditListener final : public ::testing::EmptyTestEventListener {
 public:
  void OnTestEnd(const ::testing::TestInfo& test_info) override;
};

/// Appends one WxAuditListener to the global listeners; later calls do
/// nothing. Returns true. Called by audit_listener.cpp's static initializer.
bool install_wx_audit_listener();

}  // namespace wxa::test
