// SPDX-License-Identifier: MIT
// Backend::automatic picks the first backend this host allows, in the order
// kernel_write, protect, dual_map, and the arena works on whichever it is.
//
// What the host allows is probed (detail::system_pal().capabilities() and
// tests/support/backends.hpp), never read from the environment: the suite
// runs plain and under several seccomp filters (tests/meson.build), one of
// which tells the process nothing.
#include <gtest/gtest.h>

#ifdef _WIN32
#include <windows.h>
#else
#include <sys/mman.h>
#include <unistd.h>
#endif

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "pal/pal.hpp"
#include "support/backends.hpp"
#include "support/maps.hpp"
#include "support/native_code.hpp"
#include "wxarena/arena.hpp"
#include "wxarena/code_heap.hpp"

namespace wxa {
namespace {

// x86-64 `mov eax, value; ret`, then int3 over the rest of `out`.
void write_fn(std::span<std::byte> out, std::uint32_t value) {
  ASSERT_EQ(test::write_return_imm(out, value, out.size()), out.size());
}

Options small(Backend b) {
  Options o;
  o.backend = b;
  o.reserve_bytes = std::size_t{16} << 20;
  return o;
}

int call(const void* rx) {
  return reinterpret_cast<int (*)()>(const_cast<void*>(rx))();
}

// The probe agrees with the kernel: anonymous memory gains execute exactly
// when capabilities().anon_exec says so. Otherwise every other assertion
// here would test the wrong thing.
TEST(BackendChoice, TheProbeMatchesTheKernel) {
#ifdef _WIN32
  void* p =
      ::VirtualAlloc(nullptr, 4096, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
  ASSERT_NE(p, nullptr);
  DWORD old = 0;
  const int rc = ::VirtualProtect(p, 4096, PAGE_EXECUTE_READ, &old) ? 0 : -1;
  const int err = rc == 0 ? 0 : EACCES;
  ASSERT_TRUE(::VirtualFree(p, 0, MEM_RELEASE));
#else
  const std::size_t ps = detail::system_pal().capabilities().page_size;
  void* p = ::mmap(nullptr, ps, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  const int rc = ::mprotect(p, ps, PROT_READ | PROT_EXEC);
  const int err = errno;
  ASSERT_EQ(::munmap(p, ps), 0);
#endif
  if (detail::system_pal().capabilities().anon_exec) {
    EXPECT_EQ(rc, 0) << "the probe found anon_exec, the kernel refused: "
                     << std::strerror(err);
  } else {
    EXPECT_NE(rc, 0) << "the probe found no anon_exec, the kernel allowed it";
    EXPECT_TRUE(err == EACCES || err == EPERM) << std::strerror(err);
  }
}

// The library's order: kernel_write, else protect, else dual_map.
TEST(BackendChoice, AutomaticPicksTheFirstBackendTheHostAllows) {
  const Backend want = test::expected_automatic();
  Result<Arena> arena = Arena::create(small(Backend::automatic));
  if (want == Backend::automatic) {
    ASSERT_FALSE(arena) << "created " << to_string(arena->backend())
                        << " though the probe allows no backend";
    EXPECT_EQ(arena.error(), Errc::not_supported) << arena.error().to_string();
    return;
  }
  ASSERT_TRUE(arena) << arena.error().to_string();
  EXPECT_EQ(arena->backend(), want)
      << "automatic picked " << to_string(arena->backend()) << ", expected "
      << to_string(want) << " from the probed capabilities";
  EXPECT_EQ(arena->stats().backend, arena->backend());
  if (arena->backend() == Backend::protect) {
    EXPECT_EQ(static_cast<const void*>(arena->rw_range().data()),
              static_cast<const void*>(arena->range().data()));
  } else {
    EXPECT_NE(static_cast<const void*>(arena->rw_range().data()),
              static_cast<const void*>(arena->range().data()));
  }
  EXPECT_TRUE(test::audit_arena(*arena));
}

// What automatic picks also works at its first seal: a chunk is written,
// sealed and called.
TEST(BackendChoice, AutomaticsChoiceSurvivesTheFirstSeal) {
  if (test::expected_automatic() == Backend::automatic)
    GTEST_SKIP() << "the probe allows no backend on this host";
  Result<Arena> arena = Arena::create(small(Backend::automatic));
  ASSERT_TRUE(arena) << arena.error().to_string();
  Result<Chunk> c = arena->allocate(64);
  ASSERT_TRUE(c) << c.error().to_string();
  write_fn(c->rw(), 4242);
  Result<void> sealed = arena->seal(*c);
  ASSERT_TRUE(sealed) << to_string(arena->backend()) << ": "
                      << sealed.error().to_string();
  EXPECT_EQ(call(c->rx()), 4242);
}

// A forced backend is created exactly when the probe allows it; refused,
// protect says permission_denied and the shared-memory backends
// not_supported.
class ForcedBackend : public ::testing::TestWithParam<Backend> {};

TEST_P(ForcedBackend, IsCreatedExactlyWhenTheProbeAllowsIt) {
  const Backend b = GetParam();
  Result<Arena> arena = Arena::create(small(b));
  if (const char* why = test::unavailable_reason(b)) {
    ASSERT_FALSE(arena) << to_string(b) << " was created though: " << why;
    EXPECT_EQ(arena.error(), b == Backend::protect ? Errc::permission_denied
                                                   : Errc::not_supported)
        << arena.error().to_string();
  } else {
    ASSERT_TRUE(arena) << arena.error().to_string();
    EXPECT_EQ(arena->backend(), b);
    EXPECT_TRUE(test::audit_arena(*arena));
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, ForcedBackend,
                         ::testing::Values(Backend::protect, Backend::dual_map,
                                           Backend::kernel_write),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return std::string(to_string(info.param));
                         });

// The skip helper never names automatic.
TEST(BackendChoice, AutomaticIsNeverUnavailable) {
  EXPECT_EQ(test::unavailable_reason(Backend::automatic), nullptr);
}

// Whatever automatic picked, the whole lifecycle works: write, seal, call,
// unseal, patch, reseal, read-only data, batches, release, quarantine reuse,
// trim, and a CodeHeap on top.
TEST(BackendChoice, EverythingWorksOnTheAutomaticBackend) {
  if (test::expected_automatic() == Backend::automatic)
    GTEST_SKIP() << "the probe allows no backend on this host";
  Options o = small(Backend::automatic);
  o.quarantine = 2;
  o.open_pages = 4;
  Result<Arena> arena = Arena::create(o);
  ASSERT_TRUE(arena) << arena.error().to_string();
  const std::size_t ps = arena->page_size();

  std::vector<Chunk> code;
  Batch batch(*arena);
  for (std::uint32_t i = 0; i < 8; ++i) {
    Result<Chunk> c = arena->allocate(ps * (1 + i % 2));
    ASSERT_TRUE(c) << c.error().to_string();
    write_fn(c->rw(), 500 + i);
    batch.seal(*c);
    code.push_back(*c);
  }
  Result<CommitReport> r = batch.commit();
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->runs, 1u);  // adjacent chunks coalesce
  for (std::uint32_t i = 0; i < 8; ++i)
    EXPECT_EQ(call(code[i].rx()), 500 + int(i));

  Result<Chunk> patch = arena->unseal(code[3].rx());
  ASSERT_TRUE(patch) << patch.error().to_string();
  EXPECT_EQ(arena->find(code[3].rx())->state, State::writable);
  write_fn(patch->rw(), 9999);
  ASSERT_TRUE(arena->seal(*patch));
  EXPECT_EQ(call(code[3].rx()), 9999);

  Result<Chunk> data = arena->allocate(100);
  ASSERT_TRUE(data);
  std::memcpy(data->rw().data(), "constant", 9);
  ASSERT_TRUE(arena->seal(*data, Seal::read_only));
  EXPECT_STREQ(static_cast<const char*>(data->rx()), "constant");

  EXPECT_TRUE(test::audit_arena(*arena));
  Batch gone(*arena);
  for (const Chunk& c : code) gone.release(c);
  ASSERT_TRUE(gone.commit());
  EXPECT_EQ(arena->stats().chunks_in(State::retired), 8u);
  for (std::uint32_t i = 0; i < 8; ++i) {  // reuse after the quarantine
    Result<Chunk> c = arena->allocate(ps);
    ASSERT_TRUE(c) << c.error().to_string();
    write_fn(c->rw(), 700 + i);
    ASSERT_TRUE(arena->seal(*c));
    EXPECT_EQ(call(c->rx()), 700 + int(i));
  }
  EXPECT_TRUE(test::audit_arena(*arena));
  ASSERT_TRUE(arena->trim());
  EXPECT_TRUE(test::audit_arena(*arena));

  Result<CodeHeap> heap = CodeHeap::create(*arena);
  ASSERT_TRUE(heap) << heap.error().to_string();
  std::vector<const void*> fns;
  for (std::uint32_t i = 0; i < 200; ++i) {
    Result<Function> f = heap->allocate(32);
    ASSERT_TRUE(f) << f.error().to_string();
    write_fn(f->rw, 3000 + i);
    fns.push_back(f->rx);
  }
  ASSERT_TRUE(heap->publish());
  for (std::uint32_t i = 0; i < 200; ++i)
    EXPECT_EQ(call(fns[i]), 3000 + int(i));
  for (std::uint32_t i = 0; i < 200; i += 2) ASSERT_TRUE(heap->release(fns[i]));
  ASSERT_TRUE(heap->publish());
  for (std::uint32_t i = 1; i < 200; i += 2)
    EXPECT_EQ(call(fns[i]), 3000 + int(i));
  EXPECT_TRUE(test::audit_arena(*arena));
}

}  // namespace
}  // namespace wxa
