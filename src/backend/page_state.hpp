// SPDX-License-Identifier: MIT
// The states a page moves between and the views it is seen through: the
// words the backends, the region and the arena share.
//
// Layering: layer 3 (with the backends); includes only public types.
#pragma once

#include <cstdint>

#include "wxarena/arena.hpp"

namespace wxa::detail {

/// The state of one page. `unused` and `open` are both free: `open` pages
/// are already prepared (writable in protect and dual_map, mapped in
/// kernel_write), waiting to be handed out without a system call.
enum class PageState : std::uint8_t {
  unused,      // inaccessible, nothing committed
  open,        // free, prepared
  writable,    // in a writable chunk
  executable,  // in an executable chunk
  read_only,   // in a read-only chunk
  retired,     // released, in quarantine; never runnable as its old code
};

inline constexpr int kPageStates = 6;

/// The public State a page state shows as.
constexpr State to_public(PageState s) noexcept {
  switch (s) {
    case PageState::writable:
      return State::writable;
    case PageState::executable:
      return State::executable;
    case PageState::read_only:
      return State::read_only;
    case PageState::retired:
      return State::retired;
    default:
      return State::free;
  }
}

/// One view of the reserved pages. Every backend has `rx` (where code runs
/// and chunks are named); dual_map also has `rw`, a second mapping of the
/// same pages at the same offsets.
enum class View : std::uint8_t { rx = 0, rw = 1 };

}  // namespace wxa::detail
