// SPDX-License-Identifier: MIT
// wxa-seccomp-run: runs a program under a seccomp filter that makes the kernel
// refuse writable+executable mappings (the W^X oracle for the test suite),
// optionally plus what a hardened host refuses.
//
// Usage: wxa-seccomp-run [--policy POLICY] -- PROGRAM [ARGS...]
//
//   wx           (default) mmap, mprotect and pkey_mprotect fail with EACCES
//                when their prot argument holds both PROT_WRITE and PROT_EXEC.
//   execmem      a stand-in for SELinux deny_execmem: everything of wx, plus
//                mmap with PROT_EXEC of anonymous memory (MAP_ANONYMOUS) and
//                every mprotect / pkey_mprotect asking for PROT_EXEC fail with
//                EACCES. seccomp sees only the arguments, not whether the
//                target of an mprotect is anonymous, so all of them are
//                refused: code can then only come from files (or memfds)
//                mapped executable with mmap.
//   nomemfdexec  a stand-in for vm.memfd_noexec=2: everything of wx, plus
//                mmap with PROT_EXEC and MAP_SHARED, and memfd_create with
//                MFD_EXEC, fail with EACCES. Anonymous memory may still gain
//                PROT_EXEC with mprotect.
//   nomembarrier everything of wx, plus membarrier fails with EPERM (a
//                kernel or sandbox without it).
//   nopopulate   everything of wx, plus madvise(MADV_POPULATE_READ) fails
//                with EINVAL, as on kernels older than 5.14.
//   onlydual     everything of execmem, plus pwrite64 / pwritev / pwritev2
//                fail with EPERM: neither an anonymous mapping nor a memfd
//                written by the kernel can become code, so of wxarena's
//                backends only dual_map works.
//   nomemfd-eacces, nomemfd-eperm, nomemfd-enosys
//                everything of wx, plus every memfd_create fails with EACCES
//                (firejail's default), EPERM (a sandbox's seccomp profile) or
//                ENOSYS (a kernel or sandbox without it): only protect works.
//
// The filter survives execve and is inherited by every child, so the whole
// program is judged by the kernel. The program is told nothing about the
// filter (its environment is passed on unchanged): it has to find out what
// is refused by trying. Nothing is printed on success; PROGRAM's exit status
// is the tool's (execvp replaces this process). Exit status 2 means bad
// usage, 1 a failure to install the filter, 126/127 a failure to run
// PROGRAM.
//
// Only the native architecture (x86-64 here) is added to the filter; system
// calls made through any other ABI hit libseccomp's default bad-arch action,
// which kills the process, so they cannot be used to get around it.

#include <seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace {

constexpr int exit_usage = 2;
constexpr int exit_setup = 1;

enum class Policy {
  wx,
  execmem,
  nomemfdexec,
  nomembarrier,
  nopopulate,
  onlydual,
  nomemfd_eacces,
  nomemfd_eperm,
  nomemfd_enosys
};

struct PolicyName {
  std::string_view name;
  Policy policy;
};
constexpr PolicyName policies[] = {
    {"wx", Policy::wx},
    {"execmem", Policy::execmem},
    {"nomemfdexec", Policy::nomemfdexec},
    {"nomembarrier", Policy::nomembarrier},
    {"nopopulate", Policy::nopopulate},
    {"onlydual", Policy::onlydual},
    {"nomemfd-eacces", Policy::nomemfd_eacces},
    {"nomemfd-eperm", Policy::nomemfd_eperm},
    {"nomemfd-enosys", Policy::nomemfd_enosys},
};

void print_usage(std::FILE* out) noexcept {
  std::fputs(
      "usage: wxa-seccomp-run [--policy POLICY] -- PROGRAM [ARGS...]\n"
      "  wx            refuse mmap/mprotect/pkey_mprotect with"
      " PROT_WRITE|PROT_EXEC (default)\n"
      "  execmem       wx, plus refuse anonymous executable mmap and any"
      " mprotect adding PROT_EXEC (SELinux deny_execmem)\n"
      "  nomemfdexec   wx, plus refuse executable MAP_SHARED mmap and"
      " memfd_create(MFD_EXEC) with EACCES (vm.memfd_noexec=2)\n"
      "  nomembarrier  wx, plus refuse membarrier with EPERM\n"
      "  nopopulate    wx, plus refuse madvise(MADV_POPULATE_READ) with EINVAL"
      " (kernels before 5.14)\n"
      "  onlydual      execmem, plus refuse pwrite64/pwritev/pwritev2 with"
      " EPERM (only dual_map works)\n"
      "  nomemfd-eacces, nomemfd-eperm, nomemfd-enosys\n"
      "                wx, plus refuse every memfd_create with that error"
      " (only protect works)\n",
      out);
}

int usage_error(const char* message, const char* detail = nullptr) noexcept {
  if (detail != nullptr) {
    std::fprintf(stderr, "wxa-seccomp-run: %s: %s\n", message, detail);
  } else {
    std::fprintf(stderr, "wxa-seccomp-run: %s\n", message);
  }
  print_usage(stderr);
  return exit_usage;
}

// libseccomp returns negative errno values instead of setting errno.
bool seccomp_ok(int rc, const char* what) noexcept {
  if (rc == 0) return true;
  std::fprintf(stderr, "wxa-seccomp-run: %s: %s\n", what, std::strerror(-rc));
  return false;
}

// Refuses `syscall` with EACCES when (arg2 & mask) == mask, and, if flag_mask
// is non-zero, also (arg3 & flag_mask) == flag_mask.
bool refuse(scmp_filter_ctx ctx, int syscall, scmp_datum_t prot_mask,
            scmp_datum_t flag_mask = 0) noexcept {
  const int rc =
      flag_mask == 0
          ? seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), syscall, 1,
                             SCMP_A2(SCMP_CMP_MASKED_EQ, prot_mask, prot_mask))
          : seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), syscall, 2,
                             SCMP_A2(SCMP_CMP_MASKED_EQ, prot_mask, prot_mask),
                             SCMP_A3(SCMP_CMP_MASKED_EQ, flag_mask, flag_mask));
  return seccomp_ok(rc, "seccomp_rule_add");
}

// Refuses every call of `syscall` with `error`.
bool refuse_all(scmp_filter_ctx ctx, int syscall, int error) noexcept {
  return seccomp_ok(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(error), syscall, 0),
                    "seccomp_rule_add");
}

bool add_rules(scmp_filter_ctx ctx, Policy policy) noexcept {
  constexpr scmp_datum_t wx = PROT_WRITE | PROT_EXEC;
  // The prot argument is the third one (index 2) of all three calls:
  // mmap(addr, len, prot, flags, fd, off), mprotect(addr, len, prot),
  // pkey_mprotect(addr, len, prot, pkey).
  if (!refuse(ctx, SCMP_SYS(mmap), wx) ||
      !refuse(ctx, SCMP_SYS(mprotect), wx) ||
      !refuse(ctx, SCMP_SYS(pkey_mprotect), wx)) {
    return false;
  }
  if (policy == Policy::execmem || policy == Policy::onlydual) {
    if (!refuse(ctx, SCMP_SYS(mmap), PROT_EXEC, MAP_ANONYMOUS) ||
        !refuse(ctx, SCMP_SYS(mprotect), PROT_EXEC) ||
        !refuse(ctx, SCMP_SYS(pkey_mprotect), PROT_EXEC)) {
      return false;
    }
  }
  switch (policy) {
    case Policy::wx:
    case Policy::execmem:
      return true;
    case Policy::nomemfdexec: {
      // MAP_SHARED is bit 0 of the flags, also set in MAP_SHARED_VALIDATE.
      // memfd_create(name, flags): MFD_EXEC (Linux 6.3; 0x10) in argument 1.
      constexpr scmp_datum_t mfd_exec = 0x10;
      return refuse(ctx, SCMP_SYS(mmap), PROT_EXEC, MAP_SHARED) &&
             seccomp_ok(seccomp_rule_add(
                            ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(memfd_create),
                            1, SCMP_A1(SCMP_CMP_MASKED_EQ, mfd_exec, mfd_exec)),
                        "seccomp_rule_add");
    }
    case Policy::nomembarrier:
      return refuse_all(ctx, SCMP_SYS(membarrier), EPERM);
    case Policy::nopopulate: {
      // madvise(addr, len, advice); MADV_POPULATE_READ is 22 (Linux 5.14).
      constexpr scmp_datum_t populate_read = 22;
      return seccomp_ok(
          seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EINVAL), SCMP_SYS(madvise), 1,
                           SCMP_A2(SCMP_CMP_EQ, populate_read, 0)),
          "seccomp_rule_add");
    }
    case Policy::onlydual:
      return refuse_all(ctx, SCMP_SYS(pwrite64), EPERM) &&
             refuse_all(ctx, SCMP_SYS(pwritev), EPERM) &&
             refuse_all(ctx, SCMP_SYS(pwritev2), EPERM);
    case Policy::nomemfd_eacces:
      return refuse_all(ctx, SCMP_SYS(memfd_create), EACCES);
    case Policy::nomemfd_eperm:
      return refuse_all(ctx, SCMP_SYS(memfd_create), EPERM);
    case Policy::nomemfd_enosys:
      return refuse_all(ctx, SCMP_SYS(memfd_create), ENOSYS);
  }
  return false;
}

bool install_filter(Policy policy) noexcept {
  // Without no_new_privs an unprivileged process may not install a filter
  // (seccomp(2)); it also keeps set-user-ID programs from escaping it.
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    std::fprintf(stderr, "wxa-seccomp-run: prctl(PR_SET_NO_NEW_PRIVS): %s\n",
                 std::strerror(errno));
    return false;
  }
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == nullptr) {
    std::fprintf(stderr, "wxa-seccomp-run: seccomp_init failed\n");
    return false;
  }
  const bool ok =
      add_rules(ctx, policy) && seccomp_ok(seccomp_load(ctx), "seccomp_load");
  seccomp_release(ctx);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  Policy policy = Policy::wx;
  int i = 1;
  bool separator = false;
  for (; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--") {
      separator = true;
      ++i;
      break;
    }
    if (arg == "-h" || arg == "--help") {
      print_usage(stdout);
      return 0;
    }
    std::string_view value;
    if (arg == "--policy") {
      if (i + 1 >= argc) return usage_error("--policy needs a value");
      value = argv[++i];
    } else if (arg.starts_with("--policy=")) {
      value = arg.substr(std::string_view("--policy=").size());
    } else {
      return usage_error("unknown argument", argv[i]);
    }
    bool known = false;
    for (const PolicyName& p : policies) {
      if (p.name == value) {
        policy = p.policy;
        known = true;
      }
    }
    if (!known) return usage_error("unknown policy", value.data());
  }
  if (!separator) return usage_error("missing -- before the program");
  if (i >= argc) return usage_error("missing program after --");

  if (!install_filter(policy)) return exit_setup;

  execvp(argv[i], argv + i);
  const int error = errno;
  std::fprintf(stderr, "wxa-seccomp-run: cannot run %s: %s\n", argv[i],
               std::strerror(error));
  return error == ENOENT ? 127 : 126;
}
