// SPDX-License-Identifier: MIT
// The platform layer's shared middle: what every OS family's file provides
// to pal/common.cpp, which writes the rest of the contract once (fatal(),
// number formatting, errno translation, metadata allocation).
//
// Layering: layer 2, inside src/pal/ only; nothing above includes it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace wxa::detail {

/// Writes up to `len` bytes to the standard error stream with one call:
/// how many were written, 0 to retry (interrupted), or -1 on failure.
/// Never allocates. One per OS family.
[[nodiscard]] std::ptrdiff_t write_stderr_some(const char* s,
                                               std::size_t len) noexcept;

/// How an OS error number is named in messages ("errno", or "error").
/// One per OS family.
extern const char* const kOsErrorName;

/// A loaded allocator for metadata (mimalloc), or none.
struct MetaFunctions {
  void* (*malloc)(std::size_t) = nullptr;
  void* (*calloc)(std::size_t, std::size_t) = nullptr;
  void (*free)(void*) = nullptr;
  /// Optional: gives what it keeps for reuse back to the OS, at once.
  void (*collect)() = nullptr;
};
/// The allocator metadata comes from, loaded on first use: its functions
/// are all null where there is none (the C library's malloc is used).
/// One per OS family.
[[nodiscard]] const MetaFunctions& loaded_meta_functions() noexcept;

/// Writes all of [s, s + len) to stderr, without allocating; gives up
/// silently (on the way to abort(), nothing more can be done).
void write_stderr(const char* s, std::size_t len) noexcept;

/// Writes "0x..." for `v` at `out` (room for 18 bytes); returns its length.
std::size_t format_hex(char* out, std::uintptr_t v) noexcept;
/// Writes `v` (>= 0) in decimal at `out` (room for 10 bytes); returns its
/// length.
std::size_t format_decimal(char* out, int v) noexcept;

}  // namespace wxa::detail
