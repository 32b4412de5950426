// SPDX-License-Identifier: MIT
// wxa-audit against real processes: one that maps W+X on purpose (only here,
// outside the W^X-filtered suite), one with a wxarena arena, and saved maps.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "pal/pal.hpp"
#include "support/process.hpp"
#include "wxarena/wxarena.hpp"

namespace {

// wxa-audit is a program of this machine, started by a shell: impossible
// under an emulator without binfmt_misc (and there, another process's
// /proc/<pid>/maps would show the emulator's host mappings anyway).
#define WXA_SKIP_IF_NO_EXEC()                                     \
  do {                                                            \
    if (const char* why = ::wxa::test::exec_unavailable_reason()) \
      GTEST_SKIP() << why;                                        \
  } while (0)

struct Outcome {
  int status = -1;
  std::string out;
};

Outcome run_audit(const std::string& args) {
  const char* tool = std::getenv("WXA_AUDIT");
  Outcome o;
  if (!tool) return o;
  const std::string cmd = std::string(tool) + " " + args;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return o;
  std::array<char, 512> buf;
  while (std::fgets(buf.data(), buf.size(), p)) o.out += buf.data();
  const int st = ::pclose(p);
  o.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return o;
}

// A child that sets up its mappings with `setup`, says so through a pipe,
// and waits to be killed.
template <class Setup>
pid_t hold(Setup setup) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    const char ok = setup() ? '1' : '0';
    if (::write(fds[1], &ok, 1) != 1) ::_exit(3);
    for (;;) ::pause();
  }
  ::close(fds[1]);
  char c = 0;
  const bool ready = pid > 0 && ::read(fds[0], &c, 1) == 1 && c == '1';
  ::close(fds[0]);
  if (!ready && pid > 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return -1;
  }
  return pid;
}

void reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

TEST(WxaAudit, FindsAWritableExecutableMapping) {
  WXA_SKIP_IF_NO_EXEC();
  ASSERT_NE(std::getenv("WXA_AUDIT"), nullptr) << "WXA_AUDIT names the tool";
  const pid_t pid = hold([] {
    // The W+X mapping this tool exists to find; made in this test only.
    void* p = ::mmap(nullptr, 1, PROT_READ | PROT_WRITE | PROT_EXEC,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p != MAP_FAILED;
  });
  ASSERT_GT(pid, 0) << "could not map W+X here (a W^X policy is in force?)";
  const Outcome o = run_audit(std::to_string(pid));
  reap(pid);
  EXPECT_EQ(o.status, 1) << o.out;
  EXPECT_NE(o.out.find("writable+executable mapping"), std::string::npos)
      << o.out;
  EXPECT_NE(o.out.find("rwxp"), std::string::npos) << o.out;
}

class WxaAuditArena : public ::testing::TestWithParam<wxa::Backend> {};

TEST_P(WxaAuditArena, ShowsArenaRegionsAndPassesWithoutWx) {
  WXA_SKIP_IF_NO_EXEC();
  const wxa::Backend backend = GetParam();
  const bool named = backend != wxa::Backend::protect ||
                     wxa::detail::system_pal().capabilities().vma_naming;
  const pid_t pid = hold([backend] {
    wxa::Options options;
    options.backend = backend;
    options.reserve_bytes = 8 << 20;
    static wxa::Result<wxa::Arena> arena = wxa::Arena::create(options);
    if (!arena) return false;
    wxa::Result<wxa::Chunk> c = arena->allocate(100);
    if (!c) return false;
    c->rw()[0] = std::byte{0xC3};
    return bool(arena->seal(*c));
  });
  ASSERT_GT(pid, 0);
  const Outcome o = run_audit(std::to_string(pid));
  reap(pid);
  EXPECT_EQ(o.status, 0) << o.out;
  EXPECT_NE(o.out.find("W^X holds"), std::string::npos) << o.out;
  if (!named)
    GTEST_SKIP() << "this kernel cannot name anonymous mappings (no "
                    "CONFIG_ANON_VMA_NAME)";
  const char* name = backend == wxa::Backend::kernel_write
                         ? "/memfd:wxarena-code"
                     : backend == wxa::Backend::dual_map ? "/memfd:wxarena"
                                                         : "[anon:wxarena]";
  EXPECT_NE(o.out.find(name), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("executable"), std::string::npos) << o.out;
}

// The example JIT (wxa-jit-expr --wait) audited while its code is live:
// no W+X, and its arena's regions where the kernel names them.
TEST_P(WxaAuditArena, PassesOnTheExampleJit) {
  WXA_SKIP_IF_NO_EXEC();
  const char* jit = std::getenv("WXA_JIT_EXPR");
  if (!jit) GTEST_SKIP() << "the example JIT is not built (no libxbyak-dev)";
  const wxa::Backend backend = GetParam();
  const bool named = backend != wxa::Backend::protect ||
                     wxa::detail::system_pal().capabilities().vma_naming;
  const std::string backend_name(wxa::to_string(backend));
  int in[2], out[2];
  ASSERT_EQ(::pipe2(in, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::dup2(in[0], STDIN_FILENO) < 0 || ::dup2(out[1], STDOUT_FILENO) < 0)
      ::_exit(126);
    ::execl(jit, jit, "--functions", "4096", "--backend", backend_name.c_str(),
            "--wait", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  // Its report, up to the line saying that it waits.
  FILE* report = ::fdopen(out[0], "r");
  ASSERT_NE(report, nullptr);
  std::string text;
  bool waiting = false;
  std::array<char, 512> line;
  while (!waiting && std::fgets(line.data(), line.size(), report)) {
    text += line.data();
    waiting = std::strstr(line.data(),
                          " waits for the end of its standard "
                          "input") != nullptr;
  }
  const Outcome o = waiting ? run_audit(std::to_string(pid)) : Outcome{};
  ::close(in[1]);  // its input ends: it exits
  while (std::fgets(line.data(), line.size(), report)) text += line.data();
  std::fclose(report);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(waiting) << text;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << text;
  EXPECT_NE(text.find("writable+executable mappings in this process: 0"),
            std::string::npos)
      << text;
  EXPECT_EQ(o.status, 0) << o.out;
  EXPECT_NE(o.out.find("W^X holds"), std::string::npos) << o.out;
  if (!named)
    GTEST_SKIP() << "this kernel cannot name anonymous mappings (no "
                    "CONFIG_ANON_VMA_NAME)";
  const char* name = backend == wxa::Backend::kernel_write
                         ? "/memfd:wxarena-code"
                     : backend == wxa::Backend::dual_map ? "/memfd:wxarena"
                                                         : "[anon:wxarena]";
  EXPECT_NE(o.out.find(name), std::string::npos) << o.out;
}

INSTANTIATE_TEST_SUITE_P(Backends, WxaAuditArena,
                         ::testing::Values(wxa::Backend::protect,
                                           wxa::Backend::dual_map,
                                           wxa::Backend::kernel_write),
                         [](const auto& info) {
                           return std::string(wxa::to_string(info.param));
                         });

TEST(WxaAudit, ReadsASavedMapsFile) {
  WXA_SKIP_IF_NO_EXEC();
  const std::string path = ::testing::TempDir() + "wxa_audit_maps.txt";
  {
    std::ofstream f(path);
    f << "7f0000000000-7f0000001000 r-xp 00000000 00:00 0                  "
         "[anon:wxarena]\n"
         "7f0000001000-7f0000003000 rw-p 00000000 00:00 0                  "
         "[anon:wxarena]\n"
         "7f1000000000-7f1000001000 r-xs 00000000 00:01 42                 "
         "/memfd:wxarena (deleted)\n";
  }
  Outcome o = run_audit("--maps " + path);
  EXPECT_EQ(o.status, 0) << o.out;
  EXPECT_NE(o.out.find("/memfd:wxarena (deleted)"), std::string::npos) << o.out;
  {
    std::ofstream f(path, std::ios::app);
    f << "7f2000000000-7f2000001000 rwxp 00000000 00:00 0 \n";
  }
  o = run_audit("--maps " + path);
  EXPECT_EQ(o.status, 1) << o.out;
  EXPECT_EQ(run_audit("--maps /nonexistent/maps").status, 2);
  EXPECT_EQ(run_audit("--bogus").status, 2);
}

}  // namespace
