// SPDX-License-Identifier: MIT
// The libffi adapter: closures whose trampolines live in a CodeHeap, bound to
// C++ functions with user data, called through their executable addresses on
// both backends, then released; the arena is audited after each test.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "support/arena_util.hpp"
#include "support/backends.hpp"
#include "support/maps.hpp"
#include "wxarena/adapters/libffi.hpp"
#include "wxarena/arena.hpp"
#include "wxarena/code_heap.hpp"

namespace wxa {
namespace {

using test::audit_arena;
using test::BackendTest;
using test::FailsWith;
using test::kBothBackends;
using test::Ok;

// A C++ handler in libffi's shape: returns scale * (a + b) + calls, and
// counts its calls in the user data.
struct Scaled {
  int scale = 1;
  int calls = 0;
};
void scaled_sum(ffi_cif*, void* ret, void** args, void* user) {
  auto& s = *static_cast<Scaled*>(user);
  const int a = *static_cast<int*>(args[0]);
  const int b = *static_cast<int*>(args[1]);
  ++s.calls;
  // An int return is widened to a whole ffi_arg.
  *static_cast<ffi_sarg*>(ret) = s.scale * (a + b);
}

// A C function that takes a callback: what closures exist for.
extern "C" [[gnu::noinline]] int wxa_test_fold(int (*f)(int, int), int n) {
  int acc = 0;
  for (int i = 1; i <= n; ++i) acc = f(acc, i);
  return acc;
}

::testing::AssertionResult executable_not_writable(const void* rx) {
  const test::Mapping m = test::mapping_at(rx);
  if (m.begin == m.end)
    return ::testing::AssertionFailure() << rx << " is not mapped";
  if (!m.execute || m.write)
    return ::testing::AssertionFailure()
           << rx << " is " << m.perms() << ", expected r-x";
  return ::testing::AssertionSuccess();
}

class LibffiAdapter : public BackendTest {};

TEST_P(LibffiAdapter, ClosuresWithUserDataInTheArena) {
  Result<Arena> arena = Arena::create(options());
  ASSERT_TRUE(Ok(arena));
  Result<CodeHeap> heap = CodeHeap::create(*arena);
  ASSERT_TRUE(Ok(heap));

  ffi_cif cif;
  ffi_type* args[] = {&ffi_type_sint, &ffi_type_sint};
  ASSERT_EQ(ffi_prep_cif(&cif, FFI_DEFAULT_ABI, 2, &ffi_type_sint, args),
            FFI_OK);

  constexpr int kClosures = 64;
  std::vector<Scaled> data(kClosures);
  std::vector<ffi::Closure> closures;
  for (int i = 0; i < kClosures; ++i) {
    data[static_cast<std::size_t>(i)].scale = i + 1;
    Result<ffi::Closure> c = ffi::Closure::create(
        *heap, &cif, &scaled_sum, &data[static_cast<std::size_t>(i)]);
    ASSERT_TRUE(Ok(c));
    closures.push_back(std::move(*c));
  }
  // Before publishing, none is executable; one commit makes all of them so.
  EXPECT_EQ(heap->stats().pending_functions, std::size_t{kClosures});
  Result<CommitReport> rep = heap->publish();
  ASSERT_TRUE(Ok(rep));
  EXPECT_LE(rep->protection_calls, 2u) << "packed: a few pages, one run";

  const auto* lo = arena->range().data();
  const auto* hi = lo + arena->range().size();
  for (int i = 0; i < kClosures; ++i) {
    const ffi::Closure& c = closures[static_cast<std::size_t>(i)];
    const auto* at = static_cast<const std::byte*>(c.code());
    ASSERT_TRUE(at >= lo && at < hi) << "closure outside the arena";
    EXPECT_TRUE(executable_not_writable(c.code()));
    int (*fn)(int, int) = c.entry<int(int, int)>();
    EXPECT_EQ(fn(2, 3), 5 * (i + 1));
    EXPECT_EQ(fn(-10, 4), -6 * (i + 1));
    // Called by C code as a plain function pointer.
    Scaled& d = data[static_cast<std::size_t>(i)];
    const int before = d.calls;
    int want = 0;
    for (int k = 1; k <= 5; ++k) want = d.scale * (want + k);
    EXPECT_EQ(wxa_test_fold(fn, 5), want);
    EXPECT_EQ(d.calls - before, 5);
  }
  EXPECT_TRUE(audit_arena(*arena));

  // Release every second one, then the rest.
  for (std::size_t i = 0; i < closures.size(); i += 2)
    ASSERT_TRUE(Ok(closures[i].reset()));
  EXPECT_EQ(heap->stats().live_functions, std::size_t{kClosures / 2});
  EXPECT_EQ(closures[1].entry<int(int, int)>()(1, 1), 2 * 2);
  EXPECT_TRUE(audit_arena(*arena));
  closures.clear();
  EXPECT_EQ(heap->stats().live_functions, 0u);
  EXPECT_TRUE(audit_arena(*arena));
}

TEST_P(LibffiAdapter, TypedCallbacks) {
  Result<Arena> arena = Arena::create(options());
  ASSERT_TRUE(Ok(arena));
  Result<CodeHeap> heap = CodeHeap::create(*arena);
  ASSERT_TRUE(Ok(heap));

  int k = 3;
  Result<ffi::Callback<int(int, int)>> add =
      ffi::Callback<int(int, int)>::create(
          *heap, [&k](int a, int b) { return k * (a + b); });
  Result<ffi::Callback<double(double, std::int64_t)>> mix =
      ffi::Callback<double(double, std::int64_t)>::create(
          *heap, [](double x, std::int64_t n) { return x * double(n); });
  Result<ffi::Callback<signed char(signed char)>> neg =
      ffi::Callback<signed char(signed char)>::create(
          *heap, [](signed char c) { return static_cast<signed char>(-c); });
  int hits = 0;
  Result<ffi::Callback<void(const char*)>> note =
      ffi::Callback<void(const char*)>::create(
          *heap, [&hits](const char* s) { hits += s[0] == 'w'; });
  ASSERT_TRUE(Ok(add));
  ASSERT_TRUE(Ok(mix));
  ASSERT_TRUE(Ok(neg));
  ASSERT_TRUE(Ok(note));
  ASSERT_TRUE(Ok(heap->publish()));

  EXPECT_EQ(add->entry()(2, 3), 15);
  k = 10;
  EXPECT_EQ(wxa_test_fold(add->entry(), 3), 10 * (10 * (10 * 1 + 2) + 3));
  EXPECT_DOUBLE_EQ(mix->entry()(1.5, 4), 6.0);
  EXPECT_EQ(neg->entry()(5), -5);
  EXPECT_EQ(neg->entry()(-128), -128);
  note->entry()("wx");
  note->entry()("rwx");
  EXPECT_EQ(hits, 1);
  EXPECT_TRUE(executable_not_writable(add->closure().code()));

  // A moved callback keeps working (its state does not move).
  ffi::Callback<int(int, int)> moved = std::move(*add);
  EXPECT_EQ(moved.entry()(1, 1), 20);
  EXPECT_TRUE(audit_arena(*arena));
  ASSERT_TRUE(Ok(moved.reset()));
  EXPECT_EQ(heap->stats().live_functions, 3u);
  EXPECT_TRUE(audit_arena(*arena));
}

TEST_P(LibffiAdapter, PrepareIntoAChunkByHand) {
  Result<Arena> arena = Arena::create(options());
  ASSERT_TRUE(Ok(arena));
  ffi_cif cif;
  ffi_type* args[] = {&ffi_type_sint, &ffi_type_sint};
  ASSERT_EQ(ffi_prep_cif(&cif, FFI_DEFAULT_ABI, 2, &ffi_type_sint, args),
            FFI_OK);
  Scaled data{7, 0};
  Result<Chunk> c = arena->allocate(ffi::kClosureSize);
  ASSERT_TRUE(Ok(c));
  // Refusals first: they change nothing.
  EXPECT_TRUE(FailsWith(
      ffi::prepare(c->rw().first(8), c->rx(), &cif, &scaled_sum, &data),
      Errc::size_too_large));
  EXPECT_TRUE(FailsWith(
      ffi::prepare(c->rw().subspan(1), c->rx(), &cif, &scaled_sum, &data),
      Errc::bad_alignment));
  EXPECT_TRUE(
      FailsWith(ffi::prepare(c->rw(), nullptr, &cif, &scaled_sum, &data),
                Errc::null_pointer));
  ASSERT_TRUE(Ok(ffi::prepare(c->rw(), c->rx(), &cif, &scaled_sum, &data)));
  ASSERT_TRUE(Ok(arena->seal(*c)));
  EXPECT_EQ(c->entry<int(int, int)>()(1, 2), 21);
  EXPECT_EQ(data.calls, 1);
  EXPECT_TRUE(audit_arena(*arena));
  ASSERT_TRUE(Ok(arena->release(*c)));
  EXPECT_TRUE(audit_arena(*arena));
}

// wxa::Options{} as a user gets it (the automatic backend, a 1 GiB
// reservation): closures and typed callbacks run from the arena, called
// by C code.
TEST(LibffiAdapterDefaults, DefaultOptionsRunClosures) {
  Result<Arena> arena = Arena::create(Options{});
  ASSERT_TRUE(Ok(arena));
  Result<CodeHeap> heap = CodeHeap::create(*arena);
  ASSERT_TRUE(Ok(heap));
  ffi_cif cif;
  ffi_type* args[] = {&ffi_type_sint, &ffi_type_sint};
  ASSERT_EQ(ffi_prep_cif(&cif, FFI_DEFAULT_ABI, 2, &ffi_type_sint, args),
            FFI_OK);
  Scaled data;
  data.scale = 3;
  Result<ffi::Closure> closure =
      ffi::Closure::create(*heap, &cif, &scaled_sum, &data);
  ASSERT_TRUE(Ok(closure));
  int k = 2;
  Result<ffi::Callback<int(int, int)>> times =
      ffi::Callback<int(int, int)>::create(
          *heap, [&k](int a, int b) { return k * a + b; });
  ASSERT_TRUE(Ok(times));
  ASSERT_TRUE(Ok(heap->publish()));
  EXPECT_TRUE(executable_not_writable(closure->code()));
  int (*fn)(int, int) = closure->entry<int(int, int)>();
  EXPECT_EQ(fn(2, 3), 15);
  EXPECT_EQ(wxa_test_fold(fn, 3), 3 * (3 * (3 * 1 + 2) + 3));
  EXPECT_EQ(data.calls, 4);
  EXPECT_EQ(wxa_test_fold(times->entry(), 4), 2 * (2 * (2 * 1 + 2) + 3) + 4);
  EXPECT_TRUE(audit_arena(*arena));
  EXPECT_TRUE(test::writable_and_executable().empty());
}

INSTANTIATE_TEST_SUITE_P(Backends, LibffiAdapter,
                         ::testing::ValuesIn(test::kAllBackends),
                         test::backend_name);

}  // namespace
}  // namespace wxa
