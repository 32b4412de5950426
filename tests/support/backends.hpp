// SPDX-License-Identifier: MIT
// Which backends this test run can create, judged by probing the host, and a
// skip for tests that force one.
//
// The suite runs plain and under several seccomp filters, each a stand-in
// for a hardened host (tools/wxa_seccomp_run.cpp, and a foreign filter that
// tells nothing: tests/support/foreign_filter.cpp). No test is told which
// filter is in force: what each backend needs is read from the platform
// layer's probed capabilities (src/pal/linux.cpp). A test that forces a
// backend starts with WXA_SKIP_IF_UNAVAILABLE(backend), which also works in
// a fixture's SetUp() (gtest then skips the test body).
#pragma once

#include <gtest/gtest.h>

#include "pal/pal.hpp"
#include "wxarena/arena.hpp"

namespace wxa::test {

/// How this platform's dual_map changes a view, as SyscallCounts sees it.
/// Linux maps the memfd over the page (mmap) and keeps a writable view out of
/// fork() children (madvise); Windows keeps whole views of the section and
/// changes the protection of the page within one (VirtualProtect, counted
/// as mprotect; see src/pal/windows.cpp).
#ifdef _WIN32
inline constexpr bool kViewsChangeByProtection = true;
#else
inline constexpr bool kViewsChangeByProtection = false;
#endif

/// The probed capabilities of this host, as the library sees them.
inline const detail::Capabilities& host() noexcept {
  return detail::system_pal().capabilities();
}

/// Why `backend` cannot be created on this host, or nullptr if it can.
/// protect needs anonymous memory that may gain PROT_EXEC; dual_map a memfd
/// that may be mapped executable; kernel_write that too, plus the kernel
/// copying into it while it is mapped executable.
inline const char* unavailable_reason(Backend backend) noexcept {
  const detail::Capabilities& caps = host();
  switch (backend) {
    case Backend::protect:
      if (!caps.anon_exec)
        return "Backend::protect needs anonymous memory that may gain "
               "PROT_EXEC, and this host refuses it (probe: anon_exec)";
      return nullptr;
    case Backend::dual_map:
      if (!caps.shared_memory)
        return "Backend::dual_map needs a shared memory object, and this "
               "host refuses memfd_create (probe: shared_memory)";
      if (!caps.shared_exec)
        return "Backend::dual_map needs a memfd mapped PROT_EXEC, and this "
               "host refuses it (probe: shared_exec)";
      return nullptr;
    case Backend::kernel_write:
      if (!caps.shared_memory)
        return "Backend::kernel_write needs a shared memory object, and "
               "this host refuses memfd_create (probe: shared_memory)";
      if (!caps.shared_exec)
        return "Backend::kernel_write needs a memfd mapped PROT_EXEC, and "
               "this host refuses it (probe: shared_exec)";
      if (!caps.shared_write)
        return "Backend::kernel_write needs pwrite into a memfd mapped "
               "executable, and this host refuses it (probe: shared_write)";
      return nullptr;
    default:
      return nullptr;
  }
}

/// The backend Backend::automatic must pick on this host, in the library's
/// order of preference: kernel_write, else protect, else dual_map; automatic
/// (meaning "create fails with not_supported") when none is available.
inline Backend expected_automatic() noexcept {
  for (Backend b : {Backend::kernel_write, Backend::protect, Backend::dual_map})
    if (unavailable_reason(b) == nullptr) return b;
  return Backend::automatic;
}

}  // namespace wxa::test

/// GTEST_SKIP()s the calling test (or fixture SetUp) when `backend` cannot
/// be created on this host; a no-op otherwise.
#define WXA_SKIP_IF_UNAVAILABLE(backend)                                 \
  do {                                                                   \
    if (const char* wxa_why_ = ::wxa::test::unavailable_reason(backend)) \
      GTEST_SKIP() << wxa_why_;                                          \
  } while (0)
