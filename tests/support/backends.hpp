// SPDX-License-Identifier: MIT
// Which backends this test run can create, and a skip for tests that force one.
//
// The suite runs three times: plain, under `wxa-seccomp-run --policy wx` and
// under `--policy execmem` (a stand-in for SELinux deny_execmem: anonymous
// memory can never gain PROT_EXEC). The launcher sets WXA_SECCOMP_POLICY in
// the child's environment. Under execmem, Backend::protect cannot exist
// (Arena::create fails with Errc::permission_denied): a test that forces it
// starts with WXA_SKIP_IF_UNAVAILABLE(backend), which also works in a
// fixture's SetUp() (gtest then skips the test body).
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string_view>

#include "pal/pal.hpp"
#include "wxarena/arena.hpp"

namespace wxa::test {

/// The seccomp policy this process runs under ("wx", "execmem"), or "".
inline std::string_view seccomp_policy() noexcept {
  const char* p = std::getenv("WXA_SECCOMP_POLICY");
  return p ? std::string_view(p) : std::string_view();
}

/// True under the deny_execmem stand-in.
inline bool execmem_denied() noexcept { return seccomp_policy() == "execmem"; }

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

/// Why `backend` cannot be created in this run, or nullptr if it can.
/// Forcing protect is impossible under the execmem policy (or on a host whose
/// kernel refuses anonymous PROT_EXEC by itself, as the probe found).
inline const char* unavailable_reason(Backend backend) noexcept {
  const detail::Capabilities& caps = detail::system_pal().capabilities();
  if (backend == Backend::dual_map && !(caps.shared_memory && caps.shared_exec))
    return "this host refuses a memfd mapped executable, so "
           "Backend::dual_map cannot be created";
  if (backend == Backend::kernel_write &&
      !(caps.shared_memory && caps.shared_exec && caps.shared_write))
    return "this host refuses a memfd mapped executable, or writing into "
           "one (pwritev), so Backend::kernel_write cannot be created";
  if (backend != Backend::protect) return nullptr;
  if (execmem_denied())
    return "Backend::protect is refused under the execmem policy "
           "(anonymous memory may not gain PROT_EXEC); automatic uses "
           "dual_map here, and test_backend_choice checks that";
  if (!detail::system_pal().capabilities().anon_exec)
    return "this kernel refuses PROT_EXEC on anonymous memory, so "
           "Backend::protect cannot be created";
  return nullptr;
}

}  // namespace wxa::test

/// GTEST_SKIP()s the calling test (or fixture SetUp) when `backend` cannot
/// be created in this run; a no-op otherwise.
#define WXA_SKIP_IF_UNAVAILABLE(backend)                                 \
  do {                                                                   \
    if (const char* wxa_why_ = ::wxa::test::unavailable_reason(backend)) \
      GTEST_SKIP() << wxa_why_;                                          \
  } while (0)
