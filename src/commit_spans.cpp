// SPDX-License-Identifier: MIT
// The quick commit: one that only overwrites bytes of executable chunks
// (spans: a CodeHeap's functions appended to its last page, and traps over
// released ones), which is what a JIT publishing one function at a time
// commits. No transition, protection change, quarantine or barrier is
// involved, so none of the commit's steps (commit.hpp) but the checks and
// the write apply: the backend writes the spans straight, without a plan,
// where they fit its quick way; else the usual commit does the same work.
// (Appended code needs a barrier where cores may fetch stale instructions,
// AArch64: the usual commit takes it there.)
//
// Layering: layer 5, with commit.cpp; includes arena_impl.hpp and below.
#include "arena_impl.hpp"
#include "pal/cpu.hpp"

namespace wxa::detail {

Result<std::uint32_t> ArenaImpl::span_chunk(const WriteSpan& t,
                                            bool& busy) const noexcept {
  const std::ptrdiff_t i = region_.index_of(t.rx, false);
  if (i < 0) return Error(Errc::foreign_pointer, 0, t.rx);
  const std::uint32_t head = region_.head(static_cast<std::size_t>(i));
  const void* chunk = region_.rx_page(head);
  if (region_.state(static_cast<std::size_t>(i)) != PageState::executable)
    return Error(Errc::illegal_transition, 0, chunk);
  if (region_.flags(head) & kInFlight) {
    busy = true;
    return Error(Errc::illegal_transition, 0, chunk);
  }
  const auto offset =
      static_cast<std::size_t>(static_cast<const std::byte*>(t.rx) -
                               static_cast<const std::byte*>(chunk));
  const std::size_t bytes = std::size_t{region_.length(head)}
                            << region_.page_shift();
  if (t.size == 0 || t.size > bytes - offset)
    return Error(Errc::out_of_bounds, 0, chunk);
  return head;
}

Result<CommitReport> ArenaImpl::commit_spans(std::unique_lock<std::mutex>& lock,
                                             const WriteSpan* spans,
                                             std::size_t count,
                                             bool& taken) noexcept {
  ContentWriter* const writer = quick_writer_;
  SpanWrite w[kMaxQuickSpans];
  // (A region over its VMA budget refuses every commit: the usual one
  // says so.)
  if (!writer || count > kMaxQuickSpans || over_budget()) return CommitReport{};
  // Code appended where other cores may fetch stale instructions needs the
  // barrier, which the usual commit issues (and undoes the write if it
  // fails).
  if (kStaleFetchAcrossCores && barrier_registered_ &&
      spans_carry_code(spans, count))
    return CommitReport{};
  for (std::size_t k = 0; k < count; ++k) {
    bool busy = false;
    Result<std::uint32_t> head = span_chunk(spans[k], busy);
    if (!head) {
      taken = !busy;  // in another commit's flight: the usual one waits
      return head.error();
    }
    const auto offset = static_cast<std::uint32_t>(
        static_cast<const std::byte*>(spans[k].rx) - region_.rx_page(*head));
    w[k] = SpanWrite{*head, region_.length(*head), offset, spans[k].size,
                     spans[k].data};
  }
  if (!writer->spans_fit(w, count)) return CommitReport{};
  taken = true;
  // Written without the lock, as a planned commit's content is: the
  // chunks are in flight meanwhile (a commit naming one waits).
  for (std::size_t k = 0; k < count; ++k)
    region_.add_flags(w[k].head, w[k].head + 1, kInFlight);
  lock.unlock();
  SyscallCounts io;
  const Result<void> r = writer->write_spans(w, count, io);
  relock(lock);
  for (std::size_t k = 0; k < count; ++k)
    region_.clear_flags(w[k].head, w[k].head + 1, kInFlight);
  if (waiting_) flight_done_.notify_all();
  add_counts(sys_, io);
  if (!r) return make_error(r.error(), spans[0].rx);
  region_.ops().after_commit(sys_);
  ++commits_;
  CommitReport report;
  report.writes = static_cast<std::size_t>(io.write);
  return report;
}

}  // namespace wxa::detail
