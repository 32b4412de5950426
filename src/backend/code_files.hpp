// SPDX-License-Identifier: MIT
// The memfds behind kernel_write's code, one per lane, and where a byte
// offset in the reservation lands in them; and the quick way to write a
// few spans of code through them, without a plan (a CodeHeap publishing
// functions appended to its last page: one call).
//
// Layering: layer 3 (with the backends); includes the platform layer and
// the content-writing protocol only.
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend/content_writer.hpp"
#include "pal/pal.hpp"

namespace wxa::detail {

struct CodeFiles {
  static constexpr std::size_t kMaxLanes = 64;
  // What fits the quick way: at most this many spans and bytes.
  static constexpr std::size_t kQuickSpans = kMaxQuickSpans;
  static constexpr std::size_t kQuickBytes = 4096;

  Pal* pal = nullptr;
  std::byte* rx_base = nullptr;      // the executable view
  const std::byte* traps = nullptr;  // one page of trap instructions
  unsigned shift = 0;                // a page: 1 << shift bytes
  unsigned lane_shift = 0;           // pages per lane: 1 << lane_shift
  std::size_t lane_count = 1;
  SharedHandle shm[kMaxLanes];  // made when a lane is first used

  // Byte offsets in the reservation: the lane's memfd, the offset in it,
  // whether a lane starts there (past the first), and where the lane ends.
  [[nodiscard]] SharedHandle lane_of(std::size_t offset) const noexcept {
    return shm[offset >> (lane_shift + shift)];
  }
  [[nodiscard]] std::size_t local_offset(std::size_t offset) const noexcept {
    return offset & ((std::size_t{1} << (lane_shift + shift)) - 1);
  }
  [[nodiscard]] bool lane_start(std::size_t offset) const noexcept {
    return lane_count > 1 && offset != 0 && local_offset(offset) == 0;
  }
  [[nodiscard]] std::size_t lane_end(std::size_t offset) const noexcept {
    const unsigned s = lane_shift + shift;
    return ((offset >> s) + 1) << s;
  }
  [[nodiscard]] std::size_t offset_of(const SpanWrite& w) const noexcept {
    return (std::size_t{w.head} << shift) + w.offset;
  }

  // ContentWriter::spans_fit() and write_spans(), but for the backend's
  // own records (extents).
  [[nodiscard]] bool spans_fit(const SpanWrite* spans,
                               std::size_t count) const noexcept;
  [[nodiscard]] Result<void> write_spans(const SpanWrite* spans,
                                         std::size_t count,
                                         SyscallCounts& n) const noexcept;

 private:
  // Puts back what the first `count` spans replaced, one write each, with
  // the cache maintenance of a forward write; fatal on failure (the code
  // would differ from what the arena says it is).
  void restore_spans(const SpanWrite* spans, std::size_t count,
                     const std::byte* saved, SyscallCounts& n) const noexcept;
};

}  // namespace wxa::detail
