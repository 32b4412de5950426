// SPDX-License-Identifier: MIT
// The W^X oracle judged: wxa-seccomp-run must make the kernel refuse exactly
// what each policy forbids (rwx_probe reports what was allowed).

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "support/process.hpp"

namespace wxa::test {
namespace {

// A path from the environment (set by tests/meson.build), else where the
// build directory puts it next to this binary, else "".
std::string helper_path(const char* env_name, const char* relative) {
  std::string path = env_or_empty(env_name);
  if (path.empty()) {
    const std::string self = self_executable();
    path = self.substr(0, self.rfind('/') + 1) + relative;
  }
  return ::access(path.c_str(), X_OK) == 0 ? path : std::string();
}

std::string seccomp_run() {
  return helper_path("WXA_SECCOMP_RUN", "../tools/wxa-seccomp-run");
}
std::string rwx_probe() { return helper_path("WXA_RWX_PROBE", "rwx_probe"); }

// Why the oracle cannot be judged here, or nullptr. Both helpers are
// programs started with execve(); under an emulator without binfmt_misc
// (qemu-user) none can start, and where libseccomp is missing for the
// target (the AArch64 cross build) wxa-seccomp-run is not built at all.
const char* helpers_missing() {
  if (const char* why = exec_unavailable_reason()) return why;
  if (seccomp_run().empty())
    return "wxa-seccomp-run was not built (-Dseccomp disabled, or no "
           "libseccomp for the target) or WXA_SECCOMP_RUN names no program";
  if (rwx_probe().empty())
    return "rwx_probe not found: set WXA_RWX_PROBE (meson test does)";
  return nullptr;
}

#define WXA_REQUIRE_HELPERS()                                     \
  do {                                                            \
    if (const char* why = helpers_missing()) GTEST_SKIP() << why; \
  } while (0)

// How strict a policy is; filters stack, so the stricter one wins.
enum Level { none = 0, wx = 1, execmem = 2 };

const char* name_of(Level level) {
  return level == execmem ? "execmem" : level == wx ? "wx" : "none";
}

// Every probe case and its outcome under no filter, wx and execmem. "ok"
// means the kernel allowed it (and, for run_*, the code returned the value
// written into it). The cases marked `memfd` need one: on a host that
// refuses memfd_create (its own filter, or a kernel without it) they read
// "no_memfd", and memfd_create itself reads what the host says, under every
// policy (none of them filters it).
struct Case {
  const char* name;
  const char* outcome[3];
  bool memfd = false;
};
constexpr Case cases[] = {
    {"mmap_anon_none", {"ok", "ok", "ok"}},
    {"mmap_anon_r", {"ok", "ok", "ok"}},
    {"mmap_anon_rw", {"ok", "ok", "ok"}},
    {"mmap_anon_rx", {"ok", "ok", "EACCES"}},
    {"mmap_anon_rwx", {"ok", "EACCES", "EACCES"}},
    {"mmap_anon_wx", {"ok", "EACCES", "EACCES"}},
    {"mprotect_anon_rw_to_r", {"ok", "ok", "ok"}},
    {"mprotect_anon_rw_to_none", {"ok", "ok", "ok"}},
    {"mprotect_anon_rw_to_rx", {"ok", "ok", "EACCES"}},
    {"mprotect_anon_rw_to_rwx", {"ok", "EACCES", "EACCES"}},
    {"mprotect_anon_none_to_rw", {"ok", "ok", "ok"}},
    {"pkey_mprotect_anon_rw_to_r", {"ok", "ok", "ok"}},
    {"pkey_mprotect_anon_rw_to_rx", {"ok", "ok", "EACCES"}},
    {"pkey_mprotect_anon_rw_to_rwx", {"ok", "EACCES", "EACCES"}},
    {"mmap_file_r", {"ok", "ok", "ok"}},
    {"mmap_file_rx", {"ok", "ok", "ok"}},
    {"memfd_create", {"ok", "ok", "ok"}},
    {"mmap_memfd_rw_shared", {"ok", "ok", "ok"}, true},
    {"mmap_memfd_rx_shared", {"ok", "ok", "ok"}, true},
    {"mmap_memfd_rwx_shared", {"ok", "EACCES", "EACCES"}, true},
    {"mprotect_memfd_r_to_rx", {"ok", "ok", "EACCES"}, true},
    {"run_dual_map", {"ok", "ok", "ok"}, true},
    {"run_rw_then_rx", {"ok", "ok", "EACCES"}},
};

struct Probe {
  std::string policy;  // what the probe saw in WXA_SECCOMP_POLICY
  std::map<std::string, std::string> outcome;
};

// Runs the probe, under `policy` unless it is empty. wxa-seccomp-run tells
// its program nothing, so the probe is told the policy here, to label its
// report.
Probe run_probe(const std::string& policy) {
  std::vector<std::string> argv;
  std::vector<std::string> env;
  if (!policy.empty()) {
    argv = {seccomp_run(), "--policy", policy, "--"};
    env = {"WXA_SECCOMP_POLICY=" + policy};
  }
  argv.push_back(rwx_probe());
  const ProcessResult r = run_process(argv, env);
  EXPECT_EQ(r.exit_code, 0) << "signal " << r.signal << ", stderr: " << r.err;
  EXPECT_EQ(r.err, "");
  Probe probe;
  std::string_view rest = r.out;
  while (!rest.empty()) {
    const std::size_t eol = rest.find('\n');
    const std::string_view line = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? "" : rest.substr(eol + 1);
    const std::size_t space = line.find(' ');
    if (space == std::string_view::npos) {
      ADD_FAILURE() << "malformed probe line: " << line;
      continue;
    }
    std::string key(line.substr(0, space)), value(line.substr(space + 1));
    if (key == "policy") {
      probe.policy = value;
    } else {
      EXPECT_TRUE(probe.outcome.emplace(key, value).second)
          << "case reported twice: " << key;
    }
  }
  return probe;
}

// What the host itself answers memfd_create ("ok", or an errno name),
// probed without a filter of this test's.
std::string host_memfd() {
  static const std::string outcome = [] {
    const Probe probe = run_probe("");
    const auto it = probe.outcome.find("memfd_create");
    return it == probe.outcome.end() ? std::string("(missing)") : it->second;
  }();
  return outcome;
}

// What case `c` must read at `level` on a host answering memfd_create
// with `memfd`.
std::string expected(const Case& c, Level level, const std::string& memfd) {
  if (std::string_view(c.name) == "memfd_create") return memfd;
  if (c.memfd && memfd != "ok") return "no_memfd";
  return c.outcome[level];
}

// Every case, and nothing else, has the outcome `level` prescribes on this
// host (whose answer to memfd_create is `memfd`).
::testing::AssertionResult matches(const Probe& probe, Level level,
                                   const std::string& memfd = host_memfd()) {
  std::string diffs;
  for (const Case& c : cases) {
    const auto it = probe.outcome.find(c.name);
    const std::string got =
        it == probe.outcome.end() ? "(missing)" : it->second;
    const std::string want = expected(c, level, memfd);
    if (got != want) {
      diffs +=
          std::string("\n  ") + c.name + ": expected " + want + ", got " + got;
    }
  }
  for (const auto& entry : probe.outcome) {
    const auto& name = entry.first;  // a plain reference: clang 14 cannot
                                     // capture a structured binding
    const bool known =
        std::any_of(std::begin(cases), std::end(cases),
                    [&](const Case& c) { return name == c.name; });
    if (!known) diffs += "\n  unexpected case " + name + " " + entry.second;
  }
  if (diffs.empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "probe under effective policy " << name_of(level) << ":" << diffs;
}

// The level this test process already runs under, found by probing: the
// suite also runs under filters it is not told about. -1 if the host's own
// refusals match no level (then the policies cannot be judged here).
int outer_level() {
  static const int level = [] {
    const Probe probe = run_probe("");
    for (Level l : {none, wx, execmem})
      if (matches(probe, l, host_memfd())) return int(l);
    return -1;
  }();
  return level;
}

#define WXA_REQUIRE_KNOWN_HOST()                                       \
  do {                                                                 \
    if (outer_level() < 0)                                             \
      GTEST_SKIP() << "this host (or a filter it runs under) refuses " \
                      "mappings no policy here describes: "            \
                   << matches(run_probe(""), none).message();          \
  } while (0)

TEST(SeccompOracle, WithoutFilterTheHostAllowsEveryCase) {
  WXA_REQUIRE_HELPERS();
  const Probe probe = run_probe("");
  EXPECT_EQ(probe.policy, "none");
  WXA_REQUIRE_KNOWN_HOST();
  if (outer_level() != none)
    GTEST_SKIP() << "this process already runs under a filter at level "
                 << name_of(Level(outer_level()));
  EXPECT_TRUE(matches(probe, none));
}

TEST(SeccompOracle, WxPolicyRefusesExactlyWritableAndExecutable) {
  WXA_REQUIRE_HELPERS();
  WXA_REQUIRE_KNOWN_HOST();
  const Probe probe = run_probe("wx");
  EXPECT_EQ(probe.policy, "wx");
  EXPECT_TRUE(matches(probe, std::max(wx, Level(outer_level()))));
}

TEST(SeccompOracle, ExecmemPolicyAlsoRefusesAnonymousExecute) {
  WXA_REQUIRE_HELPERS();
  WXA_REQUIRE_KNOWN_HOST();
  const Probe probe = run_probe("execmem");
  EXPECT_EQ(probe.policy, "execmem");
  EXPECT_TRUE(matches(probe, execmem));
}

// Stand-ins for hosts that refuse memfd_create itself (firejail: EACCES;
// other sandboxes EPERM; kernels without it ENOSYS): the call fails with
// that error, every case needing a memfd reads no_memfd, and the rest is wx.
TEST(SeccompOracle, NoMemfdPoliciesRefuseMemfdCreateWithTheirError) {
  WXA_REQUIRE_HELPERS();
  WXA_REQUIRE_KNOWN_HOST();
  const std::pair<const char*, const char*> policies[] = {
      {"nomemfd-eacces", "EACCES"},
      {"nomemfd-eperm", "EPERM"},
      {"nomemfd-enosys", "ENOSYS"}};
  for (const auto& [policy, error] : policies) {
    const Probe probe = run_probe(policy);
    EXPECT_EQ(probe.policy, policy);
    // Where the host already refuses memfd_create, which filter's error
    // wins is the kernel's choice: any refusal will do.
    std::string want = error;
    if (host_memfd() != "ok") {
      const auto it = probe.outcome.find("memfd_create");
      want = it == probe.outcome.end() ? "(missing)" : it->second;
      EXPECT_NE(want, "ok") << "under " << policy;
    }
    EXPECT_TRUE(matches(probe, std::max(wx, Level(outer_level())), want))
        << "under " << policy;
  }
}

// The program learns nothing from the runner: it must probe.
TEST(SeccompRun, TellsTheProgramNothing) {
  WXA_REQUIRE_HELPERS();
  const ProcessResult r =
      run_process({seccomp_run(), "--policy", "execmem", "--", rwx_probe()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("policy none\n"), std::string::npos) << r.out;
}

TEST(SeccompOracle, PolicySpelledWithEqualsSign) {
  WXA_REQUIRE_HELPERS();
  const ProcessResult r =
      run_process({seccomp_run(), "--policy=execmem", "--", rwx_probe()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("mmap_anon_rx EACCES\n"), std::string::npos) << r.out;
}

TEST(SeccompOracle, DefaultPolicyIsWx) {
  WXA_REQUIRE_HELPERS();
  const ProcessResult r = run_process({seccomp_run(), "--", rwx_probe()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("mmap_anon_rwx EACCES\n"), std::string::npos) << r.out;
}

TEST(SeccompOracle, ANestedRunCannotLoosenTheFilter) {
  WXA_REQUIRE_HELPERS();
  WXA_REQUIRE_KNOWN_HOST();
  // The inner launcher installs wx on top of execmem: filters stack and the
  // kernel applies the strictest verdict, so execmem still holds.
  {
    const ProcessResult r =
        run_process({seccomp_run(), "--policy", "execmem", "--", seccomp_run(),
                     "--policy", "wx", "--", rwx_probe()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("run_rw_then_rx EACCES\n"), std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("mmap_anon_rx EACCES\n"), std::string::npos) << r.out;
    const std::string dual =
        host_memfd() == "ok" ? "run_dual_map ok\n" : "run_dual_map no_memfd\n";
    EXPECT_NE(r.out.find(dual), std::string::npos) << r.out;
  }
}

TEST(SeccompRun, PrintsNothingAndPassesOnTheExitStatus) {
  WXA_REQUIRE_HELPERS();
  for (const char* status : {"0", "7", "42"}) {
    const ProcessResult r = run_process({seccomp_run(), "--policy", "execmem",
                                         "--", rwx_probe(), "--exit", status});
    EXPECT_EQ(r.exit_code, std::stoi(status));
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err, "");
  }
}

TEST(SeccompRun, RejectsBadUsageWithStatus2) {
  WXA_REQUIRE_HELPERS();
  const std::vector<std::vector<std::string>> bad = {
      {},
      {"--policy"},
      {"--policy", "bogus", "--", rwx_probe()},
      {"--policy=", "--", rwx_probe()},
      {rwx_probe()},
      {"--"},
      {"--policy", "wx"},
      {"--verbose", "--", rwx_probe()},
  };
  for (const auto& args : bad) {
    std::vector<std::string> argv = {seccomp_run()};
    argv.insert(argv.end(), args.begin(), args.end());
    const ProcessResult r = run_process(argv);
    std::string shown;
    for (const auto& a : args) shown += " '" + a + "'";
    EXPECT_EQ(r.exit_code, 2) << "args:" << shown;
    EXPECT_EQ(r.out, "") << "args:" << shown;
    EXPECT_NE(r.err.find("wxa-seccomp-run: "), std::string::npos)
        << "args:" << shown << " stderr: " << r.err;
    EXPECT_NE(r.err.find("usage: "), std::string::npos) << "args:" << shown;
  }
}

TEST(SeccompRun, ReportsAProgramItCannotRun) {
  WXA_REQUIRE_HELPERS();
  {
    const ProcessResult r =
        run_process({seccomp_run(), "--", "/nonexistent/wxa-program"});
    EXPECT_EQ(r.exit_code, 127);
    EXPECT_NE(r.err.find("cannot run /nonexistent/wxa-program"),
              std::string::npos)
        << r.err;
  }
  {
    // A device is not executable: execve fails with EACCES.
    const ProcessResult r = run_process({seccomp_run(), "--", "/dev/null"});
    EXPECT_EQ(r.exit_code, 126);
    EXPECT_NE(r.err.find("cannot run /dev/null"), std::string::npos) << r.err;
  }
}

TEST(SeccompRun, HelpGoesToStdoutWithStatus0) {
  WXA_REQUIRE_HELPERS();
  const ProcessResult r = run_process({seccomp_run(), "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("usage: "), std::string::npos);
  EXPECT_EQ(r.err, "");
}

}  // namespace
}  // namespace wxa::test
