// SPDX-License-Identifier: MIT
// perf map lines: written for real JIT code and read back from the file.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "support/native_code.hpp"
#include "wxarena/wxarena.hpp"

namespace {

bool file_has_line(const std::string& path, const std::string& want) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line))
    if (line == want) return true;
  return false;
}

TEST(PerfMap, NamesPublishedFunctions) {
  wxa::Options options;
  options.reserve_bytes = 8 << 20;
  wxa::Result<wxa::Arena> arena = wxa::Arena::create(options);
  ASSERT_TRUE(arena) << arena.error().to_string();
  wxa::Result<wxa::CodeHeap> heap = wxa::CodeHeap::create(*arena);
  ASSERT_TRUE(heap);
  constexpr std::size_t size = wxa::test::return_imm_size;
  wxa::Result<wxa::Function> f = heap->allocate(size);
  ASSERT_TRUE(f);
  ASSERT_EQ(wxa::test::write_return_imm(f->rw, 9), size);
  ASSERT_TRUE(heap->publish());
  ASSERT_EQ(f->entry<int()>()(), 9);

  ASSERT_TRUE(wxa::perf_map_add(f->rx, size, "jit::answer\nnine"));
  std::ostringstream want;  // start and size in hex, as perf reads them
  want << std::hex << reinterpret_cast<std::uintptr_t>(f->rx) << ' ' << size
       << " jit::answer nine";
  EXPECT_TRUE(file_has_line(wxa::perf_map_path(), want.str()))
      << "no line '" << want.str() << "' in " << wxa::perf_map_path();
  EXPECT_EQ(wxa::perf_map_add(nullptr, 6, "x").error().code(),
            wxa::Errc::null_pointer);
  EXPECT_EQ(wxa::perf_map_add(f->rx, 0, "x").error().code(),
            wxa::Errc::zero_size);
  std::remove(wxa::perf_map_path().c_str());
}

}  // namespace
