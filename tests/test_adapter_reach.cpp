// SPDX-License-Identifier: MIT
// What the adapters rely on for reach, on every backend with default
// options: a chunk's executable address and the writable view of a chunk
// allocated right after it (where a JIT linker puts an allocation's code
// and its read-write data) lie within the reach of PC-relative data
// references: x86-64's 32-bit displacements (+-2 GiB, the small code
// model), AArch64's ADRP (+-4 GiB). Checked against 2 GiB on both, since
// the default 1 GiB reservation keeps them about one reservation apart.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "support/arena_util.hpp"
#include "support/backends.hpp"
#include "wxarena/arena.hpp"

namespace wxa {
namespace {

using test::Ok;

constexpr std::uintptr_t kReach = std::uintptr_t{1} << 31;

std::uintptr_t address(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p);
}

class AdapterReach : public ::testing::TestWithParam<Backend> {};

TEST_P(AdapterReach, CodeAndTheNextChunksDataAreWithinReach) {
  Options options;  // as a user gets it, but the backend
  if (GetParam() != Backend::automatic) {
    WXA_SKIP_IF_UNAVAILABLE(GetParam());
    options.backend = GetParam();
  }
  Result<Arena> arena = Arena::create(options);
  ASSERT_TRUE(Ok(arena));
  // The arena's two ranges: the reservation and the writable views
  // (dual_map's second range, kernel_write's staging), placed side by side.
  const std::uintptr_t code = address(arena->range().data());
  const std::uintptr_t code_end = code + arena->range().size();
  const std::uintptr_t rw = address(arena->rw_range().data());
  const std::uintptr_t rw_end = rw + arena->rw_range().size();
  const std::uintptr_t gap =
      rw >= code_end ? rw - code_end : (code >= rw_end ? code - rw_end : 0);
  EXPECT_LE(gap, 64 * arena->page_size())
      << "the writable views lie apart from the reservation";

  // Allocations as a JIT linker makes them: code, read-only data, then
  // read-write data, several times; each allocation's span stays in reach.
  for (int round = 0; round < 16; ++round) {
    Result<Chunk> text = arena->allocate(3 * arena->page_size());
    Result<Chunk> rodata = arena->allocate(arena->page_size());
    Result<Chunk> data = arena->allocate(2 * arena->page_size());
    ASSERT_TRUE(Ok(text) && Ok(rodata) && Ok(data));
    const std::uintptr_t points[] = {
        address(text->rx()),        address(text->rx()) + text->size(),
        address(rodata->rx()),      address(rodata->rx()) + rodata->size(),
        address(data->rw().data()), address(data->rw().data()) + data->size()};
    const std::uintptr_t lo =
        *std::min_element(std::begin(points), std::end(points));
    const std::uintptr_t hi =
        *std::max_element(std::begin(points), std::end(points));
    EXPECT_LE(hi - lo, kReach) << "round " << round;
    ASSERT_TRUE(Ok(arena->seal(*text)));
    ASSERT_TRUE(Ok(arena->seal(*rodata, Seal::read_only)));
    if (round % 3 == 0) {  // some allocations go away, as modules do
      ASSERT_TRUE(Ok(arena->release(*text)));
      ASSERT_TRUE(Ok(arena->release(*rodata)));
      ASSERT_TRUE(Ok(arena->release(*data)));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, AdapterReach,
                         ::testing::Values(Backend::automatic, Backend::protect,
                                           Backend::dual_map,
                                           Backend::kernel_write),
                         test::backend_name);

}  // namespace
}  // namespace wxa
