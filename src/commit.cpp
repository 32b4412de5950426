// SPDX-License-Identifier: MIT
// The commit engine: a batch validated, sorted, coalesced, protected,
// copied in, flushed, fenced with a barrier, and rolled back on failure, as
// the named steps of Commit (commit.hpp); and patches where the backend
// cannot write live code.
#include "commit.hpp"

#include <algorithm>
#include <cstring>
#include <new>

#include "error.hpp"
#include "pal/cpu.hpp"

namespace wxa::detail {

Result<std::uint32_t> ArenaImpl::validate(const Batch::Op& op, PageState& from,
                                          PageState& to) const noexcept {
  const void* rx = op.rx;
  if (!rx) return Error(Errc::null_pointer);
  const std::ptrdiff_t i = region_.index_of(rx, false);
  if (i < 0) return Error(Errc::foreign_pointer, 0, rx);
  const auto page = static_cast<std::size_t>(i);
  from = region_.state(page);
  if (from == PageState::unused || from == PageState::open)
    return Error(Errc::not_allocated, 0, rx);
  const std::uint32_t head = region_.head(page);
  if (op.kind == OpKind::patch) {
    // Any address inside an executable chunk (arena.hpp: read-only data
    // is not code to patch); the bytes must stay inside it.
    const void* chunk = region_.rx_page(head);
    if (from != PageState::executable)
      return Error(Errc::illegal_transition, 0, chunk);
    if (op.size == 0) return Error(Errc::zero_size, 0, chunk);
    const auto offset = static_cast<std::size_t>(
        static_cast<const std::byte*>(rx) - region_.rx_page(head));
    const std::size_t bytes = std::size_t{region_.length(head)}
                              << region_.page_shift();
    if (op.size > bytes - offset) return Error(Errc::out_of_bounds, 0, chunk);
    to = from;
    return head;
  }
  if (rx != region_.rx_page(head)) return Error(Errc::interior_pointer, 0, rx);
  switch (op.kind) {
    case OpKind::seal_execute:
    case OpKind::seal_read_only:
      if (from != PageState::writable)
        return Error(Errc::illegal_transition, 0, rx);
      to = op.kind == OpKind::seal_execute ? PageState::executable
                                           : PageState::read_only;
      break;
    case OpKind::unseal:
      if (from != PageState::executable && from != PageState::read_only)
        return Error(Errc::illegal_transition, 0, rx);
      to = PageState::writable;
      break;
    case OpKind::release:
      if (from == PageState::retired) return Error(Errc::double_release, 0, rx);
      to = PageState::retired;
      break;
    case OpKind::patch:
      break;
  }
  return head;
}

Result<void> ArenaImpl::sort_items(MetaVector<Item>& items) const {
  std::sort(items.begin(), items.end(),
            [](const Item& x, const Item& y) { return x.head < y.head; });
  for (std::size_t k = 1; k < items.size(); ++k)
    if (items[k].head == items[k - 1].head)
      return Error(Errc::duplicate_in_batch, 0, region_.rx_page(items[k].head));
  return {};
}

Result<CommitReport> ArenaImpl::commit(const Batch::Op* ops, std::size_t n,
                                       CommitFlags flags,
                                       const WriteSpan* spans,
                                       std::size_t span_count) noexcept {
  if (foreign_process()) return Error(Errc::wrong_process);  // before the lock
  // The caller asks for every thread to serialise; without membarrier
  // SYNC_CORE (or its registration) nothing here can do that: say so
  // before anything changes rather than return without it.
  if (flags == CommitFlags::barrier && !barrier_registered_)
    return Error(Errc::not_supported);
  std::unique_lock lock = acquire();
  // Spans only (a CodeHeap publishing one function): the quick way, where
  // the backend has one for them; it needs no scratch.
  if (n == 0 && span_count && flags != CommitFlags::barrier) {
    bool taken = false;
    Result<CommitReport> r = commit_spans(lock, spans, span_count, taken);
    if (taken) return r;
  }
  Scratch* s = take_scratch();
  if (!s) return Error(Errc::out_of_memory, kNoMemory);
  // Given back under the lock (destroyed before `lock`).
  struct GiveBack {
    ArenaImpl* arena;
    Scratch* s;
    ~GiveBack() { arena->give_scratch(s); }
  } give_back{this, s};
  try {
    if (!region_.ops().content_writer())
      for (std::size_t k = 0; k < n; ++k)
        if (ops[k].kind == OpKind::patch)
          return commit_by_unsealing(ops, n, flags, *s);
    for (;;) {
      bool busy = false;
      Result<CommitReport> r =
          commit_locked(ops, n, flags, *s, &lock, busy, spans, span_count);
      if (!busy) return r;
      // A chunk of this batch is being written by another commit: once
      // that one is done, this one starts again from the states it left.
      ++waiting_;
      flight_done_.wait(lock);
      --waiting_;
      if (foreign_process()) return Error(Errc::wrong_process);
    }
  } catch (const std::bad_alloc&) {
    // Only the scratch vectors allocate, before anything changes.
    return Error(Errc::out_of_memory, kNoMemory);
  }
}

Result<CommitReport> ArenaImpl::commit_by_unsealing(const Batch::Op* ops,
                                                    std::size_t n,
                                                    CommitFlags flags,
                                                    Scratch& s) {
  // Every transition is checked against today's states first, so that a
  // caller's error changes nothing (the commit below checks them again).
  s.items.clear();
  for (std::size_t k = 0; k < n; ++k) {
    PageState from{}, to{};
    Result<std::uint32_t> head = validate(ops[k], from, to);
    if (!head) return head.error();
    s.items.push_back(
        Item{*head, 0, from, to, static_cast<std::uint32_t>(k), false});
  }
  if (Result<void> r = sort_items(s.items); !r) return r.error();

  // 1. Unseal the patched chunks (their pages stop being executable).
  // (Nothing is in flight: this backend's commits keep the lock.)
  bool busy = false;
  split_.clear();
  patch_saved_.clear();
  std::size_t saved = 0;
  for (std::size_t k = 0; k < n; ++k)
    if (ops[k].kind == OpKind::patch) {
      const std::uint32_t head =
          region_.head(static_cast<std::size_t>(region_.index_of(ops[k].rx)));
      split_.push_back(Batch::Op{region_.rx_page(head), OpKind::unseal});
      saved += ops[k].size;
    }
  patch_saved_.resize(saved);
  const std::size_t unseals = split_.size();
  // The seals back, then every other transition, in the second commit.
  for (std::size_t k = 0; k < n; ++k)
    if (ops[k].kind != OpKind::patch) split_.push_back(ops[k]);
  MetaVector<PageState> was;
  was.reserve(unseals);
  for (std::size_t k = 0; k < unseals; ++k)
    was.push_back(region_.state(
        static_cast<std::size_t>(region_.index_of(split_[k].rx))));
  for (std::size_t k = 0; k < unseals; ++k)
    split_.push_back(Batch::Op{split_[k].rx, was[k] == PageState::executable
                                                 ? OpKind::seal_execute
                                                 : OpKind::seal_read_only});
  Result<CommitReport> first =
      commit_locked(split_.data(), unseals, flags, s, nullptr, busy);
  if (!first) return first.error();

  // 2. Write, keeping what was there.
  auto write_all = [&](bool restore) noexcept {
    std::size_t at = 0;
    for (std::size_t k = 0; k < n; ++k) {
      if (ops[k].kind != OpKind::patch) continue;
      const auto i = static_cast<std::size_t>(region_.index_of(ops[k].rx));
      const std::uint32_t head = region_.head(i);
      std::byte* dst =
          region_.ops().staged(head) +
          (static_cast<const std::byte*>(ops[k].rx) - region_.rx_page(head));
      if (restore) {
        std::memcpy(dst, patch_saved_.data() + at, ops[k].size);
      } else {
        std::memcpy(patch_saved_.data() + at, dst, ops[k].size);
        std::memcpy(dst, ops[k].data, ops[k].size);
      }
      at += ops[k].size;
    }
  };
  write_all(false);

  // 3. Seal them again, with the rest of the batch. Patched code needs the
  //    barrier: other threads may have run what was there.
  Result<CommitReport> second =
      commit_locked(split_.data() + unseals, split_.size() - unseals,
                    CommitFlags::barrier, s, nullptr, busy);
  if (!second) {
    // The old bytes go back and the chunks are sealed again on their own;
    // if even that fails, code the caller published is gone: fatal.
    write_all(true);
    if (!commit_locked(split_.data() + split_.size() - unseals, unseals,
                       CommitFlags::barrier, s, nullptr, busy))
      fatal("cannot re-seal code after a failed patch",
            split_.empty() ? nullptr : split_.front().rx, 0);
    return second.error();
  }
  CommitReport report = *second;
  report.protection_calls += first->protection_calls;
  report.writes += first->writes;
  report.flushes += first->flushes;
  report.runs += first->runs;
  return report;
}

Result<CommitReport> ArenaImpl::commit_locked(
    const Batch::Op* ops, std::size_t n, CommitFlags flags, Scratch& s,
    std::unique_lock<std::mutex>* lock, bool& busy, const WriteSpan* spans,
    std::size_t span_count) {
  Commit commit(*this, ops, n, flags, s, lock, spans, span_count);
  return commit.run(busy);
}

// --- Commit -----------------------------------------------------------------

Commit::Commit(ArenaImpl& arena, const Op* ops, std::size_t n,
               CommitFlags flags, ArenaImpl::Scratch& s,
               std::unique_lock<std::mutex>* lock,
               const ArenaImpl::WriteSpan* spans,
               std::size_t span_count) noexcept
    : a_(arena),
      region_(arena.region_),
      backend_(arena.region_.ops()),
      writer_(backend_.content_writer()),
      ops_(ops),
      n_(n),
      flags_(flags),
      s_(s),
      lock_(lock),
      spans_(writer_ ? spans : nullptr),
      span_count_(writer_ ? span_count : 0) {}

Result<CommitReport> Commit::run(bool& busy) {
  if (Result<void> r = validate(busy); !r) return r.error();
  if (s_.items.empty() && span_count_ == 0) return report_;
  if (Result<void> r = sort(); !r) return r.error();
  if (Result<void> r = check_spans(busy); !r) return r.error();
  coalesce();
  reserve_quarantine();
  if (writer_) plan_content_items();
  if (Result<void> r = stage_unseals(); !r) return r.error();
  if (Result<void> r = check_budget(); !r) return r.error();
  decide_barrier();
  // Where the owner writes the pages themselves, code is made visible to
  // instruction fetch before it becomes executable.
  if (!writer_) flush_code();
  if (Result<void> r = protect_and_write(); !r) return r.error();
  if (Result<void> r = issue_barrier(); !r) return r.error();
  record();
  return report_;
}

// 1. Validate every transition against the current states, in order, so
//    the error names the first chunk at fault.
Result<void> Commit::validate(bool& busy) {
  s_.items.clear();
  s_.items.reserve(n_);
  for (std::size_t k = 0; k < n_; ++k) {
    PageState from{}, to{};
    Result<std::uint32_t> head = a_.validate(ops_[k], from, to);
    if (!head) return head.error();
    if (region_.flags(*head) & kInFlight) {
      busy = true;
      return Error(Errc::illegal_transition, 0, region_.rx_page(*head));
    }
    s_.items.push_back(Item{*head, region_.length(*head), from, to,
                            static_cast<std::uint32_t>(k), false});
  }
  return {};
}

// 2. Sort by address; a chunk named twice is a caller error.
Result<void> Commit::sort() { return a_.sort_items(s_.items); }

// Bytes to overwrite, with traps or appended code: inside executable
// chunks the batch does not name, which no other commit is writing.
Result<void> Commit::check_spans(bool& busy) {
  for (std::size_t k = 0; k < span_count_; ++k) {
    Result<std::uint32_t> head = a_.span_chunk(spans_[k], busy);
    if (!head) return head.error();
    const auto in_batch = std::lower_bound(
        s_.items.begin(), s_.items.end(), *head,
        [](const Item& x, std::uint32_t h) { return x.head < h; });
    if (in_batch != s_.items.end() && in_batch->head == *head)
      return Error(Errc::duplicate_in_batch, 0, region_.rx_page(*head));
  }
  return {};
}

// 3. Coalesce address-adjacent chunks with the same target into runs,
//    noting which runs change any protection at all.
void Commit::coalesce() {
  s_.runs.clear();
  const int views = region_.views();
  for (std::uint32_t k = 0; k < s_.items.size(); ++k) {
    const Item& it = s_.items[k];
    bool changes = false;
    for (int v = 0; v < views; ++v)
      changes |=
          region_.access(it.from, View(v)) != region_.access(it.to, View(v));
    if (!s_.runs.empty() && s_.runs.back().b == it.head &&
        s_.runs.back().to == it.to) {
      s_.runs.back().b += it.pages;
      s_.runs.back().end_item = k + 1;
      s_.runs.back().changes |= changes;
    } else {
      s_.runs.push_back(
          Run{it.head, it.head + it.pages, it.to, k, k + 1, changes});
    }
  }
}

// Room in the quarantine now: nothing may fail after the system calls.
void Commit::reserve_quarantine() {
  for (const Item& it : s_.items) {
    releases_ += it.to == PageState::retired;
    patches_ |= ops_[it.op].kind == OpKind::patch;
  }
  // (Commits in flight have room for theirs already.) Grown geometrically:
  // room for exactly this commit's would copy the whole quarantine at
  // every commit that releases.
  const std::size_t need =
      a_.quarantine_.size() + a_.in_flight_releases_ + releases_;
  if (need > a_.quarantine_.capacity())
    a_.quarantine_.reserve(std::max(need, 2 * a_.quarantine_.capacity()));
}

// What the commit writes into the code, where the backend copies it in.
void Commit::plan_content_items() {
  s_.content.clear();
  s_.content.reserve(s_.items.size() + span_count_);
  for (const Item& it : s_.items) {
    ContentItem c{it.head, it.pages, it.from, it.to};
    const Op& op = ops_[it.op];
    if (op.kind == OpKind::patch) {
      c.data = op.data;
      c.size = op.size;
      c.offset = static_cast<std::uint32_t>(
          static_cast<const std::byte*>(op.rx) - region_.rx_page(it.head));
    }
    s_.content.push_back(c);
  }
  // Released functions' bytes become traps, appended ones code, in address
  // order with the rest (the writer's plan follows it).
  if (!span_count_) return;
  for (std::size_t k = 0; k < span_count_; ++k) {
    const WriteSpan& t = spans_[k];
    const std::uint32_t head =
        region_.head(static_cast<std::size_t>(region_.index_of(t.rx)));
    ContentItem c{head, region_.length(head), PageState::executable,
                  PageState::executable};
    c.offset = static_cast<std::uint32_t>(static_cast<const std::byte*>(t.rx) -
                                          region_.rx_page(head));
    c.size = t.size;
    c.data = t.data;
    c.traps = t.data == nullptr;
    c.span = true;
    s_.content.push_back(c);
  }
  std::sort(s_.content.begin(), s_.content.end(),
            [](const ContentItem& x, const ContentItem& y) {
              return x.head != y.head ? x.head < y.head : x.offset < y.offset;
            });
}

// Writable bytes for unsealed chunks, holding their current bytes, before
// any system call (staging may run out: then nothing has changed).
Result<void> Commit::stage_unseals() {
  for (Item& it : s_.items) {
    if (it.to != PageState::writable) continue;
    Result<std::byte*> st = backend_.stage(it.head, it.pages, true);
    if (!st) {
      unstage_unseals();
      return make_error(st.error(), region_.rx_page(it.head));
    }
    it.staged = true;
  }
  return {};
}

// 4. The VMA budget, from the state map, before any system call.
Result<void> Commit::check_budget() {
  set_all(true);
  if (!a_.over_budget()) return {};
  set_all(false);
  unstage_unseals();
  return Error(Errc::vma_budget, 0, first_chunk());
}

// 5. Whether other threads need a barrier: code at an address that held
//    code before (reuse, or an unsealed chunk sealed again) may be stale
//    in other cores' pipelines, unless every core has serialised since
//    that address stopped being executable: a barrier issued after that
//    has already done this one's work, and no core can have fetched from
//    the address since. Patched code always needs one. So does all code
//    a content writer copies in where a core may fetch stale instructions
//    from another core's view (AArch64): its pages are executable while
//    written (kernel_write maps them read+execute, holding traps, from the
//    start), so a core may have fetched those traps ahead.
void Commit::decide_barrier() {
  barrier_ = flags_ == CommitFlags::barrier || patches_;
  if (kStaleFetchAcrossCores && writer_ && !barrier_)
    barrier_ = std::any_of(s_.items.begin(), s_.items.end(),
                           [](const Item& it) {
                             return it.from == PageState::writable &&
                                    it.to == PageState::executable;
                           }) ||
               ArenaImpl::spans_carry_code(spans_, span_count_);
  epoch_ = static_cast<BarrierEpoch>(a_.barriers_);
  revoked_epoch_ = epoch_;
  for (const Run& run : s_.runs) {
    if (run.to != PageState::executable) continue;
    for (std::size_t i = run.a; i < run.b && !barrier_; ++i)
      barrier_ = (region_.flags(i) & kHeldCode) && region_.revoked(i) == epoch_;
  }
}

// 6. Protection changes: access removed from every run first, then the
//    new bytes copied in (by a content writer), then access added. The state of
//    a run between the two passes: its new protection where that only
//    takes rights away, its old one elsewhere.
Result<void> Commit::protect_and_write() {
  if (Result<void> r = apply_pass(kRemove, removed_); !r) {
    const Error e = r.error();
    rollback(removed_, false, 0);
    return make_error(e, chunk_of_page(e.chunk()));
  }
  if (writer_)
    if (Result<void> r = write_content(); !r) return r;
  if (Result<void> r = apply_pass(kAdd, added_); !r) {
    const Error e = r.error();
    rollback(removed_, writer_ != nullptr, added_);
    return make_error(e, chunk_of_page(e.chunk()));
  }
  return {};
}

// Planning (the staged bytes scanned, retired code saved), the kernel's
// copy and mapping fresh pages in are the long steps: where the backend
// allows, they run without the lock, other threads' commits and
// allocations going on meanwhile. The batch's chunks are in flight: a
// commit naming one waits (nothing else reaches their pages).
Result<void> Commit::write_content() {
  const bool apart = lock_ && writer_->plans_without_lock();
  if (apart) {
    for (const ContentItem& it : s_.content)
      region_.add_flags(it.head, it.head + 1, kInFlight);
    a_.in_flight_releases_ += releases_;
    lock_->unlock();
  }
  SyscallCounts io;
  Result<void> r =
      writer_->plan_content(s_.plan, s_.content.data(), s_.content.size());
  if (r) r = writer_->write_planned(*s_.plan, io);
  if (r)
    r = writer_->finish_content(*s_.plan, s_.content.data(), s_.content.size(),
                                io);
  if (r) flush_code();
  if (apart) {
    ArenaImpl::relock(*lock_);
    for (const ContentItem& it : s_.content)
      region_.clear_flags(it.head, it.head + 1, kInFlight);
    a_.in_flight_releases_ -= releases_;
    if (a_.waiting_) a_.flight_done_.notify_all();
    // Barriers issued meanwhile may have come before the copy.
    revoked_epoch_ = static_cast<BarrierEpoch>(a_.barriers_);
  }
  add_counts(a_.sys_, io);
  report_.writes = static_cast<std::size_t>(io.write);
  if (!r) {
    // The writer put back what it wrote (flushed as written); other cores
    // get the barrier this commit would have issued.
    resync_after_rewrite();
    rollback(removed_, false, 0);
    return make_error(r.error(), first_chunk());
  }
  return {};
}

// Code rewritten by a rollback is flushed by the writer as a forward write
// is; where the commit would have issued the barrier, so does its undoing:
// other cores may have fetched the bytes that were taken back. Best
// effort: the commit is failing already, and a barrier refused now leaves
// nothing more to do (it is counted like any other).
void Commit::resync_after_rewrite() noexcept {
  if (barrier_ && a_.barrier_registered_) (void)a_.pal_.barrier(a_.sys_);
}

// 7. At most one cross-thread barrier per commit.
Result<void> Commit::issue_barrier() {
  if (!barrier_ || !a_.barrier_registered_) return {};
  if (Result<void> b = a_.pal_.barrier(a_.sys_); !b) {
    rollback(removed_, writer_ != nullptr, added_);
    return make_error(b.error(), first_chunk());
  }
  report_.barrier = true;
  ++a_.barriers_;
  return {};
}

// 8. Commit the bookkeeping: nothing below can fail. Pages that stopped
//    being executable did so before this commit's barrier (if any), so
//    they carry the epoch from before it.
void Commit::record() {
  for (const Run& run : s_.runs)
    if (run.to == PageState::executable)
      region_.add_flags(run.a, run.b, kHeldCode);
  for (const Item& it : s_.items) {
    if (it.from == PageState::executable && it.to != PageState::executable)
      region_.set_revoked(it.head, it.head + it.pages, revoked_epoch_);
    // Writable bytes are given back once a chunk stops being writable.
    if (it.from == PageState::writable && it.to != PageState::writable)
      backend_.unstage(it.head, it.pages, it.to != PageState::retired);
  }
  for (const Item& it : s_.items) {
    --a_.chunks_[static_cast<int>(to_public(it.from))];
    ++a_.chunks_[static_cast<int>(to_public(it.to))];
  }
  if (releases_) {
    // Chunks released together pass the quarantine together, so they come
    // back as one run (one call) instead of piecemeal. Room was made
    // before the first system call.
    a_.released_ += releases_;
    for (const Item& it : s_.items)
      if (it.to == PageState::retired)
        a_.quarantine_.push_back(ArenaImpl::Quarantined{
            it.head, it.pages, a_.released_, a_.allocations_});
  }
  // Undo records and staging nobody needs now.
  if (writer_ && s_.plan) writer_->forget_undo(*s_.plan);
  backend_.after_commit(a_.sys_);
  report_.chunks = s_.items.size();
  report_.runs = s_.runs.size();
  a_.run_count_ += s_.runs.size();
  a_.flushes_ += report_.flushes;
  ++a_.commits_;
}

// --- what the steps share ----------------------------------------------------

void Commit::set_all(bool target) noexcept {
  for (const Item& it : s_.items)
    region_.set_state(it.head, it.head + it.pages, target ? it.to : it.from,
                      it.head);
}

void Commit::unstage_unseals() noexcept {
  for (Item& it : s_.items)
    if (it.staged) {
      backend_.unstage(it.head, it.pages, false);
      it.staged = false;
    }
}

void Commit::flush_code() noexcept {
  for (const Run& run : s_.runs) {
    if (run.to != PageState::executable &&
        !(writer_ && run.to == PageState::retired))
      continue;
    region_.flush(run.a, run.b);
    ++report_.flushes;
  }
  // Spans (released functions overwritten with traps, appended ones):
  // their chunks stay executable, and their old bytes must not linger in
  // instruction caches.
  if (span_count_)
    for (const ContentItem& c : s_.content)
      if (c.span) region_.flush(c.head, c.head + c.pages);
}

// The items of a run are sorted and contiguous: a page's item is found by
// bisection.
auto Commit::acc(const Run& run, int phase) const noexcept {
  return [this, &run, phase](std::size_t page, View v) noexcept {
    std::uint32_t lo = run.first_item, hi = run.end_item;
    while (hi - lo > 1) {
      const std::uint32_t mid = lo + (hi - lo) / 2;
      if (s_.items[mid].head <= page)
        lo = mid;
      else
        hi = mid;
    }
    const Item& it = s_.items[lo];
    const Access f = region_.access(it.from, v);
    const Access t = region_.access(it.to, v);
    return phase == 0 ? f : phase == 2 ? t : (only_removes(f, t) ? t : f);
  };
}

void Commit::undo_runs(std::size_t runs, int cur, int want) noexcept {
  for (std::size_t r = runs; r-- > 0;) {
    const Run& run = s_.runs[r];
    if (!run.changes) continue;
    std::size_t calls = 0;
    // Undoing a change of our own is not optional: if the kernel refuses,
    // the tracked state and the kernel's would disagree (and code might
    // stay writable), so that is fatal by design.
    if (!region_.change_access(run.a, run.b, acc(run, cur), acc(run, want),
                               kBothPasses, calls, a_.sys_))
      fatal("cannot roll back a protection change", region_.rx_page(run.a), 0);
    a_.protection_calls_ += calls;
  }
}

void Commit::rollback(std::size_t removed, bool written,
                      std::size_t added) noexcept {
  undo_runs(added, 2, 1);
  if (written) {
    writer_->undo_content(*s_.plan, a_.sys_);
    resync_after_rewrite();
  }
  undo_runs(removed, 1, 0);
  set_all(false);
  unstage_unseals();
}

const void* Commit::first_chunk() const noexcept {
  if (!s_.items.empty()) return region_.rx_page(s_.items.front().head);
  return span_count_ ? spans_[0].rx : nullptr;
}

const void* Commit::chunk_of_page(const void* page) const noexcept {
  const std::ptrdiff_t i = region_.index_of(page, false);
  if (i < 0) return page;
  return region_.rx_page(region_.head(static_cast<std::size_t>(i)));
}

// One pass over every run: one call per run whose protection changes (a
// failing run undoes its own steps).
Result<void> Commit::apply_pass(unsigned pass, std::size_t& done) noexcept {
  const int before = pass == kRemove ? 0 : 1;
  for (done = 0; done < s_.runs.size(); ++done) {
    const Run& run = s_.runs[done];
    if (!run.changes) continue;  // e.g. seals where content is copied in
    std::size_t calls = 0;
    Result<void> res =
        region_.change_access(run.a, run.b, acc(run, before),
                              acc(run, before + 1), pass, calls, a_.sys_);
    report_.protection_calls += calls;
    a_.protection_calls_ += calls;
    if (!res) return res;
  }
  return {};
}

}  // namespace wxa::detail
