// SPDX-License-Identifier: MIT
// Fork safety with real forks of every flavour (fork(), _Fork(), the raw
// system call, clone() without CLONE_VM) and from a threaded parent: a child
// can call the parent's sealed code but cannot change it, never waits on a
// lock taken before the fork, and the parent's arena stays consistent
// whatever the child does.
//
// The children report through _exit codes only (no gtest assertion runs in a
// child); the parent decodes them. Faults expected in a child are provoked in
// a grandchild, whose death by SIGSEGV the child checks.
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <utility>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "pal/pal.hpp"
#include "support/backends.hpp"
#include "support/maps.hpp"
#include "support/memfd_maps.hpp"
#include "support/native_code.hpp"
#include "wxarena/arena.hpp"

namespace wxa {
namespace {

// `unsigned f()` returning value, then traps over the rest of `out`. No
// gtest assertion: children call it too.
bool write_fn(std::span<std::byte> out, std::uint32_t value) {
  return test::write_return_imm(out, value, out.size()) == out.size();
}

// What a child reports.
enum ChildExit : int {
  kChildOk = 0,
  kChildArenaRefused = 1,  // the arena refused with Errc::wrong_process
  kRwViewMapped = 10,      // the parent's writable view exists in the child
  kMemfdWritable = 11,     // some writable view of the memfd in the child
  kReadSurvived = 12,      // reading the writable view did not fault
  kWriteSurvived = 13,     // writing the writable view did not fault
  kWrongValue = 14,        // the inherited sealed code returned a wrong value
  kRxNotInherited = 15,    // the executable view is not mapped in the child
  kForkFailed = 16,
  kPrivateWriteLost = 17,  // the child's own write did not read back
  kPatchFailed = 18,       // the child could not patch its copy
  kPipe = 19,
  kOtherError = 20,       // the arena failed in the child with another error
  kChildMutated = 21,     // a refused call in the child still changed something
  kChildCallWorked = 22,  // a call in the child was not refused
};

const char* describe(int code) {
  switch (code) {
    case kRwViewMapped:
      return "the parent's writable view is mapped in the child";
    case kMemfdWritable:
      return "the child has a writable view of the arena's memfd";
    case kReadSurvived:
      return "reading the writable view's address did not fault in the child";
    case kWriteSurvived:
      return "writing the writable view's address did not fault in the child";
    case kWrongValue:
      return "sealed code called in the child returned a wrong value";
    case kRxNotInherited:
      return "the executable view is not mapped in the child";
    case kForkFailed:
      return "fork() failed in the child";
    case kPrivateWriteLost:
      return "the child's write to its private copy did not read back";
    case kPatchFailed:
      return "unseal/seal of the child's copy failed";
    case kPipe:
      return "pipe I/O failed in the child";
    case kOtherError:
      return "the arena failed in the child with an error other than "
             "wrong_process";
    case kChildMutated:
      return "a call refused in the child still changed the child's arena";
    case kChildArenaRefused:
      return "the child was refused with wrong_process";
    case kChildCallWorked:
      return "an arena call in the child succeeded instead of being refused "
             "with wrong_process";
    case kChildOk:
      return "the child patched (its copy of) the code";
    case 128 + SIGALRM:
      return "the child hung in an arena call (killed by its alarm)";
    default:
      return "unexpected exit code";
  }
}

int call(const void* rx) {
  return reinterpret_cast<int (*)()>(const_cast<void*>(rx))();
}

// In a child: a dual_map arena refuses every change (its memfd is shared
// with the parent) with exactly Errc::wrong_process.
int refused(const Error& e) {
  return e == Errc::wrong_process ? kChildArenaRefused : kOtherError;
}

// Waits for child `pid`: its exit code, 128 + the signal that killed it,
// or -2.
int wait_code(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -2;
}

// Runs f() in a child and returns its exit code (or 128 + signal).
template <class F>
int in_child(F f) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(f());
  if (pid < 0) return -1;
  return wait_code(pid);
}

// In a child: whether touching `p` (reading, or writing) kills a grandchild
// with SIGSEGV. Async-signal-safe apart from fork.
int touch_faults(void* p, bool write) {
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    struct rlimit none = {0, 0};
    (void)::setrlimit(RLIMIT_CORE, &none);  // no core file for this fault
    (void)::signal(SIGSEGV, SIG_DFL);       // die of it, even under a sanitizer
    volatile auto* b = static_cast<volatile unsigned char*>(p);
    if (write)
      *b = 0xC3;
    else
      (void)*b;
    ::_exit(0);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV ? 1 : 0;
}

// Whether [p, p + bytes) is mapped at all in this process (mincore fails
// with ENOMEM on unmapped pages).
bool mapped(const void* p, std::size_t bytes) {
  unsigned char vec[64];
  return ::mincore(const_cast<void*>(p), bytes, vec) == 0 || errno != ENOMEM;
}

// Whether madvise(MADV_DONTFORK) keeps a shared mapping out of fork()
// children here. Linux does; qemu-user (7.2) accepts the advice from its
// guest and ignores it, so there the child inherits every view.
bool dontfork_applies() {
  static const bool applies = [] {
    const auto ps = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    void* p = ::mmap(nullptr, ps, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return true;  // nothing to learn; let the test say
    const bool result = ::madvise(p, ps, MADV_DONTFORK) != 0 ||
                        in_child([&] { return mapped(p, ps) ? 1 : 0; }) == 0;
    if (::munmap(p, ps) != 0) std::abort();
    return result;
  }();
  return applies;
}

// The parent's arena at fork time: one sealed function, one writable chunk
// with known bytes.
struct ForkScene {
  Result<Arena> arena = Error(Errc::invalid_argument);
  Chunk sealed, writable;
  std::vector<std::byte> writable_bytes;  // what the parent wrote
  std::vector<RunInfo> runs;              // the state map at fork time
};

void make_scene(Backend backend, ForkScene& s) {
  Options o;
  o.backend = backend;
  o.reserve_bytes = std::size_t{16} << 20;
  s.arena = Arena::create(o);
  ASSERT_TRUE(s.arena) << s.arena.error().to_string();
  Arena& arena = *s.arena;
  const std::size_t ps = arena.page_size();
  Result<Chunk> a = arena.allocate(ps);
  ASSERT_TRUE(a) << a.error().to_string();
  ASSERT_TRUE(write_fn(a->rw(), 42));
  ASSERT_TRUE(arena.seal(*a));
  s.sealed = *a;
  Result<Chunk> b = arena.allocate(2 * ps);
  ASSERT_TRUE(b) << b.error().to_string();
  for (std::size_t i = 0; i < b->size(); ++i)
    b->rw()[i] = static_cast<std::byte>(i * 7 + 1);
  ASSERT_TRUE(write_fn(b->rw().first(16), 7));
  s.writable = *b;
  s.writable_bytes.assign(b->rw().begin(), b->rw().end());
  s.runs = arena.runs();
  ASSERT_EQ(call(s.sealed.rx()), 42);
}

// The parent after the child exited: its arena is as it was, the writable
// chunk holds what the parent wrote, it seals and runs, and the audit passes.
void check_parent_after(ForkScene& s) {
  Arena& arena = *s.arena;
  ASSERT_EQ(s.writable.rw().size(), s.writable_bytes.size());
  EXPECT_EQ(std::memcmp(s.writable.rw().data(), s.writable_bytes.data(),
                        s.writable_bytes.size()),
            0)
      << "the child changed the parent's writable chunk";
  // The sealed code's bytes, read through the executable view.
  std::vector<std::byte> expect(s.sealed.size());
  ASSERT_TRUE(write_fn(expect, 42));
  ASSERT_EQ(std::memcmp(s.sealed.rx(), expect.data(), expect.size()), 0)
      << "the child changed the parent's sealed code";
  EXPECT_EQ(call(s.sealed.rx()), 42);
  const std::vector<RunInfo> now = arena.runs();
  ASSERT_EQ(now.size(), s.runs.size());
  for (std::size_t i = 0; i < now.size(); ++i) {
    EXPECT_EQ(now[i].rx, s.runs[i].rx);
    EXPECT_EQ(now[i].bytes, s.runs[i].bytes);
    EXPECT_EQ(now[i].state, s.runs[i].state);
  }
  ASSERT_TRUE(arena.seal(s.writable));
  EXPECT_EQ(call(s.writable.rx()), 7);
  EXPECT_TRUE(test::audit_arena(arena));
}

TEST(ForkDualMap, ChildCannotReachTheWritableViewButRunsSealedCode) {
  if (!dontfork_applies())
    GTEST_SKIP() << "madvise(MADV_DONTFORK) is accepted but has no effect "
                    "here (qemu-user ignores the advice), so a fork() child "
                    "inherits the writable view: invariant 6 holds only on "
                    "a real kernel";
  ForkScene s;
  WXA_SKIP_IF_UNAVAILABLE(Backend::dual_map);
  ASSERT_NO_FATAL_FAILURE(make_scene(Backend::dual_map, s));
  const std::uint64_t inode = test::arena_memfd_inode(*s.arena);
  ASSERT_NE(inode, 0u);
  ASSERT_TRUE(mapped(s.writable.rw().data(), s.writable.size()));

  const int code = in_child([&]() -> int {
    void* rw = s.writable.rw().data();
    // MADV_DONTFORK: the writable view was not copied into the child.
    if (mapped(rw, s.writable.size())) return kRwViewMapped;
    if (test::memfd_view_with(inode, 0, ~std::uint64_t{0}, 'w'))
      return kMemfdWritable;
    const int r = touch_faults(rw, false);
    if (r < 0) return kForkFailed;
    if (r == 0) return kReadSurvived;
    const int w = touch_faults(rw, true);
    if (w < 0) return kForkFailed;
    if (w == 0) return kWriteSurvived;
    // The executable view is inherited: the parent's code still runs.
    test::MapLine l;
    if (!test::map_line_at(s.sealed.rx(), l) || !l.executable() ||
        l.inode != inode)
      return kRxNotInherited;
    if (call(s.sealed.rx()) != 42) return kWrongValue;
    return kChildOk;
  });
  ASSERT_EQ(code, kChildOk) << describe(code) << " (child exit " << code << ")";
  check_parent_after(s);
}

// The child goes on using the arena it inherited: it unseals the parent's
// sealed function, patches it and seals it again. Whatever that does in the
// child (or whether the library refuses it there), it must not change the
// parent's code: the parent's function is executable, and strict W^X says
// no writable view of it may exist anywhere.
TEST(ForkDualMap, ChildPatchingThroughTheArenaLeavesParentCodeAlone) {
  ForkScene s;
  WXA_SKIP_IF_UNAVAILABLE(Backend::dual_map);
  ASSERT_NO_FATAL_FAILURE(make_scene(Backend::dual_map, s));
  const int code = in_child([&]() -> int {
    Arena& arena = *s.arena;
    Result<Chunk> c = arena.unseal(s.sealed.rx());
    if (!c) {
      // Refused: and nothing changed, nothing else works either.
      if (c.error() != Errc::wrong_process) return kOtherError;
      // Not even find(): its lock may have been held at the fork.
      if (Result<ChunkInfo> info = arena.find(s.sealed.rx());
          info || info.error() != Errc::wrong_process)
        return info ? kChildMutated : kOtherError;
      if (call(s.sealed.rx()) != 42) return kWrongValue;
      Result<Chunk> fresh = arena.allocate(64);
      if (fresh) return kChildMutated;
      if (fresh.error() != Errc::wrong_process) return kOtherError;
      Result<void> gone = arena.release(s.sealed.rx());
      if (gone) return kChildMutated;
      return refused(gone.error());
    }
    if (!write_fn(c->rw(), 99)) return kPatchFailed;
    if (Result<void> r = arena.seal(*c); !r) return refused(r.error());
    return call(s.sealed.rx()) == 99 ? kChildOk : kPatchFailed;
  });
  // Either the child worked on a private copy or (the library's choice)
  // it was refused with wrong_process; the parent is unchanged either way.
  ASSERT_TRUE(code == kChildOk || code == kChildArenaRefused)
      << describe(code) << " (child exit " << code << ")";
  check_parent_after(s);
}

// The child trims the arena it inherited (gives free memory back) after the
// parent has put new code on pages that were free at fork time. The parent's
// new code must survive.
TEST(ForkDualMap, ChildTrimmingTheArenaLeavesParentCodeAlone) {
  ForkScene s;
  WXA_SKIP_IF_UNAVAILABLE(Backend::dual_map);
  ASSERT_NO_FATAL_FAILURE(make_scene(Backend::dual_map, s));
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    char byte = 0;
    if (::read(go[0], &byte, 1) != 1) ::_exit(kPipe);
    Result<void> r = s.arena->trim();
    ::_exit(r ? kChildOk : refused(r.error()));
  }
  ::close(go[0]);
  // After the fork, on pages that were free (open) then.
  Result<Chunk> c = s.arena->allocate(s.arena->page_size());
  ASSERT_TRUE(c) << c.error().to_string();
  ASSERT_TRUE(write_fn(c->rw(), 77));
  ASSERT_TRUE(s.arena->seal(*c));
  s.runs = s.arena->runs();
  ASSERT_EQ(::write(go[1], "x", 1), 1);
  ::close(go[1]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  const int code = WEXITSTATUS(status);
  ASSERT_TRUE(code == kChildOk || code == kChildArenaRefused)
      << describe(code) << " (child exit " << code << ")";

  std::vector<std::byte> expect(c->size());
  ASSERT_TRUE(write_fn(expect, 77));
  ASSERT_EQ(std::memcmp(c->rx(), expect.data(), expect.size()), 0)
      << "the child's trim() discarded the parent's new code";
  EXPECT_EQ(call(c->rx()), 77);
  check_parent_after(s);
}

// A descriptor of the code's memfd open in this process, if any: the path
// /proc/self/fd/N links to ("/memfd:wxarena..."), or "" when none does.
std::string code_descriptor() {
  for (int fd = 0; fd < 4096; ++fd) {
    char path[64], target[256];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    const ssize_t n = ::readlink(path, target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    if (std::strstr(target, "memfd:wxarena")) return target;
  }
  return "";
}

// The memfd-backed backends: a fork() child inherits no descriptor of the
// parent's code (it is closed in the child), so it cannot write the code
// with pwrite or map it writable; the code view it inherits is read+execute
// and a store into it faults; and its arena refuses every change with
// wrong_process. The parent's code is untouched.
class ForkMemfd : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override { WXA_SKIP_IF_UNAVAILABLE(GetParam()); }
};

TEST_P(ForkMemfd, ChildHoldsNoDescriptorAndIsRefused) {
  ForkScene s;
  ASSERT_NO_FATAL_FAILURE(make_scene(GetParam(), s));
  ASSERT_NE(code_descriptor(), "") << "the parent holds the memfd";
  const int code = in_child([&]() -> int {
    if (!code_descriptor().empty()) return kMemfdWritable;
    for (const test::Mapping& m : test::read_maps())
      if (m.write && m.name.find("memfd:wxarena") != std::string::npos &&
          GetParam() == Backend::kernel_write)
        return kMemfdWritable;
    if (touch_faults(const_cast<void*>(s.sealed.rx()), true) != 1)
      return kWriteSurvived;
    if (call(s.sealed.rx()) != 42) return kWrongValue;
    Arena& arena = *s.arena;
    const std::byte ret[1] = {std::byte{0xC3}};
    if (Result<void> r = arena.patch(s.sealed.rx(), ret);
        r || r.error() != Errc::wrong_process)
      return r ? kChildMutated : kOtherError;
    if (Result<Chunk> r = arena.unseal(s.sealed.rx());
        r || r.error() != Errc::wrong_process)
      return r ? kChildMutated : kOtherError;
    if (Result<Chunk> r = arena.allocate(64);
        r || r.error() != Errc::wrong_process)
      return r ? kChildMutated : kOtherError;
    if (Result<void> r = arena.seal(s.writable);
        r || r.error() != Errc::wrong_process)
      return r ? kChildMutated : kOtherError;
    if (Result<void> r = arena.trim(); r || r.error() != Errc::wrong_process)
      return r ? kChildMutated : kOtherError;
    if (call(s.sealed.rx()) != 42) return kWrongValue;
    return kChildArenaRefused;
  });
  ASSERT_EQ(code, kChildArenaRefused)
      << describe(code) << " (child exit " << code << ")";
  EXPECT_NE(code_descriptor(), "") << "the parent's descriptor stays open";
  check_parent_after(s);
}

INSTANTIATE_TEST_SUITE_P(Backends, ForkMemfd,
                         ::testing::Values(Backend::dual_map,
                                           Backend::kernel_write),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return std::string(to_string(info.param));
                         });

// protect: the child's pages are private copies, copied on write. Its
// arena refuses every call all the same (its lock may have been held by a
// thread of the parent at the fork); the memory it inherited is its own.
TEST(ForkProtect, ChildWritesItsPrivateCopyOnlyAndIsRefused) {
  WXA_SKIP_IF_UNAVAILABLE(Backend::protect);
  ForkScene s;
  ASSERT_NO_FATAL_FAILURE(make_scene(Backend::protect, s));
  ASSERT_EQ(static_cast<const void*>(s.writable.rw().data()), s.writable.rx());
  const int code = in_child([&]() -> int {
    // The writable chunk is a private copy-on-write page in the child.
    std::span<std::byte> rw = s.writable.rw();
    for (std::byte& b : rw) b = std::byte{0x5A};
    for (std::byte b : rw)
      if (b != std::byte{0x5A}) return kPrivateWriteLost;
    if (call(s.sealed.rx()) != 42) return kWrongValue;
    Arena& arena = *s.arena;
    if (Result<Chunk> c = arena.unseal(s.sealed.rx());
        c || c.error() != Errc::wrong_process)
      return c ? kChildCallWorked : kOtherError;
    if (Result<void> r = arena.seal(s.writable);
        r || r.error() != Errc::wrong_process)
      return r ? kChildCallWorked : kOtherError;
    return kChildArenaRefused;
  });
  ASSERT_EQ(code, kChildArenaRefused)
      << describe(code) << " (child exit " << code << ")";
  check_parent_after(s);
}

// --- Every fork flavour ------------------------------------------------------
//
// glibc runs pthread_atfork handlers in the child of fork() only: a child
// made by _Fork(), by the fork system call itself, or by clone() without
// CLONE_VM runs none. The library must see such a child as another process
// all the same, on every call.

enum class Flavour { fork, underscore_fork, raw_syscall, clone_no_vm };

const char* flavour_name(Flavour f) {
  switch (f) {
    case Flavour::fork:
      return "fork";
    case Flavour::underscore_fork:
      return "_Fork";
    case Flavour::raw_syscall:
      return "syscall_fork";
    case Flavour::clone_no_vm:
      return "clone_without_vm";
  }
  return "?";
}

struct CloneArg {
  int (*run)(void*);
  void* ctx;
};

// Runs f() in a child made the way `flavour` says and returns its exit code
// (or 128 + signal, or -1 when the child could not be made).
template <class F>
int in_child_made_by(Flavour flavour, F f) {
  std::fflush(nullptr);
  auto run = [](void* p) -> int { return (*static_cast<F*>(p))(); };
  pid_t pid = -1;
  switch (flavour) {
    case Flavour::fork:
      pid = ::fork();
      break;
    case Flavour::underscore_fork:
      pid = ::_Fork();  // glibc 2.34: no atfork handler runs
      break;
    case Flavour::raw_syscall:
#ifdef SYS_fork
      pid = static_cast<pid_t>(::syscall(SYS_fork));
#else  // AArch64 has clone only: the same call fork() makes, minus glibc
      pid = static_cast<pid_t>(::syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0));
#endif
      break;
    case Flavour::clone_no_vm: {
      // A copy of the address space (no CLONE_VM): the child runs `run` on
      // its own copy of this stack and exits with what it returns.
      static constexpr std::size_t kStack = 256 * 1024;
      std::vector<std::byte> stack(kStack);
      pid = ::clone(run, stack.data() + kStack, SIGCHLD, &f);
      break;
    }
  }
  if (pid == 0) ::_exit(run(&f));
  if (pid < 0) return -1;
  return wait_code(pid);
}

// In a child: every call of the arena is refused with wrong_process and
// changes nothing; the inherited code still runs. The attack of the issue:
// patch the parent's function to return 7.
int attack_from_child(ForkScene& s) {
  ::alarm(30);  // a hang is a failure too (128 + SIGALRM)
  Arena& arena = *s.arena;
  auto refused_ok = [](const Error& e) {
    return e == Errc::wrong_process ? kChildArenaRefused : kOtherError;
  };
  std::byte seven[16];
  if (!write_fn(seven, 7)) return kPatchFailed;
  if (Result<void> r = arena.patch(s.sealed.rx(), seven); r)
    return kChildCallWorked;
  else if (refused_ok(r.error()) != kChildArenaRefused)
    return kOtherError;
  if (Result<Chunk> r = arena.allocate(64); r)
    return kChildCallWorked;
  else if (r.error() != Errc::wrong_process)
    return kOtherError;
  if (Result<void> r = arena.seal(s.writable); r)
    return kChildCallWorked;
  else if (r.error() != Errc::wrong_process)
    return kOtherError;
  if (Result<Chunk> r = arena.unseal(s.sealed.rx()); r)
    return kChildCallWorked;
  else if (r.error() != Errc::wrong_process)
    return kOtherError;
  if (Result<void> r = arena.release(s.sealed.rx()); r)
    return kChildCallWorked;
  else if (r.error() != Errc::wrong_process)
    return kOtherError;
  if (Result<void> r = arena.trim(); r)
    return kChildCallWorked;
  else if (r.error() != Errc::wrong_process)
    return kOtherError;
  {
    Batch batch(arena);
    batch.patch(s.sealed.rx(), seven);
    if (Result<CommitReport> r = batch.commit(); r)
      return kChildCallWorked;
    else if (r.error() != Errc::wrong_process)
      return kOtherError;
    batch.clear();
  }
  if (call(s.sealed.rx()) != 42) return kWrongValue;
  // Dropping the arena in the child gives back the child's mappings and
  // descriptors only: no hole punched in, nothing written to the parent's
  // code (the parent checks).
  { Arena gone = std::move(*s.arena); }
  return kChildArenaRefused;
}

// Whether madvise(MADV_WIPEONFORK) gives children zeros here. Linux 4.14
// and later do; qemu-user (7.2) accepts the advice and ignores it.
bool wipeonfork_applies() {
  static const bool applies = [] {
    const auto ps = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    void* p = ::mmap(nullptr, ps, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return true;  // nothing to learn; let the test say
    *static_cast<volatile int*>(p) = 1;
    const bool result = ::madvise(p, ps, 18 /* MADV_WIPEONFORK */) == 0 &&
                        in_child([&] {
                          return *static_cast<volatile int*>(p) == 0 ? 0 : 1;
                        }) == 0;
    if (::munmap(p, ps) != 0) std::abort();
    return result;
  }();
  return applies;
}

// The platform layer's process token: a child made by any flavour reads
// none (its page was wiped), then makes one above its parent's.
class ProcessToken : public ::testing::TestWithParam<Flavour> {};

TEST_P(ProcessToken, EveryChildSeesAnotherProcess) {
  if (!wipeonfork_applies())
    GTEST_SKIP() << "madvise(MADV_WIPEONFORK) has no effect here (qemu-user "
                    "ignores it): only children of glibc's fork() are told "
                    "apart, by its atfork handler";
  SyscallCounts n;
  Result<std::uint64_t> mine = detail::process_token(n);
  ASSERT_TRUE(mine) << mine.error().to_string();
  ASSERT_NE(*mine, 0u);
  EXPECT_EQ(detail::current_process_token(), *mine);
  const std::uint64_t parent = *mine;
  const int code = in_child_made_by(GetParam(), [&]() -> int {
    if (detail::current_process_token() != 0) return 1;  // not wiped
    SyscallCounts m;
    Result<std::uint64_t> child = detail::process_token(m);
    if (!child || *child <= parent) return 2;
    if (detail::current_process_token() != *child) return 3;
    if (m.mmap != 0 || m.madvise != 0) return 4;  // the page is inherited
    return 0;
  });
  EXPECT_EQ(code, 0) << "1: the child reads its parent's token; 2: it made "
                        "none above its parent's; 3: it does not keep it; "
                        "4: it mapped a page again";
  EXPECT_EQ(detail::current_process_token(), parent);
  SyscallCounts again;
  ASSERT_TRUE(detail::process_token(again));
  EXPECT_EQ(again.mmap + again.madvise + again.munmap, 0u)
      << "a system call after the first use";
}

INSTANTIATE_TEST_SUITE_P(Flavours, ProcessToken,
                         ::testing::Values(Flavour::fork,
                                           Flavour::underscore_fork,
                                           Flavour::raw_syscall,
                                           Flavour::clone_no_vm),
                         [](const ::testing::TestParamInfo<Flavour>& info) {
                           return std::string(flavour_name(info.param));
                         });

class ForkFlavour
    : public ::testing::TestWithParam<std::tuple<Backend, Flavour>> {
 protected:
  void SetUp() override { WXA_SKIP_IF_UNAVAILABLE(std::get<0>(GetParam())); }
};

// Every call in the child is refused with wrong_process, whatever made the
// child, on every backend; the parent's function still returns 42.
TEST_P(ForkFlavour, ChildIsRefusedAndParentCodeUnchanged) {
  const auto [backend, flavour] = GetParam();
  if (flavour != Flavour::fork && !wipeonfork_applies())
    GTEST_SKIP() << "madvise(MADV_WIPEONFORK) has no effect here (qemu-user "
                    "ignores it): only children of glibc's fork() are told "
                    "apart, by its atfork handler";
  ForkScene s;
  ASSERT_NO_FATAL_FAILURE(make_scene(backend, s));
  const int code =
      in_child_made_by(flavour, [&]() -> int { return attack_from_child(s); });
  ASSERT_GE(code, 0) << "cannot make a child with " << flavour_name(flavour)
                     << ": " << std::strerror(errno);
  EXPECT_EQ(code, kChildArenaRefused)
      << describe(code) << " (child exit " << code << ", made by "
      << flavour_name(flavour) << ")";
  check_parent_after(s);
}

// What remains: Linux has no close-on-fork. glibc's fork() runs the
// library's atfork handler, which closes the code memfds in the child; a
// child made any other way keeps them, and can write the parent's code
// through them with pwrite (shown here by writing the bytes that are
// there already). protect holds no descriptor: its children have private
// copies. docs/security.md states this; the host's part is to close
// descriptors in such children or not to make them.
TEST_P(ForkFlavour, WhatAnInheritedDescriptorAllows) {
  const auto [backend, flavour] = GetParam();
  ForkScene s;
  ASSERT_NO_FATAL_FAILURE(make_scene(backend, s));
  std::vector<std::byte> same(s.sealed.size());
  ASSERT_TRUE(write_fn(same, 42));
  const int code = in_child_made_by(flavour, [&]() -> int {
    int held = 0, wrote = 0;
    for (int fd = 0; fd < 4096; ++fd) {
      char path[64], target[256];
      std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
      const ssize_t n = ::readlink(path, target, sizeof target - 1);
      if (n <= 0) continue;
      target[n] = '\0';
      if (!std::strstr(target, "memfd:wxarena")) continue;
      ++held;
      // The sealed function's own bytes, written over themselves wherever
      // they are in this file: a write that changes nothing, but a write.
      struct stat st;
      if (::fstat(fd, &st) != 0) continue;
      for (off_t at = 0; at + 16 <= st.st_size;
           at += static_cast<off_t>(::sysconf(_SC_PAGESIZE))) {
        std::byte now[16];
        if (::pread(fd, now, sizeof now, at) != 16) break;
        if (std::memcmp(now, same.data(), 16) != 0) continue;
        if (::pwrite(fd, now, sizeof now, at) == 16) wrote = 1;
      }
    }
    return (held > 0 ? 1 : 0) | (wrote ? 2 : 0);
  });
  const bool memfd = backend != Backend::protect;
  // Where the host's probe of pwrite into executable memfds fails (a
  // filter refusing pwrite: onlydual; or qemu-user, whose stale
  // translations fail the probe while pwrite works), holding it is what is
  // checked.
  const bool probe_writes = test::host().shared_write;
  const int wrote = probe_writes ? 2 : 0;
  const int expect = !memfd ? 0 : flavour == Flavour::fork ? 0 : 1 | wrote;
  EXPECT_EQ(probe_writes ? code : code & 1, expect)
      << "bit 0: the child holds a code descriptor; bit 1: it wrote through "
         "it (made by "
      << flavour_name(flavour) << ")";
  check_parent_after(s);
}

INSTANTIATE_TEST_SUITE_P(
    All, ForkFlavour,
    ::testing::Combine(::testing::Values(Backend::protect, Backend::dual_map,
                                         Backend::kernel_write),
                       ::testing::Values(Flavour::fork,
                                         Flavour::underscore_fork,
                                         Flavour::raw_syscall,
                                         Flavour::clone_no_vm)),
    [](const ::testing::TestParamInfo<std::tuple<Backend, Flavour>>& info) {
      return std::string(to_string(std::get<0>(info.param))) + "_" +
             flavour_name(std::get<1>(info.param));
    });

// --- A fork from a threaded parent
// --------------------------------------------
//
// Two threads publish into the arena while the main thread forks: a child
// may be made while one of them holds the arena's lock, and that thread does
// not exist in the child. Every child must be refused at once, never wait.

class ForkThreaded : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override { WXA_SKIP_IF_UNAVAILABLE(GetParam()); }
};

TEST_P(ForkThreaded, ChildrenOfAPublishingParentAreRefusedNotHung) {
  Options o;
  o.backend = GetParam();
  o.reserve_bytes = std::size_t{16} << 20;
  Result<Arena> made = Arena::create(o);
  ASSERT_TRUE(made) << made.error().to_string();
  Arena& arena = *made;
  Result<Chunk> target = arena.allocate(64);
  ASSERT_TRUE(target) << target.error().to_string();
  ASSERT_TRUE(write_fn(target->rw(), 42));
  ASSERT_TRUE(arena.seal(*target));
  const void* fn = target->rx();

  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  auto publish = [&](std::uint32_t value) {
    while (!stop.load(std::memory_order_relaxed)) {
      Result<Chunk> c = arena.allocate(64);
      if (!c || !write_fn(c->rw(), value) || !arena.seal(*c) ||
          call(c->rx()) != static_cast<int>(value) || !arena.release(*c)) {
        failures.fetch_add(1);
        return;
      }
    }
  };
  std::thread a(publish, 1u), b(publish, 2u);

  // At most kLive children at once: under an emulator (qemu-user) each
  // child is a copy of the emulator too, tens of MiB it writes, and a
  // hundred at once have exhausted the memory of a loaded host.
  constexpr int kForks = 100;
  constexpr std::size_t kLive = 8;
  std::vector<pid_t> children;
  std::map<int, int> outcomes;  // child exit code -> how many
  std::size_t reaped = 0;
  const auto reap = [&] { ++outcomes[wait_code(children[reaped++])]; };
  std::fflush(nullptr);
  for (int i = 0; i < kForks; ++i) {
    if (children.size() - reaped >= kLive) reap();
    const pid_t pid = ::fork();
    if (pid == 0) {
      // A hung child dies of its alarm: the parent sees 128 + SIGALRM.
      ::alarm(20);
      std::byte seven[16];
      (void)write_fn(seven, 7);
      int code = kChildArenaRefused;
      if (Result<Chunk> r = arena.allocate(64); r)
        code = kChildCallWorked;
      else if (r.error() != Errc::wrong_process)
        code = kOtherError;
      if (Result<void> r = arena.patch(fn, seven); r)
        code = kChildCallWorked;
      else if (r.error() != Errc::wrong_process)
        code = kOtherError;
      { Arena gone = std::move(arena); }  // nor may dropping it wait
      ::_exit(code);
    }
    if (pid < 0) break;
    children.push_back(pid);
  }
  stop.store(true);
  a.join();
  b.join();
  EXPECT_EQ(failures.load(), 0) << "a publishing thread failed";
  while (reaped < children.size()) reap();
  ASSERT_EQ(children.size(), std::size_t{kForks}) << std::strerror(errno);
  std::string seen;
  for (const auto& [code, count] : outcomes)
    seen += "\n  " + std::to_string(count) + " x " + describe(code) + " (" +
            std::to_string(code) + ")";
  EXPECT_EQ(outcomes[kChildArenaRefused], kForks)
      << "children of a publishing parent:" << seen;
  EXPECT_EQ(call(fn), 42);
  EXPECT_TRUE(test::audit_arena(arena));
}

INSTANTIATE_TEST_SUITE_P(Backends, ForkThreaded,
                         ::testing::Values(Backend::protect, Backend::dual_map,
                                           Backend::kernel_write),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return std::string(to_string(info.param));
                         });

}  // namespace
}  // namespace wxa
