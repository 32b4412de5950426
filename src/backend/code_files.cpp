// SPDX-License-Identifier: MIT
#include "backend/code_files.hpp"

#include <algorithm>
#include <cstring>

namespace wxa::detail {

bool CodeFiles::spans_fit(const SpanWrite* spans,
                          std::size_t count) const noexcept {
  if (count == 0 || count > kQuickSpans) return false;
  const unsigned lane = lane_shift + shift;
  const std::size_t first = offset_of(spans[0]) >> lane;
  std::size_t bytes = 0, end = 0;
  for (std::size_t k = 0; k < count; ++k) {
    const std::size_t at = offset_of(spans[k]);
    if ((k && at < end) || lane_end(at) < at + spans[k].size ||
        at >> lane != first)
      return false;
    end = at + spans[k].size;
    bytes += spans[k].size;
  }
  // (A trap span of up to a page is at most two pieces of the trap page.)
  return bytes <= std::min(kQuickBytes, std::size_t{1} << shift);
}

Result<void> CodeFiles::write_spans(const SpanWrite* spans, std::size_t count,
                                    SyscallCounts& n) const noexcept {
  // What the spans replace, for undo, and their pieces: data, or traps in
  // phase with the address (as the trap page is), at most two pieces.
  const std::size_t page = std::size_t{1} << shift;
  std::byte saved[kQuickBytes];
  WritePiece pieces[2 * kQuickSpans];
  std::size_t piece_count = 0, kept = 0;
  for (std::size_t k = 0; k < count; ++k) {
    const SpanWrite& w = spans[k];
    const std::size_t at = offset_of(w);
    std::memcpy(saved + kept, rx_base + at, w.size);
    kept += w.size;
    if (w.data) {
      // Data right after the last piece's in memory (the shadow): one piece.
      WritePiece* last = piece_count ? &pieces[piece_count - 1] : nullptr;
      if (last &&
          static_cast<const std::byte*>(last->data) + last->bytes == w.data &&
          k && offset_of(spans[k - 1]) + spans[k - 1].size == at)
        last->bytes += w.size;
      else
        pieces[piece_count++] = WritePiece{w.data, w.size};
      continue;
    }
    const std::size_t phase = at & (page - 1);
    const std::size_t first = std::min<std::size_t>(page - phase, w.size);
    pieces[piece_count++] = WritePiece{traps + phase, first};
    if (first < w.size)
      pieces[piece_count++] = WritePiece{traps, w.size - first};
  }
  // One write per contiguous stretch of spans.
  std::size_t piece = 0;
  for (std::size_t span = 0; span < count;) {
    const std::size_t at = offset_of(spans[span]);
    std::size_t end_span = span + 1, bytes = spans[span].size;
    while (end_span < count && offset_of(spans[end_span]) == at + bytes)
      bytes += spans[end_span++].size;
    std::size_t end_piece = piece;
    for (std::size_t covered = 0; covered < bytes;)
      covered += pieces[end_piece++].bytes;
    if (Result<void> r =
            pal->write_shared(lane_of(at), local_offset(at), pieces + piece,
                              end_piece - piece, n);
        !r) {
      restore_spans(spans, end_span, saved, n);  // may be written in part
      return r.error();
    }
    span = end_span;
    piece = end_piece;
  }
  // The kernel wrote through its own mapping: the executable view gets its
  // cache maintenance here (AArch64), as after a planned write.
  for (std::size_t k = 0; k < count; ++k)
    pal->flush_icache(rx_base + offset_of(spans[k]), spans[k].size);
  return {};
}

void CodeFiles::restore_spans(const SpanWrite* spans, std::size_t count,
                              const std::byte* saved,
                              SyscallCounts& n) const noexcept {
  for (std::size_t k = 0; k < count; ++k) {
    const std::size_t at = offset_of(spans[k]);
    const WritePiece piece{saved, spans[k].size};
    if (!pal->write_shared(lane_of(at), local_offset(at), &piece, 1, n))
      fatal("cannot restore code after a failed commit", rx_base + at, 0);
    pal->flush_icache(rx_base + at, spans[k].size);
    saved += spans[k].size;
  }
}

}  // namespace wxa::detail
