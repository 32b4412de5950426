// SPDX-License-Identifier: MIT
// Free runs of pages by start index, coalesced: the arena's open and unused
// page lists.
//
// Layering: layer 1 helpers over metadata containers (meta.hpp).
#pragma once

#include <cstdint>

#include "meta.hpp"

namespace wxa::detail {

// Free runs of pages by start index, coalesced (metadata helpers).
using RunMap = MetaMap<std::uint32_t, std::uint32_t>;
/// Inserts [a, a+len) into `runs`, merging with neighbours. May throw
/// std::bad_alloc (only when no neighbour merges).
void insert_run(RunMap& runs, std::uint32_t a, std::uint32_t len);
/// Removes the first `len` pages of the run at `it`.
void carve_front(RunMap& runs, RunMap::iterator it, std::uint32_t len) noexcept;
// Splits the run at `it` at page `a` (inside it) into two adjacent runs and
// returns the one starting at `a` (`it` itself if it starts there). May
// throw std::bad_alloc, before anything changed.
RunMap::iterator split_run(RunMap& runs, RunMap::iterator it, std::uint32_t a);

}  // namespace wxa::detail
