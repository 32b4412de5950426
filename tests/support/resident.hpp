// SPDX-License-Identifier: MIT
// Resident pages of a range, by mincore(2) (Linux tests only).
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <vector>

#include "support/arena_util.hpp"

namespace wxa::test {

/// Resident pages of [p, p + bytes), or 0 where mincore(2) refuses.
inline std::size_t resident(const void* p, std::size_t bytes) {
  const std::size_t ps = os_page_size();
  std::vector<unsigned char> vec((bytes + ps - 1) / ps);
  if (::mincore(const_cast<void*>(p), bytes, vec.data()) != 0) return 0;
  std::size_t n = 0;
  for (unsigned char v : vec) n += v & 1;
  return n;
}

}  // namespace wxa::test
