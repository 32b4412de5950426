// SPDX-License-Identifier: MIT
// Death-test helpers: the child of a death test expects its next memory
// fault inside a given range, so that a pass proves the fault was the
// kernel's refusal at that address, not any crash. SIGSEGV / SIGBUS on
// Linux, an access violation (a vectored exception handler) on Windows.
//
// Use inside EXPECT_EXIT: expect_fault_in(p, n); then touch p. The child
// exits with kFaultExitCode and prints kFaultInChunk (or a different
// message, which fails the match) when the fault comes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#ifdef _WIN32
#include <windows.h>
#else
#include <signal.h>
#include <unistd.h>
#endif

namespace wxa::test {

inline constexpr int kFaultExitCode = 86;

namespace fault_detail {
inline std::uintptr_t g_lo = 0, g_hi = 0;

#ifdef _WIN32
inline LONG CALLBACK on_fault(EXCEPTION_POINTERS* info) {
  const EXCEPTION_RECORD* rec = info->ExceptionRecord;
  const auto at = rec->NumberParameters >= 2 ? rec->ExceptionInformation[1] : 0;
  const char* msg = rec->ExceptionCode != EXCEPTION_ACCESS_VIOLATION
                        ? "wxa-test: not an access violation\n"
                    : (at >= g_lo && at < g_hi)
                        ? "wxa-test: access violation inside the chunk\n"
                        : "wxa-test: access violation elsewhere\n";
  DWORD written = 0;
  (void)::WriteFile(::GetStdHandle(STD_ERROR_HANDLE), msg,
                    static_cast<DWORD>(std::strlen(msg)), &written, nullptr);
  ::ExitProcess(kFaultExitCode);
}
#else
inline void on_fault(int sig, siginfo_t* info, void*) {
  const auto at = reinterpret_cast<std::uintptr_t>(info->si_addr);
  const char* msg = sig != SIGSEGV ? "wxa-test: not SIGSEGV\n"
                    : (at >= g_lo && at < g_hi)
                        ? "wxa-test: SIGSEGV inside the chunk\n"
                        : "wxa-test: SIGSEGV elsewhere\n";
  (void)!::write(2, msg, std::strlen(msg));
  ::_exit(kFaultExitCode);
}
#endif
}  // namespace fault_detail

/// What the child prints for a fault inside the expected range.
#ifdef _WIN32
inline constexpr const char* kFaultInChunk =
    "access violation inside the chunk";
#else
inline constexpr const char* kFaultInChunk = "SIGSEGV inside the chunk";
#endif

/// Expects the next memory fault in [p, p + bytes).
inline void expect_fault_in(const void* p, std::size_t bytes) {
  fault_detail::g_lo = reinterpret_cast<std::uintptr_t>(p);
  fault_detail::g_hi = fault_detail::g_lo + bytes;
#ifdef _WIN32
  // First in line, ahead of any frame-based handler (gtest's included).
  (void)::AddVectoredExceptionHandler(1, fault_detail::on_fault);
#else
  struct sigaction sa {};
  sa.sa_sigaction = fault_detail::on_fault;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGSEGV, &sa, nullptr);
  ::sigaction(SIGBUS, &sa, nullptr);
#endif
}

}  // namespace wxa::test
