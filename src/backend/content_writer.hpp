// SPDX-License-Identifier: MIT
// The content-writing protocol: how a backend through which a commit's bytes
// reach the code (kernel_write: the kernel copies them in) plans, writes,
// finishes and undoes those writes. Only such a backend implements it; the
// others' owners write the pages themselves, and the commit never asks.
//
// Layering: layer 3 (with the backends); includes the platform layer and
// the page states only.
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend/page_state.hpp"
#include "pal/pal.hpp"

namespace wxa::detail {

/// One chunk whose bytes a commit changes (kernel_write only: the other
/// backends' chunks are written in place by their owner).
struct ContentItem {
  std::uint32_t head, pages;
  PageState from, to;
  /// A patch: `size` bytes at `data` go to `offset` within the chunk.
  const std::byte* data = nullptr;
  std::uint32_t offset = 0, size = 0;
  /// A patch of traps (`data` null): `size` bytes at `offset` of an
  /// executable chunk (a released CodeHeap function) become traps; the
  /// rest of the chunk stays as it is.
  bool traps = false;
  /// From a span of the commit (traps or appended code in a chunk the
  /// batch does not name), not from one of its operations.
  bool span = false;
};

/// Bytes of an executable chunk that a commit of nothing else overwrites:
/// `size` bytes at `offset` within the chunk at `head` (`pages` long),
/// with traps (`data` null) or with `data`.
struct SpanWrite {
  std::uint32_t head, pages;
  std::uint32_t offset, size;
  const std::byte* data;
};
/// The most spans a quick write takes (ContentWriter::spans_fit()).
inline constexpr std::size_t kMaxQuickSpans = 8;

/// A commit's writes into the code, as a backend that writes content plans
/// them (opaque to the arena).
class ContentPlan {
 public:
  virtual ~ContentPlan() = default;
};

/// The protocol, in the order a commit calls it: plan_content(), then
/// write_planned() and finish_content(); undo_content() if the commit fails
/// after them. PageBackend::content_writer() finds it.
class ContentWriter {
 public:
  /// True when plan_content(), write_planned() and finish_content() touch
  /// only the plan's own chunks and what never changes after init(), so
  /// the arena may call them without its lock once those chunks are marked
  /// in flight.
  [[nodiscard]] virtual bool plans_without_lock() const noexcept = 0;
  /// Turns a commit's items into a plan of writes: staged chunks that are
  /// sealed, traps over chunks that are retired or stop being read-only
  /// data, patches. `plan` is reused from commit to commit (made here when
  /// null; freed with destroy_plan()). Allocates; runs before any system
  /// call of the commit, under the arena's lock unless plans_without_lock().
  [[nodiscard]] virtual Result<void> plan_content(
      ContentPlan*& plan, const ContentItem* items,
      std::size_t count) noexcept = 0;
  /// Copies a plan's bytes into the code. Runs without the arena's lock
  /// where plans_without_lock() says so: it touches only the plan and the
  /// pages of the plan's chunks, which no other commit may name meanwhile.
  /// On failure what was written is restored before it returns.
  [[nodiscard]] virtual Result<void> write_planned(
      ContentPlan& plan, SyscallCounts& n) noexcept = 0;
  /// After write_planned(), with or without the lock as it: the backend's
  /// own records of what the plan's pages hold (kept per page, so touching
  /// only those), and fresh pages mapped in. On failure the writes are
  /// undone before it returns (undo_content(), here without the lock).
  /// After success, undo_content() (then under the lock) restores it all.
  [[nodiscard]] virtual Result<void> finish_content(
      ContentPlan& plan, const ContentItem* items, std::size_t count,
      SyscallCounts& n) noexcept = 0;
  /// Restores what a finished plan changed; a failure is fatal.
  virtual void undo_content(ContentPlan& plan, SyscallCounts& n) noexcept = 0;
  /// The commit that used `plan` succeeded: its undo records are no longer
  /// needed (large ones are freed, not kept for the next commit).
  virtual void forget_undo(ContentPlan& plan) noexcept = 0;
  virtual void destroy_plan(ContentPlan* plan) noexcept = 0;

  /// The quick way for a commit that only overwrites bytes of executable
  /// chunks (a CodeHeap publishing functions appended to its last page):
  /// no plan. True when `count` spans, in address order, not overlapping,
  /// are few and small enough for it; asked under the arena's lock.
  [[nodiscard]] virtual bool spans_fit(const SpanWrite* spans,
                                       std::size_t count) const noexcept = 0;
  /// Writes spans that fit, as write_planned() and finish_content() would
  /// (one call per contiguous stretch, the backend's records, cache
  /// maintenance), without the lock once their chunks are in flight. On
  /// failure what was written is restored before it returns (fatal if it
  /// cannot be).
  [[nodiscard]] virtual Result<void> write_spans(const SpanWrite* spans,
                                                 std::size_t count,
                                                 SyscallCounts& n) noexcept = 0;

 protected:
  ContentWriter() noexcept = default;
  ContentWriter(const ContentWriter&) = default;
  ContentWriter& operator=(const ContentWriter&) = default;
  ~ContentWriter() = default;  // destroyed as the backend it is part of
};

}  // namespace wxa::detail
