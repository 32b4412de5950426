// SPDX-License-Identifier: MIT
// Attacks from another process of the same user on a process's JIT code:
// reopening a code memfd for writing through /proc/<pid>/fd, truncating it,
// chmod-ing it back first, writing /proc/<pid>/mem; and the seals and mode
// that stand against them in the process itself.
//
// Two processes of one unprivileged uid: the test forks a victim and an
// attacker (siblings, so neither is the other's ancestor: Yama's ptrace_scope
// 1 refuses the attacker ptrace rights over the victim, as it would refuse an
// unrelated process). Run as root, both drop to nobody (65534) first: root
// would pass every permission check. The victim then makes itself dumpable
// again, as an ordinary process of that user is (the kernel makes a process
// that changed its uids non-dumpable, which would hide /proc/<pid>/fd from
// the attacker and the attack with it), unless the test plays a host that
// sets PR_SET_DUMPABLE 0. Children report through pipes and exit codes only.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "support/backends.hpp"
#include "support/native_code.hpp"
#include "wxarena/arena.hpp"

namespace wxa::test {
namespace {

constexpr uid_t kNobody = 65534;

// What the victim reports after the attack (exit codes).
enum VictimExit : int {
  kIntact = 0,       // its function still returns 42, its bytes unchanged
  kCodeChanged = 1,  // the attacker changed its code
  kCannotDrop = 2,   // setuid to nobody refused (no CAP_SETUID here)
  kArenaFailed = 3,  // the arena could not be made
  kVictimPipe = 4,   // pipe I/O failed
  kNotDumpable = 5,  // prctl(PR_SET_DUMPABLE) failed
};

// What the attacker managed, sent back through a pipe.
struct AttackReport {
  int setup_error = 0;   // errno of a failed setuid in the attacker
  int descriptors = 0;   // code memfd descriptors seen in /proc/<pid>/fd
  int chmodded = 0;      // chmod through /proc/<pid>/fd/<n> worked
  int reopened_rw = 0;   // open(O_RDWR) through /proc/<pid>/fd/<n> worked
  int reopen_errno = 0;  // the error of the last refused O_RDWR reopen
  int reopened_ro = 0;   // open(O_RDONLY) worked
  int wrote = 0;         // pwrite into a reopened descriptor worked
  int truncated = 0;     // ftruncate of a reopened descriptor worked
  int mem_opened = 0;    // /proc/<pid>/mem opened for writing
  int mem_written = 0;   // pwrite of the victim's function through it worked
};

// What the victim tells the attacker.
struct Target {
  pid_t pid = 0;
  std::uintptr_t fn = 0;
};

enum class Attack { reopen, chmod_then_reopen, proc_mem };

// Drops to nobody when root (groups first); a no-op for an unprivileged
// user, who already is the same user as the other child. Returns 0 or
// errno.
int become_unprivileged() {
  if (::geteuid() != 0) return 0;
  if (::setgroups(0, nullptr) != 0) return errno;
  if (::setresgid(kNobody, kNobody, kNobody) != 0) return errno;
  if (::setresuid(kNobody, kNobody, kNobody) != 0) return errno;
  return 0;
}

bool write_all(int fd, const void* p, std::size_t n) {
  return ::write(fd, p, n) == static_cast<ssize_t>(n);
}
bool read_all(int fd, void* p, std::size_t n) {
  return ::read(fd, p, n) == static_cast<ssize_t>(n);
}

// `unsigned f()` returning `value`, then traps to the end of `out`.
bool write_fn(std::span<std::byte> out, std::uint32_t value) {
  return write_return_imm(out, value, out.size()) == out.size();
}

// The victim: makes an arena, publishes f() == 42, tells `to` where, waits
// for a byte on `go`, then checks its function.
int victim(Backend backend, bool dumpable, int to, int go) {
  ::alarm(60);
  if (become_unprivileged() != 0) return kCannotDrop;
  if (::prctl(PR_SET_DUMPABLE, dumpable ? 1 : 0, 0, 0, 0) != 0)
    return kNotDumpable;
  Options o;
  o.backend = backend;
  o.reserve_bytes = std::size_t{16} << 20;
  Result<Arena> arena = Arena::create(o);
  if (!arena) return kArenaFailed;
  Result<Chunk> c = arena->allocate(arena->page_size());
  if (!c || !write_fn(c->rw(), 42) || !arena->seal(*c)) return kArenaFailed;
  std::byte expect[64];
  if (!write_fn(expect, 42)) return kArenaFailed;
  const Target t{::getpid(), reinterpret_cast<std::uintptr_t>(c->rx())};
  if (!write_all(to, &t, sizeof t)) return kVictimPipe;
  char byte = 0;
  if (!read_all(go, &byte, 1)) return kVictimPipe;
  // A truncated memfd kills the victim here with SIGBUS.
  if (std::memcmp(c->rx(), expect, sizeof expect) != 0) return kCodeChanged;
  if (c->entry<unsigned()>()() != 42) return kCodeChanged;
  return kIntact;
}

// The attacker: tries `attack` against the victim `t`.
AttackReport attacker(const Target& t, Attack attack) {
  AttackReport r;
  if (const int e = become_unprivileged(); e != 0) {
    r.setup_error = e;
    return r;
  }
  std::byte seven[64];
  (void)write_fn(seven, 7);
  if (attack == Attack::proc_mem) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/mem", static_cast<int>(t.pid));
    const int fd = ::open(path, O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
      r.mem_opened = 1;
      r.mem_written =
          ::pwrite(fd, seven, sizeof seven, static_cast<off_t>(t.fn)) > 0;
      (void)::close(fd);
    }
    return r;
  }
  for (int n = 0; n < 1024; ++n) {
    char path[64], link[256];
    std::snprintf(path, sizeof path, "/proc/%d/fd/%d", static_cast<int>(t.pid),
                  n);
    const ssize_t len = ::readlink(path, link, sizeof link - 1);
    if (len <= 0) continue;
    link[len] = '\0';
    if (std::strstr(link, "memfd:wxarena") == nullptr) continue;
    ++r.descriptors;
    if (attack == Attack::chmod_then_reopen && ::chmod(path, 0600) == 0)
      ++r.chmodded;
    const int ro = ::open(path, O_RDONLY | O_CLOEXEC);
    if (ro >= 0) {
      ++r.reopened_ro;
      (void)::close(ro);
    }
    const int fd = ::open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      r.reopen_errno = errno;
      continue;
    }
    ++r.reopened_rw;
    // The function lies at the start of some page of some memfd: overwrite
    // the start of every page.
    struct stat st;
    if (::fstat(fd, &st) == 0) {
      const auto page = static_cast<off_t>(::sysconf(_SC_PAGESIZE));
      for (off_t at = 0; at < st.st_size; at += page)
        if (::pwrite(fd, seven, sizeof seven, at) > 0) r.wrote = 1;
    }
    if (::ftruncate(fd, 0) == 0) ++r.truncated;
    (void)::close(fd);
  }
  return r;
}

struct Outcome {
  int victim = -1;  // exit code, or 128 + signal
  AttackReport attack;
  std::string failure;  // why the scene could not be set up
};

int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -2;
}

// Runs the victim and then the attacker, both as one unprivileged user.
Outcome run_attack(Backend backend, Attack attack, bool dumpable) {
  Outcome out;
  int to_parent[2], go[2], report[2];
  if (::pipe(to_parent) != 0 || ::pipe(go) != 0 || ::pipe(report) != 0) {
    out.failure = "pipe";
    return out;
  }
  std::fflush(nullptr);
  const pid_t v = ::fork();
  if (v == 0) {
    ::close(to_parent[0]);
    ::close(go[1]);
    ::_exit(victim(backend, dumpable, to_parent[1], go[0]));
  }
  ::close(to_parent[1]);
  ::close(go[0]);
  Target t;
  if (v < 0 || !read_all(to_parent[0], &t, sizeof t)) {
    ::close(go[1]);
    out.victim = v < 0 ? -1 : wait_for(v);
    out.failure = "the victim did not start";
    ::close(to_parent[0]);
    ::close(report[0]);
    ::close(report[1]);
    return out;
  }
  const pid_t a = ::fork();
  if (a == 0) {
    ::alarm(60);
    ::close(report[0]);
    const AttackReport r = attacker(t, attack);
    ::_exit(write_all(report[1], &r, sizeof r) ? 0 : 1);
  }
  ::close(report[1]);
  if (a < 0 || !read_all(report[0], &out.attack, sizeof out.attack))
    out.failure = "the attacker did not report";
  if (a > 0) (void)wait_for(a);
  (void)write_all(go[1], "x", 1);
  ::close(go[1]);
  out.victim = wait_for(v);
  ::close(to_parent[0]);
  ::close(report[0]);
  return out;
}

// Skips when the two unprivileged processes cannot be arranged here.
#define WXA_REQUIRE_SCENE(outcome)                                          \
  do {                                                                      \
    if ((outcome).victim == kCannotDrop || (outcome).attack.setup_error)    \
      GTEST_SKIP() << "cannot make two processes of one unprivileged user " \
                      "here: setuid to nobody refused";                     \
    ASSERT_EQ((outcome).failure, "") << "victim exit " << (outcome).victim; \
  } while (0)

std::string describe(const Outcome& o) {
  const AttackReport& r = o.attack;
  return "victim exit " + std::to_string(o.victim) +
         " (0 intact, 1 code changed, 135 SIGBUS); attacker: " +
         std::to_string(r.descriptors) + " code descriptors seen, " +
         std::to_string(r.chmodded) + " chmodded, " +
         std::to_string(r.reopened_rw) +
         " reopened read-write (last refusal: " +
         std::strerror(r.reopen_errno) + "), " + std::to_string(r.reopened_ro) +
         " reopened read-only, wrote " + std::to_string(r.wrote) +
         ", truncated " + std::to_string(r.truncated) + ", /proc/pid/mem " +
         std::to_string(r.mem_opened) + " opened, " +
         std::to_string(r.mem_written) + " written";
}

class SameUser : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override { WXA_SKIP_IF_UNAVAILABLE(GetParam()); }
};

// The attack of the issue: another process of the same user reopens the
// code memfd through /proc/<pid>/fd (even through the read-only descriptor:
// a reopen checks the inode's mode) and writes over sealed code. The memfd's
// mode (0) refuses the reopen; the victim's function is unchanged.
TEST_P(SameUser, ReopenOfTheCodeMemfdIsRefused) {
  const Outcome o = run_attack(GetParam(), Attack::reopen, true);
  WXA_REQUIRE_SCENE(o);
  EXPECT_GT(o.attack.descriptors, 0)
      << "the attacker saw no code descriptor: the test proves nothing. "
      << describe(o);
  EXPECT_EQ(o.attack.reopened_rw, 0) << describe(o);
  EXPECT_EQ(o.attack.reopened_ro, 0) << describe(o);
  EXPECT_EQ(o.attack.reopen_errno, EACCES) << describe(o);
  EXPECT_EQ(o.victim, kIntact) << describe(o);
}

// The host's part: a process that sets PR_SET_DUMPABLE 0 hides
// /proc/<pid>/fd and /proc/<pid>/mem from other processes of its user
// (they lack CAP_SYS_PTRACE), so not even chmod-ing the memfd back first
// opens it. Without it a same-user process owns the inode and may chmod it
// (docs/security.md: what remains).
TEST_P(SameUser, ChmodThenReopenFailsAgainstANonDumpableHost) {
  const Outcome o = run_attack(GetParam(), Attack::chmod_then_reopen, false);
  WXA_REQUIRE_SCENE(o);
  EXPECT_EQ(o.attack.chmodded, 0) << describe(o);
  EXPECT_EQ(o.attack.reopened_rw, 0) << describe(o);
  EXPECT_EQ(o.victim, kIntact) << describe(o);
}

INSTANTIATE_TEST_SUITE_P(Memfd, SameUser,
                         ::testing::Values(Backend::dual_map,
                                           Backend::kernel_write),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return std::string(to_string(info.param));
                         });

// /proc/<pid>/mem writes through any mapping (FOLL_FORCE) but needs ptrace
// attach rights: refused for a non-dumpable host on every backend.
class SameUserMem : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override { WXA_SKIP_IF_UNAVAILABLE(GetParam()); }
};

TEST_P(SameUserMem, ProcMemIsRefusedToANonDumpableHost) {
  const Outcome o = run_attack(GetParam(), Attack::proc_mem, false);
  WXA_REQUIRE_SCENE(o);
  EXPECT_EQ(o.attack.mem_opened, 0) << describe(o);
  EXPECT_EQ(o.attack.mem_written, 0) << describe(o);
  EXPECT_EQ(o.victim, kIntact) << describe(o);
}

// Yama ptrace_scope 1 or more: a sibling has no attach rights, so
// /proc/<pid>/mem is refused even to a dumpable victim.
int yama_scope() {
  const int fd = ::open("/proc/sys/kernel/yama/ptrace_scope", O_RDONLY);
  if (fd < 0) return -1;
  char c = 0;
  const bool ok = ::read(fd, &c, 1) == 1;
  ::close(fd);
  return ok && c >= '0' && c <= '3' ? c - '0' : -1;
}

TEST_P(SameUserMem, ProcMemIsRefusedUnderYama) {
  if (yama_scope() < 1)
    GTEST_SKIP() << "no Yama (or ptrace_scope 0) here: another process of "
                    "the same user may ptrace this one and write its code "
                    "through /proc/<pid>/mem on every backend "
                    "(docs/security.md)";
  const Outcome o = run_attack(GetParam(), Attack::proc_mem, true);
  WXA_REQUIRE_SCENE(o);
  EXPECT_EQ(o.attack.mem_written, 0) << describe(o);
  EXPECT_EQ(o.victim, kIntact) << describe(o);
}

INSTANTIATE_TEST_SUITE_P(All, SameUserMem,
                         ::testing::Values(Backend::protect, Backend::dual_map,
                                           Backend::kernel_write),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return std::string(to_string(info.param));
                         });

// --- In the process itself
// ----------------------------------------------------

// The descriptors of code memfds this process holds.
std::vector<int> code_descriptors() {
  std::vector<int> fds;
  for (int fd = 0; fd < 4096; ++fd) {
    char path[64], link[256];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    const ssize_t n = ::readlink(path, link, sizeof link - 1);
    if (n <= 0) continue;
    link[n] = '\0';
    if (std::strstr(link, "memfd:wxarena")) fds.push_back(fd);
  }
  return fds;
}

class CodeMemfd : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override { WXA_SKIP_IF_UNAVAILABLE(GetParam()); }
};

// Every code memfd is sealed against shrinking and growing (nobody can
// truncate it under running code: SIGBUS) and against further seals, and
// its mode is 0 (no reopen through /proc by anyone but root).
TEST_P(CodeMemfd, IsSealedAndHasNoPermissions) {
  const std::vector<int> before = code_descriptors();
  Options o;
  o.backend = GetParam();
  o.reserve_bytes = std::size_t{16} << 20;
  Result<Arena> arena = Arena::create(o);
  ASSERT_TRUE(arena) << arena.error().to_string();
  Result<Chunk> c = arena->allocate(64);
  ASSERT_TRUE(c) << c.error().to_string();
  ASSERT_TRUE(write_fn(c->rw(), 42));
  ASSERT_TRUE(arena->seal(*c));
  std::vector<int> fds;
  for (int fd : code_descriptors())
    if (std::find(before.begin(), before.end(), fd) == before.end())
      fds.push_back(fd);
  ASSERT_FALSE(fds.empty());
  for (int fd : fds) {
    struct stat st;
    ASSERT_EQ(::fstat(fd, &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0u) << "descriptor " << fd;
    const int seals = ::fcntl(fd, F_GET_SEALS);
    EXPECT_EQ(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL),
              F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
        << "descriptor " << fd << " seals " << seals;
    const auto page = static_cast<off_t>(arena->page_size());
    EXPECT_NE(::ftruncate(fd, st.st_size + page), 0) << "grown";
    EXPECT_NE(::ftruncate(fd, st.st_size - page), 0) << "shrunk";
    EXPECT_NE(::fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), 0) << "write-sealed";
  }
  EXPECT_EQ(c->entry<unsigned()>()(), 42u);
  // The library's own descriptors keep working: patch and publish more.
  Result<Chunk> d = arena->allocate(64);
  ASSERT_TRUE(d) << d.error().to_string();
  ASSERT_TRUE(write_fn(d->rw(), 43));
  ASSERT_TRUE(arena->seal(*d));
  EXPECT_EQ(d->entry<unsigned()>()(), 43u);
  std::byte seven[16];
  ASSERT_TRUE(write_fn(seven, 7));
  ASSERT_TRUE(arena->patch(c->rx(), seven));
  EXPECT_EQ(c->entry<unsigned()>()(), 7u);
  ASSERT_TRUE(arena->release(*d));
  ASSERT_TRUE(arena->trim());
}

INSTANTIATE_TEST_SUITE_P(Memfd, CodeMemfd,
                         ::testing::Values(Backend::dual_map,
                                           Backend::kernel_write),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return std::string(to_string(info.param));
                         });

}  // namespace
}  // namespace wxa::test
