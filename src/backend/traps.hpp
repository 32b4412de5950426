// SPDX-License-Identifier: MIT
// Trap pages for kernel_write: the one page of trap instructions its writes
// copy from, and how much of a staged chunk is more than traps.
#pragma once

#include <cstddef>

namespace wxa::detail {

/// One page of trap instructions for every arena of the process (the page
/// size is the same for all); nullptr if `page` is larger than any known.
[[nodiscard]] const std::byte* shared_trap_page(std::size_t page) noexcept;

/// The length of `p` up to the end of its last 64-byte block that is not
/// all traps (as `trap_page` holds them): what a seal must copy of a staged
/// chunk.
[[nodiscard]] std::size_t used_prefix(const std::byte* p, std::size_t len,
                                      const std::byte* trap_page) noexcept;

}  // namespace wxa::detail
