// SPDX-License-Identifier: MIT
// Self-tests of the test support: the /proc/self/maps reader, the arena
// auditor (it must pass on a healthy arena and fail on a tampered one) and
// the per-test W+X audit listener (it must really fail a test).

#include <gtest/gtest.h>

#ifdef _WIN32
#include <windows.h>
#else
#include <sys/mman.h>
#include <unistd.h>
#endif

#include <cinttypes>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>
#include <wxarena/arena.hpp>

#include "support/arena_util.hpp"
#include "support/backends.hpp"
#include "support/maps.hpp"
#ifndef _WIN32
#include "support/process.hpp"
#endif
#include "support/native_code.hpp"

namespace wxa::test {
namespace {

std::string hex(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%" PRIxPTR,
                reinterpret_cast<std::uintptr_t>(p));
  return buf;
}

#ifdef _WIN32
std::size_t page() {
  SYSTEM_INFO si;
  ::GetSystemInfo(&si);
  return si.dwPageSize;
}

// Sets the protection of pages this test owns; reserved pages are
// committed first (VirtualProtect refuses them).
bool os_protect(void* p, std::size_t bytes, Access access) {
  const DWORD prot = access == Access::read         ? PAGE_READONLY
                     : access == Access::read_write ? PAGE_READWRITE
                                                    : PAGE_NOACCESS;
  DWORD old = 0;
  if (::VirtualProtect(p, bytes, prot, &old)) return true;
  return prot != PAGE_NOACCESS && ::VirtualAlloc(p, bytes, MEM_COMMIT, prot);
}

// Three RW pages between two reserved (inaccessible) guard pages.
class GuardedPages {
 public:
  GuardedPages() {
    void* p = ::VirtualAlloc(nullptr, 5 * page(), MEM_RESERVE, PAGE_NOACCESS);
    if (!p) throw std::runtime_error("VirtualAlloc(MEM_RESERVE) failed");
    base_ = static_cast<std::byte*>(p);
    if (!::VirtualAlloc(base_ + page(), 3 * page(), MEM_COMMIT,
                        PAGE_READWRITE)) {
      throw std::runtime_error("VirtualAlloc(MEM_COMMIT) failed");
    }
  }
  GuardedPages(const GuardedPages&) = delete;
  GuardedPages& operator=(const GuardedPages&) = delete;
  ~GuardedPages() { EXPECT_TRUE(::VirtualFree(base_, 0, MEM_RELEASE)); }
  // Page i of the three RW ones.
  [[nodiscard]] std::byte* at(std::size_t i) const {
    return base_ + (i + 1) * page();
  }
  [[nodiscard]] std::byte* guard_below() const { return base_; }

 private:
  std::byte* base_ = nullptr;
};
#else
std::size_t page() { return static_cast<std::size_t>(sysconf(_SC_PAGESIZE)); }

bool os_protect(void* p, std::size_t bytes, Access access) {
  const int prot = access == Access::read         ? PROT_READ
                   : access == Access::read_write ? PROT_READ | PROT_WRITE
                                                  : PROT_NONE;
  return mprotect(p, bytes, prot) == 0;
}

// Three RW pages between two PROT_NONE guard pages, so that the kernel can
// merge them with no neighbour: the VMA counts below are exact.
class GuardedPages {
 public:
  GuardedPages() {
    void* p = mmap(nullptr, 5 * page(), PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    base_ = static_cast<std::byte*>(p);
    if (mmap(base_ + page(), 3 * page(), PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
      throw std::runtime_error("mmap MAP_FIXED failed");
    }
  }
  GuardedPages(const GuardedPages&) = delete;
  GuardedPages& operator=(const GuardedPages&) = delete;
  ~GuardedPages() { EXPECT_EQ(munmap(base_, 5 * page()), 0); }
  // Page i of the three RW ones.
  [[nodiscard]] std::byte* at(std::size_t i) const {
    return base_ + (i + 1) * page();
  }
  [[nodiscard]] std::byte* guard_below() const { return base_; }

 private:
  std::byte* base_ = nullptr;
};

#endif

std::uintptr_t addr(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p);
}

// --- the maps reader ------------------------------------------------------

TEST(Maps, ParsesEveryField) {
  const Mapping m = parse_maps_line(
      "7f12a0000000-7f12a0021000 r-xs 0001f000 fd:01 1234567    "
      "/usr/lib/lib with space.so (deleted)");
  EXPECT_EQ(m.begin, 0x7f12a0000000u);
  EXPECT_EQ(m.end, 0x7f12a0021000u);
  EXPECT_EQ(m.size(), 0x21000u);
  EXPECT_TRUE(m.read);
  EXPECT_FALSE(m.write);
  EXPECT_TRUE(m.execute);
  EXPECT_TRUE(m.shared);
  EXPECT_EQ(m.protection(), "r-x");
  EXPECT_EQ(m.perms(), "r-xs");
  EXPECT_EQ(m.offset, 0x1f000u);
  EXPECT_EQ(m.dev, "fd:01");
  EXPECT_EQ(m.inode, 1234567u);
  EXPECT_EQ(m.name, "/usr/lib/lib with space.so (deleted)");
}

TEST(Maps, ParsesAnonymousAndSpecialLines) {
  const Mapping anon =
      parse_maps_line("7ffd00000000-7ffd00001000 rw-p 00000000 00:00 0 ");
  EXPECT_EQ(anon.perms(), "rw-p");
  EXPECT_EQ(anon.name, "");
  EXPECT_EQ(anon.inode, 0u);
  const Mapping named = parse_maps_line(
      "55d0c0000000-55d0c0021000 ---p 00000000 00:00 0          "
      "[anon:wxarena code]");
  EXPECT_EQ(named.protection(), "---");
  EXPECT_EQ(named.name, "[anon:wxarena code]");
}

TEST(Maps, RejectsMalformedLines) {
  for (const char* bad :
       {"", "garbage", "1000-2000 rw-p", "1000-2000 rwxpq 0 00:00 0",
        "zz-2000 rw-p 00000000 00:00 0", "2000-1000 rw-p 00000000 00:00 0",
        "1000-2000 rw-p 00000000 00:00 x"}) {
    EXPECT_THROW((void)parse_maps_line(bad), std::runtime_error) << bad;
  }
}

TEST(Maps, SeesProtectionChangesOnAMappingItMade) {
  GuardedPages pages;
  EXPECT_EQ(count_vmas(pages.at(0), pages.at(3)), 1u);
  EXPECT_EQ(mapping_at(pages.at(1)).protection(), "rw-");
  EXPECT_EQ(mapping_at(pages.guard_below()).protection(), "---");

  ASSERT_TRUE(os_protect(pages.at(1), page(), Access::read));
  EXPECT_EQ(count_vmas(pages.at(0), pages.at(3)), 3u);
  EXPECT_EQ(count_vmas(pages.at(1), pages.at(2)), 1u);
  // One byte on each side of a boundary touches both mappings.
  EXPECT_EQ(count_vmas(pages.at(1) - 1, pages.at(1) + 1), 2u);
  const Mapping m = mapping_at(pages.at(1) + 5);
  EXPECT_EQ(m.begin, addr(pages.at(1)));
  EXPECT_EQ(m.end, addr(pages.at(2)));
  EXPECT_EQ(m.perms(), "r--p");
  EXPECT_EQ(m.inode, 0u);

  ASSERT_TRUE(os_protect(pages.at(1), page(), Access::read_write));
  EXPECT_EQ(count_vmas(pages.at(0), pages.at(3)), 1u);
}

TEST(Maps, ReadsAProcessByPid) {
#ifdef _WIN32
  GTEST_SKIP() << "Windows: the VirtualQuery reader sees this process only";
#else
  // This function's own code: executable, not writable, file-backed.
  bool found = false;
  for (const Mapping& m : read_maps(getpid())) {
    if (m.contains(addr(reinterpret_cast<const void*>(&page)))) {
      found = true;
      EXPECT_EQ(m.protection(), "r-x");
      EXPECT_NE(m.inode, 0u);
      EXPECT_FALSE(m.name.empty());
    }
  }
  EXPECT_TRUE(found);
  EXPECT_THROW((void)read_maps(0x7fffffff), std::system_error);
#endif
}

TEST(Maps, ThisProcessHasNoWritableAndExecutableMapping) {
  EXPECT_EQ(writable_and_executable().size(), 0u);
}

TEST(Maps, CheckProtectionPassesOnTheTruth) {
  GuardedPages pages;
  ASSERT_TRUE(os_protect(pages.at(2), page(), Access::read));
  const std::vector<Expected> truth = {
      {addr(pages.guard_below()), addr(pages.at(0)), "---", ""},
      {addr(pages.at(0)), addr(pages.at(2)), "rw-", ""},
      {addr(pages.at(2)), addr(pages.at(3)), "r--", ""},
  };
  EXPECT_TRUE(check_protection(truth, read_maps()));
}

TEST(Maps, CheckProtectionNamesTheFirstMismatch) {
  GuardedPages pages;
  ASSERT_TRUE(os_protect(pages.at(1), page(), Access::read));
  const std::vector<Expected> wrong = {
      {addr(pages.at(0)), addr(pages.at(3)), "rw-", "three pages"},
  };
  const ::testing::AssertionResult r = check_protection(wrong, read_maps());
  ASSERT_FALSE(r);
  EXPECT_EQ(std::string(r.message()),
            "at " + hex(pages.at(1)) +
                ": expected rw-, kernel has r-- (three pages)");
}

TEST(Maps, CheckProtectionReportsUnmappedBytes) {
#ifdef _WIN32
  GTEST_SKIP() << "Windows cannot release one page of an allocation; "
                  "CheckProtectionNamesTheFirstMismatch covers the walk";
#else
  GuardedPages pages;
  ASSERT_EQ(munmap(pages.at(2), page()), 0);
  const std::vector<Expected> expected = {
      {addr(pages.at(0)), addr(pages.at(3)), "rw-", ""},
  };
  const ::testing::AssertionResult r = check_protection(expected, read_maps());
  ASSERT_FALSE(r);
  EXPECT_EQ(std::string(r.message()),
            "at " + hex(pages.at(2)) + ": expected rw-, kernel has unmapped");
  // Put the page back so that the destructor's munmap covers a whole range.
  ASSERT_NE(mmap(pages.at(2), page(), PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
            MAP_FAILED);
#endif
}

// --- the per-test W+X audit listener --------------------------------------

// Run only by the test below, in a child process, with
// --gtest_also_run_disabled_tests. WXA_AUDIT_PROOF=clean unmaps the RWX page
// before the test ends (the control); otherwise it is left mapped and the
// listener must fail this test.
#ifndef _WIN32
TEST(AuditListenerProof, DISABLED_LeavesAWritableExecutableMapping) {
  void* p = mmap(nullptr, page(), PROT_READ | PROT_WRITE | PROT_EXEC,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) GTEST_SKIP() << "the kernel refuses RWX here";
  std::printf("rwx page at %s\n", hex(p).c_str());
  if (env_or_empty("WXA_AUDIT_PROOF") == "clean") {
    ASSERT_EQ(munmap(p, page()), 0);
  }
}

ProcessResult run_proof(const char* mode) {
  return run_process(
      {self_executable(), "--gtest_also_run_disabled_tests",
       "--gtest_filter=AuditListenerProof.DISABLED_LeavesAWritableExecutable"
       "Mapping"},
      {std::string("WXA_AUDIT_PROOF=") + mode});
}

TEST(AuditListener, FailsATestThatLeavesAWritableExecutableMapping) {
  if (const char* why = exec_unavailable_reason()) GTEST_SKIP() << why;
  const ProcessResult leak = run_proof("leak");
  if (leak.out.find("[  SKIPPED ]") != std::string::npos) {
    GTEST_SKIP() << "this host (or a W^X filter it runs under) refuses RWX "
                    "mappings, so the listener cannot be shown a violation";
  }
  EXPECT_EQ(leak.exit_code, 1) << leak.out << leak.err;
  const std::size_t at = leak.out.find("rwx page at ");
  ASSERT_NE(at, std::string::npos) << leak.out;
  const std::string where =
      leak.out.substr(at + 12, leak.out.find('\n', at) - (at + 12));
  EXPECT_NE(leak.out.find("W^X audit: writable and executable mappings "
                          "exist after AuditListenerProof."),
            std::string::npos)
      << leak.out;
  EXPECT_NE(leak.out.find("\n  " + where + "-"), std::string::npos)
      << "the failure should name " << where << ":\n"
      << leak.out;
  EXPECT_NE(leak.out.find("[  FAILED  ] AuditListenerProof."),
            std::string::npos)
      << leak.out;

  // The control: the same test without the leaked mapping passes.
  const ProcessResult clean = run_proof("clean");
  EXPECT_EQ(clean.exit_code, 0) << clean.out << clean.err;
  EXPECT_EQ(clean.out.find("W^X audit"), std::string::npos) << clean.out;
  EXPECT_NE(clean.out.find("[  PASSED  ] 1 test"), std::string::npos)
      << clean.out;
}
#endif

// --- audit_arena on real arenas -------------------------------------------

class AuditArena : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    WXA_SKIP_IF_UNAVAILABLE(GetParam());
    Options options;
    options.backend = GetParam();
    options.reserve_bytes = 64 * page();
    options.open_pages = 4;
    WXA_SKIP_IF_UNAVAILABLE(GetParam());
    Result<Arena> created = Arena::create(options);
    ASSERT_TRUE(created) << created.error().to_string();
    arena_ = new Arena(std::move(created).value());
  }
  void TearDown() override { delete arena_; }

  Arena& arena() { return *arena_; }

  // A chunk of one page holding `unsigned f()` returning `value`.
  Chunk code_chunk(std::uint32_t value) {
    Result<Chunk> c = arena().allocate(page());
    EXPECT_TRUE(c) << c.error().to_string();
    if (!c) return {};
    EXPECT_EQ(write_return_imm(c.value().rw(), value, c.value().size()),
              c.value().size());
    return c.value();
  }

  // The first run whose rx view the arena expects PROT_NONE.
  const void* inaccessible_page() {
    for (const RunInfo& r : arena().runs()) {
      if (r.rx_access == Access::none) return r.rx;
    }
    return nullptr;
  }

 private:
  Arena* arena_ = nullptr;
};

TEST_P(AuditArena, PassesThroughTheWholeLifecycle) {
  EXPECT_TRUE(audit_arena(arena()));
  const Chunk a = code_chunk(11), b = code_chunk(22), c = code_chunk(33);
  ASSERT_TRUE(a && b && c);
  EXPECT_TRUE(audit_arena(arena()));

  ASSERT_TRUE(arena().seal(a));
  ASSERT_TRUE(arena().seal(b, Seal::read_only));
  EXPECT_TRUE(audit_arena(arena()));
  EXPECT_EQ(a.entry<unsigned()>()(), 11u);

  Result<Chunk> patched = arena().unseal(a.rx());
  ASSERT_TRUE(patched) << patched.error().to_string();
  EXPECT_TRUE(audit_arena(arena()));
  ASSERT_EQ(write_return_imm(patched.value().rw(), 44), return_imm_size);
  ASSERT_TRUE(arena().seal(a));
  EXPECT_EQ(a.entry<unsigned()>()(), 44u);

  ASSERT_TRUE(arena().release(c));
  EXPECT_TRUE(audit_arena(arena()));
  ASSERT_TRUE(arena().release(b));
  ASSERT_TRUE(arena().trim());
  EXPECT_TRUE(audit_arena(arena()));
}

TEST_P(AuditArena, FailsWhenAWritablePageWasChangedBehindItsBack) {
  const Chunk a = code_chunk(1);
  ASSERT_TRUE(a);
  std::byte* rw = a.rw().data();
  ASSERT_TRUE(os_protect(rw, page(), Access::read));
  const ::testing::AssertionResult r = audit_arena(arena());
  EXPECT_FALSE(r);
  EXPECT_NE(std::string(r.message())
                .find("at " + hex(rw) + ": expected rw-, kernel has r--"),
            std::string::npos)
      << r.message();
  ASSERT_TRUE(os_protect(rw, page(), Access::read_write));
  EXPECT_TRUE(audit_arena(arena()));
}

TEST_P(AuditArena, FailsWhenAnInaccessiblePageWasMadeReadable) {
  const Chunk a = code_chunk(1);
  ASSERT_TRUE(a);
  ASSERT_TRUE(arena().seal(a));
  ASSERT_TRUE(arena().trim());
  const void* none = inaccessible_page();
  ASSERT_NE(none, nullptr);
  void* p = const_cast<void*>(none);
  ASSERT_TRUE(os_protect(p, page(), Access::read));
  const ::testing::AssertionResult r = audit_arena(arena());
  EXPECT_FALSE(r);
  // Next to the sealed chunk: a maps file that merges r-- with r-x
  // neighbours prints the page as r-x (maps_tell_read_from_execute()).
  const std::string shown = maps_tell_read_from_execute() ? "r--" : "r";
  EXPECT_NE(std::string(r.message())
                .find("at " + hex(p) + ": expected ---, kernel has " + shown),
            std::string::npos)
      << r.message();
  ASSERT_TRUE(os_protect(p, page(), Access::none));
  EXPECT_TRUE(audit_arena(arena()));
}

TEST_P(AuditArena, FailsOnAWritableExecutableMappingAnywhere) {
  const Chunk a = code_chunk(1);
  ASSERT_TRUE(a);
  ASSERT_TRUE(arena().seal(a));
  // A snapshot with one W+X mapping added far from the arena, so this
  // works without mapping RWX (which the seccomp runs would refuse).
  std::vector<Mapping> maps = read_maps();
  EXPECT_TRUE(audit_arena(arena(), maps));
  Mapping fake;
  fake.begin = 0x1000;  // below every real mapping, on Linux and Windows
  fake.end = 0x2000;
  fake.read = fake.write = fake.execute = true;
  fake.dev = "00:00";
  fake.name = "[fake]";
  ASSERT_LT(fake.end, maps.front().begin);
  maps.insert(maps.begin(), fake);
  const ::testing::AssertionResult r = audit_arena(arena(), maps);
  EXPECT_FALSE(r);
  EXPECT_EQ(std::string(r.message()),
            "writable+executable mappings in the process:\n"
            "  0x1000-0x2000 rwxp [fake]");
}

INSTANTIATE_TEST_SUITE_P(Backends, AuditArena,
                         ::testing::ValuesIn(kAllBackends),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return std::string(to_string(info.param));
                         });

}  // namespace
}  // namespace wxa::test
