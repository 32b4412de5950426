// SPDX-License-Identifier: MIT
// One commit of a batch, as named steps: validate, sort, coalesce, stage,
// budget, barrier decision, protection passes around the content copy,
// barrier, bookkeeping; and the rollback that undoes a failed one. Every
// permission change of a chunk comes through here.
//
// Layering: layer 5 (the commit engine); includes arena_impl.hpp and below.
// A new rule for what a commit does goes into one of the steps below.
#pragma once

#include <cstddef>
#include <mutex>

#include "arena_impl.hpp"

namespace wxa::detail {

/// Applies one batch with the arena's lock held (see
/// ArenaImpl::commit_locked()). Made, run once and dropped.
class Commit {
 public:
  using Item = ArenaImpl::Item;
  using Run = ArenaImpl::Run;
  using Op = ArenaImpl::Op;
  using WriteSpan = ArenaImpl::WriteSpan;

  Commit(ArenaImpl& arena, const Op* ops, std::size_t n, CommitFlags flags,
         ArenaImpl::Scratch& s, std::unique_lock<std::mutex>* lock,
         const ArenaImpl::WriteSpan* spans = nullptr,
         std::size_t span_count = 0) noexcept;
  Commit(const Commit&) = delete;
  Commit& operator=(const Commit&) = delete;

  /// Runs every step; sets `busy`, changing nothing, when a chunk of the
  /// batch is in another commit's flight. May throw std::bad_alloc before
  /// anything changed.
  [[nodiscard]] Result<CommitReport> run(bool& busy);

 private:
  // The steps, in order.
  [[nodiscard]] Result<void> validate(bool& busy);  // 1
  [[nodiscard]] Result<void> sort();                // 2
  [[nodiscard]] Result<void> check_spans(bool& busy);
  void coalesce();  // 3
  void reserve_quarantine();
  void plan_content_items();
  [[nodiscard]] Result<void> stage_unseals();
  [[nodiscard]] Result<void> check_budget();       // 4
  void decide_barrier();                           // 5
  [[nodiscard]] Result<void> protect_and_write();  // 6
  [[nodiscard]] Result<void> write_content();
  [[nodiscard]] Result<void> issue_barrier();  // 7
  void record();                               // 8

  // What the steps share.
  void set_all(bool target) noexcept;
  void unstage_unseals() noexcept;
  void flush_code() noexcept;
  // The protection of a page of `run` in view v, by phase: 0 before the
  // commit, 1 between its two passes, 2 after (a callable for the region).
  [[nodiscard]] auto acc(const Run& run, int phase) const noexcept;
  void undo_runs(std::size_t runs, int cur, int want) noexcept;
  void rollback(std::size_t removed, bool written, std::size_t added) noexcept;
  void resync_after_rewrite() noexcept;
  [[nodiscard]] const void* chunk_of_page(const void* page) const noexcept;
  // The first chunk the commit touches, to name in an error.
  [[nodiscard]] const void* first_chunk() const noexcept;
  [[nodiscard]] Result<void> apply_pass(unsigned pass,
                                        std::size_t& done) noexcept;

  ArenaImpl& a_;
  Region& region_;
  PageBackend& backend_;
  ContentWriter* const writer_;  // null where the owner writes the pages
  const Op* const ops_;
  const std::size_t n_;
  const CommitFlags flags_;
  ArenaImpl::Scratch& s_;
  std::unique_lock<std::mutex>* const lock_;
  // Bytes of executable chunks to overwrite (only where content is copied
  // in: none elsewhere).
  const ArenaImpl::WriteSpan* const spans_;
  const std::size_t span_count_;
  CommitReport report_;
  std::size_t releases_ = 0;  // chunks the commit retires
  bool patches_ = false;      // it patches live code
  bool barrier_ = false;      // other threads need a barrier
  BarrierEpoch epoch_ = 0;    // the barrier count when it started
  // The epoch pages that stop being executable carry (see record()).
  BarrierEpoch revoked_epoch_ = 0;
  std::size_t removed_ = 0, added_ = 0;  // runs done by each pass
};

}  // namespace wxa::detail
