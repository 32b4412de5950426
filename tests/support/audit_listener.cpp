// SPDX-License-Identifier: MIT
// Installs the per-test W+X audit into every test binary that links it.

#include "support/audit_listener.hpp"

#include <cinttypes>
#include <cstdio>
#include <exception>
#include <string>

#include "support/maps.hpp"

namespace wxa::test {

void WxAuditListener::OnTestEnd(const ::testing::TestInfo& test_info) {
  // gtest calls OnTestEnd while test_info is still the current test and
  // before the result printer (which runs listeners' OnTestEnd in reverse
  // order of appending), so ADD_FAILURE here fails this very test.
  std::string found;
  try {
    for (const Mapping& m : writable_and_executable()) {
      char line[128];
      std::snprintf(line, sizeof line, "\n  0x%" PRIxPTR "-0x%" PRIxPTR " %s ",
                    m.begin, m.end, m.perms().c_str());
      found += line + m.name;
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << "W^X audit after " << test_info.test_suite_name() << "."
                  << test_info.name()
                  << " could not read /proc/self/maps: " << e.what();
    return;
  }
  if (!found.empty()) {
    ADD_FAILURE() << "W^X audit: writable and executable mappings exist after "
                  << test_info.test_suite_name() << "." << test_info.name()
                  << ":" << found;
  }
}

bool install_wx_audit_listener() {
  static const bool installed = [] {
    // The listener list takes ownership.
    ::testing::UnitTest::GetInstance()->listeners().Append(new WxAuditListener);
    return true;
  }();
  return installed;
}

namespace {
[[maybe_unused]] const bool registered = install_wx_audit_listener();
}  // namespace

}  // namespace wxa::test
