// SPDX-License-Identifier: MIT
// The commit engine: validate, sort, coalesce, protect, flush, barrier, and
// roll back on failure. Every permission change of a chunk comes through here.
#include <algorithm>
#include <cstring>
#include <limits>
#include <new>

#include "arena_impl.hpp"

namespace wxa {
namespace detail {
namespace {
void add_counts(SyscallCounts& to, const SyscallCounts& n) noexcept {
  to.mmap += n.mmap;
  to.munmap += n.munmap;
  to.mprotect += n.mprotect;
  to.madvise += n.madvise;
  to.memfd += n.memfd;
  to.membarrier += n.membarrier;
  to.other += n.other;
  to.write += n.write;
}
}  // namespace

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

Result<CommitReport> ArenaImpl::commit(const Batch::Op* ops, std::size_t n,
                                       CommitFlags flags) noexcept {
  if (foreign_process()) return Error(Errc::wrong_process);  // before the lock
  // The caller asks for every thread to serialise; without membarrier
  // SYNC_CORE (or its registration) nothing here can do that: say so
  // before anything changes rather than return without it.
  if (flags == CommitFlags::barrier && !barrier_registered_)
    return Error(Errc::not_supported);
  std::unique_lock lock = acquire();
  Scratch* s = take_scratch();
  if (!s) return Error(Errc::out_of_memory, kNoMemory);
  // Given back under the lock (destroyed before `lock`).
  struct GiveBack {
    ArenaImpl* arena;
    Scratch* s;
    ~GiveBack() { arena->give_scratch(s); }
  } give_back{this, s};
  try {
    if (!region_.ops().writes_content())
      for (std::size_t k = 0; k < n; ++k)
        if (ops[k].kind == OpKind::patch)
          return commit_by_unsealing(ops, n, flags, *s);
    for (;;) {
      bool busy = false;
      Result<CommitReport> r = commit_locked(ops, n, flags, *s, &lock, busy);
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
  std::sort(s.items.begin(), s.items.end(),
            [](const Item& x, const Item& y) { return x.head < y.head; });
  for (std::size_t k = 1; k < s.items.size(); ++k)
    if (s.items[k].head == s.items[k - 1].head)
      return Error(Errc::duplicate_in_batch, 0,
                   region_.rx_page(s.items[k].head));

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
    std::unique_lock<std::mutex>* lock, bool& busy) {
  CommitReport report;
  PageBackend& backend = region_.ops();
  // 1. Validate every transition against the current states, in order, so
  //    the error names the first chunk at fault.
  s.items.clear();
  s.items.reserve(n);
  for (std::size_t k = 0; k < n; ++k) {
    PageState from{}, to{};
    Result<std::uint32_t> head = validate(ops[k], from, to);
    if (!head) return head.error();
    if (region_.flags(*head) & kInFlight) {
      busy = true;
      return Error(Errc::illegal_transition, 0, region_.rx_page(*head));
    }
    s.items.push_back(Item{*head, region_.length(*head), from, to,
                           static_cast<std::uint32_t>(k), false});
  }
  if (s.items.empty()) return report;

  // 2. Sort by address; a chunk named twice is a caller error.
  std::sort(s.items.begin(), s.items.end(),
            [](const Item& x, const Item& y) { return x.head < y.head; });
  for (std::size_t k = 1; k < s.items.size(); ++k)
    if (s.items[k].head == s.items[k - 1].head)
      return Error(Errc::duplicate_in_batch, 0,
                   region_.rx_page(s.items[k].head));

  // 3. Coalesce address-adjacent chunks with the same target into runs,
  //    noting which runs change any protection at all.
  s.runs.clear();
  const int views = region_.views();
  for (std::uint32_t k = 0; k < s.items.size(); ++k) {
    const Item& it = s.items[k];
    bool changes = false;
    for (int v = 0; v < views; ++v)
      changes |=
          region_.access(it.from, View(v)) != region_.access(it.to, View(v));
    if (!s.runs.empty() && s.runs.back().b == it.head &&
        s.runs.back().to == it.to) {
      s.runs.back().b += it.pages;
      s.runs.back().end_item = k + 1;
      s.runs.back().changes |= changes;
    } else {
      s.runs.push_back(
          Run{it.head, it.head + it.pages, it.to, k, k + 1, changes});
    }
  }

  // Room in the quarantine now: nothing may fail after the system calls.
  std::size_t releases = 0;
  bool patches = false;
  for (const Item& it : s.items) {
    releases += it.to == PageState::retired;
    patches |= ops[it.op].kind == OpKind::patch;
  }
  // (Commits in flight have room for theirs already.)
  quarantine_.reserve(quarantine_.size() + in_flight_releases_ + releases);

  // What the commit writes into the code, where the backend copies it in.
  const bool content = backend.writes_content();
  if (content) {
    s.content.clear();
    s.content.reserve(s.items.size());
    for (const Item& it : s.items) {
      ContentItem c{it.head, it.pages, it.from, it.to};
      const Batch::Op& op = ops[it.op];
      if (op.kind == OpKind::patch) {
        c.data = op.data;
        c.size = op.size;
        c.offset = static_cast<std::uint32_t>(
            static_cast<const std::byte*>(op.rx) - region_.rx_page(it.head));
      }
      s.content.push_back(c);
    }
  }

  // Writable bytes for unsealed chunks, holding their current bytes, before
  // any system call (staging may run out: then nothing has changed).
  auto unstage_unseals = [&]() noexcept {
    for (Item& it : s.items)
      if (it.staged) {
        backend.unstage(it.head, it.pages);
        it.staged = false;
      }
  };
  for (Item& it : s.items) {
    if (it.to != PageState::writable) continue;
    Result<std::byte*> st = backend.stage(it.head, it.pages, true);
    if (!st) {
      unstage_unseals();
      return Error(st.error().code(), st.error().sys_errno(),
                   region_.rx_page(it.head));
    }
    it.staged = true;
  }

  // 4. The VMA budget, from the state map, before any system call.
  auto set_all = [&](bool target) noexcept {
    for (const Item& it : s.items)
      region_.set_state(it.head, it.head + it.pages, target ? it.to : it.from,
                        it.head);
  };
  set_all(true);
  if (over_budget()) {
    set_all(false);
    unstage_unseals();
    return Error(Errc::vma_budget, 0, region_.rx_page(s.items.front().head));
  }

  // 5. Whether other threads need a barrier: code at an address that held
  //    code before (reuse, or an unsealed chunk sealed again) may be stale
  //    in other cores' pipelines, unless every core has serialised since
  //    that address stopped being executable: a barrier issued after that
  //    has already done this one's work, and no core can have fetched from
  //    the address since. Patched code always needs one.
  bool barrier = flags == CommitFlags::barrier || patches;
  const auto epoch = static_cast<BarrierEpoch>(barriers_);
  for (const Run& run : s.runs) {
    if (run.to != PageState::executable) continue;
    for (std::size_t i = run.a; i < run.b && !barrier; ++i)
      barrier = (region_.flags(i) & kHeldCode) && region_.revoked(i) == epoch;
  }
  // Where the owner writes the pages themselves, code is made visible to
  // instruction fetch before it becomes executable.
  auto flush_code = [&]() noexcept {
    for (const Run& run : s.runs) {
      if (run.to != PageState::executable &&
          !(content && run.to == PageState::retired))
        continue;
      region_.flush(run.a, run.b);
      ++report.flushes;
    }
  };
  if (!content) flush_code();

  // 6. Protection changes: access removed from every run first, then the
  //    new bytes copied in (kernel_write), then access added. The state of
  //    a run between the two passes: its new protection where that only
  //    takes rights away, its old one elsewhere.
  // Phases of a run's protection, page by page: 0 before, 1 between the
  // passes, 2 after. The items of a run are sorted and contiguous.
  auto acc = [this, &s](const Run& run, int phase) {
    return [this, &s, &run, phase](std::size_t page, View v) noexcept {
      std::uint32_t lo = run.first_item, hi = run.end_item;
      while (hi - lo > 1) {
        const std::uint32_t mid = lo + (hi - lo) / 2;
        if (s.items[mid].head <= page)
          lo = mid;
        else
          hi = mid;
      }
      const Item& it = s.items[lo];
      const Access f = region_.access(it.from, v);
      const Access t = region_.access(it.to, v);
      return phase == 0 ? f : phase == 2 ? t : (only_removes(f, t) ? t : f);
    };
  };
  auto undo_runs = [&](std::size_t runs, int cur, int want) noexcept {
    for (std::size_t r = runs; r-- > 0;) {
      const Run& run = s.runs[r];
      if (!run.changes) continue;
      std::size_t calls = 0;
      // Undoing a change of our own is not optional: if the kernel
      // refuses, the tracked state and the kernel's would disagree (and
      // code might stay writable), so that is fatal by design.
      if (!region_.change_access(run.a, run.b, acc(run, cur), acc(run, want),
                                 kBothPasses, calls, sys_))
        fatal("cannot roll back a protection change", region_.rx_page(run.a),
              0);
      protection_calls_ += calls;
    }
  };
  auto rollback = [&](std::size_t removed, bool written,
                      std::size_t added) noexcept {
    undo_runs(added, 2, 1);
    if (written) backend.undo_content(*s.plan, sys_);
    undo_runs(removed, 1, 0);
    set_all(false);
    unstage_unseals();
  };
  auto chunk_of_page = [&](const void* page_addr) -> const void* {
    const std::ptrdiff_t i = region_.index_of(page_addr, false);
    if (i < 0) return page_addr;
    return region_.rx_page(region_.head(static_cast<std::size_t>(i)));
  };
  // One pass over every run: one call per run whose protection changes (a
  // failing run undoes its own steps).
  auto apply_pass = [&](unsigned pass,
                        std::size_t& done) noexcept -> Result<void> {
    const int before = pass == kRemove ? 0 : 1;
    for (done = 0; done < s.runs.size(); ++done) {
      const Run& run = s.runs[done];
      if (!run.changes) continue;  // kernel_write's seals and releases
      std::size_t calls = 0;
      Result<void> res =
          region_.change_access(run.a, run.b, acc(run, before),
                                acc(run, before + 1), pass, calls, sys_);
      report.protection_calls += calls;
      protection_calls_ += calls;
      if (!res) return res;
    }
    return {};
  };
  std::size_t removed = 0, added = 0;
  if (Result<void> r = apply_pass(kRemove, removed); !r) {
    const Error& e = r.error();
    rollback(removed, false, 0);
    return Error(e.code(), e.sys_errno(), chunk_of_page(e.chunk()));
  }
  // The epoch pages that stop being executable carry (see step 8).
  BarrierEpoch revoked_epoch = epoch;
  if (content) {
    // Planning (the staged bytes scanned, retired code saved), the
    // kernel's copy and mapping fresh pages in are the long steps: where
    // the backend allows, they run without the lock, other threads'
    // commits and allocations going on meanwhile. The batch's chunks are
    // in flight: a commit naming one waits (nothing else reaches their
    // pages).
    const bool apart = lock && backend.plans_without_lock();
    if (apart) {
      for (const Item& it : s.items)
        region_.add_flags(it.head, it.head + 1, kInFlight);
      in_flight_releases_ += releases;
      lock->unlock();
    }
    SyscallCounts io;
    Result<void> r =
        backend.plan_content(s.plan, s.content.data(), s.content.size());
    if (r) r = backend.write_planned(*s.plan, io);
    if (r)
      r = backend.finish_content(*s.plan, s.content.data(), s.content.size(),
                                 io);
    if (r) flush_code();
    if (apart) {
      relock(*lock);
      for (const Item& it : s.items)
        region_.clear_flags(it.head, it.head + 1, kInFlight);
      in_flight_releases_ -= releases;
      if (waiting_) flight_done_.notify_all();
      // Barriers issued meanwhile may have come before the copy.
      revoked_epoch = static_cast<BarrierEpoch>(barriers_);
    }
    add_counts(sys_, io);
    report.writes = static_cast<std::size_t>(io.write);
    if (!r) {
      rollback(removed, false, 0);
      return Error(r.error().code(), r.error().sys_errno(),
                   region_.rx_page(s.items.front().head));
    }
  }
  if (Result<void> r = apply_pass(kAdd, added); !r) {
    const Error& e = r.error();
    rollback(removed, content, added);
    return Error(e.code(), e.sys_errno(), chunk_of_page(e.chunk()));
  }

  // 7. At most one cross-thread barrier per commit.
  if (barrier && barrier_registered_) {
    if (Result<void> b = pal_.barrier(sys_); !b) {
      rollback(removed, content, added);
      return Error(b.error().code(), b.error().sys_errno(),
                   region_.rx_page(s.items.front().head));
    }
    report.barrier = true;
    ++barriers_;
  }

  // 8. Commit the bookkeeping: nothing below can fail. Pages that stopped
  //    being executable did so before this commit's barrier (if any), so
  //    they carry the epoch from before it.
  for (const Run& run : s.runs)
    if (run.to == PageState::executable)
      region_.add_flags(run.a, run.b, kHeldCode);
  for (const Item& it : s.items) {
    if (it.from == PageState::executable && it.to != PageState::executable)
      region_.set_revoked(it.head, it.head + it.pages, revoked_epoch);
    // Writable bytes are given back once a chunk stops being writable.
    if (it.from == PageState::writable && it.to != PageState::writable)
      backend.unstage(it.head, it.pages);
  }
  for (const Item& it : s.items) {
    --chunks_[static_cast<int>(to_public(it.from))];
    ++chunks_[static_cast<int>(to_public(it.to))];
  }
  if (releases) {
    // Chunks released together pass the quarantine together, so they come
    // back as one run (one call) instead of piecemeal. Room was made
    // before the first system call.
    released_ += releases;
    for (const Item& it : s.items)
      if (it.to == PageState::retired)
        quarantine_.push_back(
            Quarantined{it.head, it.pages, released_, allocations_});
  }
  report.chunks = s.items.size();
  report.runs = s.runs.size();
  run_count_ += s.runs.size();
  flushes_ += report.flushes;
  ++commits_;
  return report;
}

}  // namespace detail

// --- Batch -----------------------------------------------------------------

Batch::Batch(Arena& arena) noexcept : arena_(&arena) {}

Batch::Batch(Batch&& other) noexcept
    : arena_(other.arena_),
      ops_(other.ops_),
      size_(other.size_),
      capacity_(other.capacity_),
      overflow_(other.overflow_),
      refused_(other.refused_) {
  other.ops_ = nullptr;
  other.size_ = other.capacity_ = 0;
}

Batch& Batch::operator=(Batch&& other) noexcept {
  if (this != &other) {
    this->~Batch();
    ::new (static_cast<void*>(this)) Batch(std::move(other));
  }
  return *this;
}

Batch::~Batch() {
  free_patches();
  detail::meta_free(ops_);
}

void Batch::push(const void* rx, detail::OpKind kind) noexcept {
  if (size_ == capacity_) {
    const std::size_t want = capacity_ ? capacity_ * 2 : 64;
    auto* p = static_cast<Op*>(detail::meta_alloc(want * sizeof(Op)));
    if (!p) {
      overflow_ = true;  // reported by commit(), which then changes nothing
      return;
    }
    if (ops_) std::memcpy(p, ops_, size_ * sizeof(Op));
    detail::meta_free(ops_);
    ops_ = p;
    capacity_ = want;
  }
  ops_[size_++] = Op{rx, kind};
}

void Batch::seal(const void* rx, Seal to) noexcept {
  push(rx, to == Seal::execute ? detail::OpKind::seal_execute
                               : detail::OpKind::seal_read_only);
}
void Batch::unseal(const void* rx) noexcept {
  push(rx, detail::OpKind::unseal);
}
void Batch::release(const void* rx) noexcept {
  push(rx, detail::OpKind::release);
}
void Batch::patch(const void* at, std::span<const std::byte> bytes) noexcept {
  // The bytes are copied now: the caller's buffer may be gone at commit.
  if (bytes.size() > std::numeric_limits<std::uint32_t>::max()) {
    // Longer than any chunk: the answer Arena::patch gives, at commit.
    if (refused_ == Errc::ok) refused_ = Error(Errc::out_of_bounds, 0, at);
    return;
  }
  std::byte* copy = nullptr;
  if (!bytes.empty()) {
    copy = static_cast<std::byte*>(detail::meta_alloc(bytes.size()));
    if (!copy) {
      overflow_ = true;
      return;
    }
    std::memcpy(copy, bytes.data(), bytes.size());
  }
  const std::size_t before = size_;
  push(at, detail::OpKind::patch);
  if (size_ == before) {
    detail::meta_free(copy);
    return;
  }
  ops_[size_ - 1].size = static_cast<std::uint32_t>(bytes.size());
  ops_[size_ - 1].data = copy;
}

void Batch::free_patches() noexcept {
  for (std::size_t k = 0; k < size_; ++k)
    if (ops_[k].kind == detail::OpKind::patch)
      detail::meta_free(const_cast<std::byte*>(ops_[k].data));
}

Result<CommitReport> Batch::commit(CommitFlags flags) noexcept {
  if (!arena_->impl_) return Error(Errc::invalid_argument);  // moved from
  if (refused_ != Errc::ok) return refused_;
  if (overflow_) return Error(Errc::out_of_memory, detail::kNoMemory);
  Result<CommitReport> r = detail::impl_of(*arena_).commit(ops_, size_, flags);
  if (r) {
    free_patches();
    size_ = 0;
  }
  return r;
}

std::size_t Batch::size() const noexcept { return size_; }

void Batch::clear() noexcept {
  free_patches();
  size_ = 0;
  overflow_ = false;
  refused_ = Error();
}

}  // namespace wxa
