// SPDX-License-Identifier: MIT
// Syscall User Dispatch counter: a SIGSYS handler counts each trapped call and
// re-issues it through a gadget in the one address range the kernel lets
// through, and returns through its own rt_sigreturn stub in that range.
#include "syscall_counter.hpp"

#include <linux/prctl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <mutex>

#if !defined(__x86_64__) || !defined(__linux__)
#error "the syscall counter is written for Linux x86-64"
#endif

#ifndef SYS_USER_DISPATCH
#define SYS_USER_DISPATCH 2  // si_code of SIGSYS raised by user dispatch
#endif

// The allowed range: a raw syscall(nr, a1..a6) and the sigreturn stub. The
// kernel never diverts a system call made from inside it.
extern "C" {
long wxb_raw_syscall(long nr, long a1, long a2, long a3, long a4, long a5,
                     long a6);
void wxb_sigreturn();
extern const char wxb_dispatch_begin[], wxb_dispatch_end[];
}

asm(R"(
  .text
  .p2align 4
  .globl wxb_dispatch_begin, wxb_raw_syscall, wxb_sigreturn, wxb_dispatch_end
  .hidden wxb_dispatch_begin, wxb_raw_syscall, wxb_sigreturn, wxb_dispatch_end
wxb_dispatch_begin:
wxb_raw_syscall:
  movq %rdi, %rax
  movq %rsi, %rdi
  movq %rdx, %rsi
  movq %rcx, %rdx
  movq %r8, %r10
  movq %r9, %r8
  movq 8(%rsp), %r9
  syscall
  ret
wxb_sigreturn:
  movl $15, %eax
  syscall
  hlt
wxb_dispatch_end:
)");

namespace wxb::syscall_counter {
namespace {

thread_local volatile char t_selector = SYSCALL_DISPATCH_FILTER_ALLOW;
thread_local SyscallCounts t_counts;

void count(long nr) noexcept {
  switch (nr) {
    case SYS_mmap:
      ++t_counts.mmap;
      break;
    case SYS_munmap:
      ++t_counts.munmap;
      break;
    case SYS_mprotect:
      ++t_counts.mprotect;
      break;
    case SYS_madvise:
      ++t_counts.madvise;
      break;
    case SYS_memfd_create:
      ++t_counts.memfd;
      break;
    case SYS_membarrier:
      ++t_counts.membarrier;
      break;
    case SYS_mremap:
    case SYS_pkey_mprotect:
    case SYS_ftruncate:
    case SYS_fallocate:
      ++t_counts.other;
      break;
    case SYS_pwrite64:
    case SYS_pwritev:
    case SYS_pwritev2:
      ++t_counts.write;
      break;
    default:
      break;
  }
}

// Runs on the trapping thread with SIGSYS blocked; calls nothing that makes
// a system call except through the allowed gadget.
void on_sigsys(int, siginfo_t* info, void* context) {
  auto* uc = static_cast<ucontext_t*>(context);
  greg_t* r = uc->uc_mcontext.gregs;
  if (info->si_code != SYS_USER_DISPATCH) {  // not ours (e.g. seccomp)
    r[REG_RAX] = -ENOSYS;
    return;
  }
  const long nr = info->si_syscall;
  count(nr);
  r[REG_RAX] = wxb_raw_syscall(nr, r[REG_RDI], r[REG_RSI], r[REG_RDX],
                               r[REG_R10], r[REG_R8], r[REG_R9]);
}

// The kernel's struct sigaction on x86-64: glibc's sigaction() would install
// its own restorer, which lies outside the allowed range.
struct KernelSigaction {
  void (*handler)(int, siginfo_t*, void*);
  unsigned long flags;
  void (*restorer)();
  std::uint64_t mask;
};
constexpr unsigned long kSaRestorer = 0x04000000;

bool install_handler() noexcept {
  KernelSigaction action{};
  action.handler = on_sigsys;
  action.flags = SA_SIGINFO | kSaRestorer;
  action.restorer = wxb_sigreturn;
  action.mask = 0;
  return ::syscall(SYS_rt_sigaction, SIGSYS, &action, nullptr,
                   sizeof action.mask) == 0;
}

bool switch_on() noexcept {
  t_selector = SYSCALL_DISPATCH_FILTER_ALLOW;
  const auto begin = reinterpret_cast<std::uintptr_t>(wxb_dispatch_begin);
  const auto end = reinterpret_cast<std::uintptr_t>(wxb_dispatch_end);
  if (::prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON, begin,
              end - begin, &t_selector) != 0)
    return false;
  t_counts = {};
  t_selector = SYSCALL_DISPATCH_FILTER_BLOCK;
  return true;
}

void switch_off() noexcept {
  t_selector = SYSCALL_DISPATCH_FILTER_ALLOW;
  // Cannot fail for a thread that switched it on; nothing to do if it did.
  (void)::prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF, 0, 0, 0);
}

bool probe() noexcept {
  if (!install_handler()) return false;
  if (!switch_on()) return false;
  // munmap of an unaligned address fails with EINVAL and changes nothing;
  // it only has to be seen.
  const int rc = ::munmap(reinterpret_cast<void*>(1), 1);
  const int err = errno;
  switch_off();
  return rc == -1 && err == EINVAL && t_counts.munmap == 1;
}

}  // namespace

bool available() noexcept {
  static const bool ok = probe();
  return ok;
}

bool start() noexcept { return available() && switch_on(); }

SyscallCounts stop() noexcept {
  switch_off();
  return t_counts;
}

}  // namespace wxb::syscall_counter
