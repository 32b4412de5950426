// SPDX-License-Identifier: MIT
// The small value types shared by the public API and the platform layer:
// the backend kinds, the protection of a view, and system call counts.
//
// Layering: includes nothing of wxarena's. arena.hpp and the platform
// layer (src/pal/pal.hpp) both include it, so that the platform layer
// never includes the arena's header.
#pragma once

#include <cstdint>
#include <string_view>

namespace wxa {

/// How chunks get their permissions.
enum class Backend : std::uint8_t {
  automatic,     ///< probe once: kernel_write where a memfd may be mapped
                 ///< executable, else protect, else dual_map, else
                 ///< Errc::not_supported
  protect,       ///< one private anonymous mapping, flipped with mprotect
  dual_map,      ///< a memfd with a separate executable view and writable
                 ///< views that exist only while a chunk is writable
  kernel_write,  ///< a memfd mapped once read+execute and never writable:
                 ///< chunks are written in staging memory and the kernel
                 ///< copies them in (pwritev) at commit
};

/// The kernel protection wxarena expects on a page of one view.
enum class Access : std::uint8_t { none, read, read_write, read_execute };

[[nodiscard]] std::string_view to_string(Backend backend) noexcept;
[[nodiscard]] std::string_view to_string(Access access) noexcept;

/// System calls made by an arena, by kind. Failed calls count too.
struct SyscallCounts {
  std::uint64_t mmap = 0, munmap = 0, mprotect = 0, madvise = 0, memfd = 0,
                membarrier = 0, other = 0;
  std::uint64_t write = 0;  ///< pwritev into the code's memfd (kernel_write)
  [[nodiscard]] std::uint64_t total() const noexcept {
    return mmap + munmap + mprotect + madvise + memfd + membarrier + other +
           write;
  }
};

}  // namespace wxa
