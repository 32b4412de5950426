// SPDX-License-Identifier: MIT
// foreign_filter: runs a program under a deny-execmem seccomp filter that is
// not wxa-seccomp-run and tells the program nothing, so the suite must find
// out by probing what the host refuses.
//
// Usage: foreign_filter PROGRAM [ARGS...]
//
// Refused with EACCES (what SELinux answers under deny_execmem): mmap asking
// for PROT_EXEC of anonymous memory, and mprotect / pkey_mprotect asking for
// PROT_EXEC on anything. The environment is passed on unchanged. Exit status
// 2 means bad usage, 1 a failure to install the filter, 126/127 a failure to
// run PROGRAM; otherwise it is PROGRAM's.

#include <seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace {

bool add(scmp_filter_ctx ctx, int syscall, unsigned count,
         const scmp_arg_cmp* cmp) noexcept {
  const int rc =
      seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EACCES), syscall, count, cmp);
  if (rc == 0) return true;
  std::fprintf(stderr, "foreign_filter: seccomp_rule_add: %s\n",
               std::strerror(-rc));
  return false;
}

bool install() noexcept {
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    std::fprintf(stderr, "foreign_filter: prctl: %s\n", std::strerror(errno));
    return false;
  }
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == nullptr) {
    std::fprintf(stderr, "foreign_filter: seccomp_init failed\n");
    return false;
  }
  const scmp_arg_cmp exec_prot = {2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC};
  const scmp_arg_cmp anon_exec[] = {
      exec_prot, {3, SCMP_CMP_MASKED_EQ, MAP_ANONYMOUS, MAP_ANONYMOUS}};
  bool ok = add(ctx, SCMP_SYS(mmap), 2, anon_exec) &&
            add(ctx, SCMP_SYS(mprotect), 1, &exec_prot) &&
            add(ctx, SCMP_SYS(pkey_mprotect), 1, &exec_prot);
  if (ok) {
    const int rc = seccomp_load(ctx);
    if (rc != 0) {
      std::fprintf(stderr, "foreign_filter: seccomp_load: %s\n",
                   std::strerror(-rc));
      ok = false;
    }
  }
  seccomp_release(ctx);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: foreign_filter PROGRAM [ARGS...]\n");
    return 2;
  }
  if (!install()) return 1;
  execvp(argv[1], argv + 1);
  const int error = errno;
  std::fprintf(stderr, "foreign_filter: cannot run %s: %s\n", argv[1],
               std::strerror(error));
  return error == ENOENT ? 127 : 126;
}
