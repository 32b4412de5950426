// SPDX-License-Identifier: MIT
// The commit engine: validate, sort, coalesce, protect, flush, barrier, and
// roll back on failure. Every permission change of a chunk comes through here.
#include <algorithm>
#include <cstring>
#include <new>

#include "arena_impl.hpp"

namespace wxa {
namespace detail {

Result<std::uint32_t> ArenaImpl::validate(const void* rx, OpKind kind,
                                          PageState& from,
                                          PageState& to) const noexcept {
  if (!rx) return Error(Errc::null_pointer);
  const std::ptrdiff_t i = region_.index_of(rx, false);
  if (i < 0) return Error(Errc::foreign_pointer, 0, rx);
  const auto page = static_cast<std::size_t>(i);
  from = region_.state(page);
  if (from == PageState::unused || from == PageState::open)
    return Error(Errc::not_allocated, 0, rx);
  const std::uint32_t head = region_.head(page);
  if (rx != region_.rx_page(head)) return Error(Errc::interior_pointer, 0, rx);
  switch (kind) {
    case OpKind::seal_execute:
    case OpKind::seal_read_only:
      if (from != PageState::writable)
        return Error(Errc::illegal_transition, 0, rx);
      to = kind == OpKind::seal_execute ? PageState::executable
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
  }
  return head;
}

Result<CommitReport> ArenaImpl::commit(const Batch::Op* ops, std::size_t n,
                                       CommitFlags flags) noexcept {
  std::lock_guard lock(mutex_);
  if (foreign_process()) return Error(Errc::wrong_process);
  try {
    return commit_locked(ops, n, flags);
  } catch (const std::bad_alloc&) {
    // Only the scratch vectors allocate, before anything changes.
    return Error(Errc::out_of_memory, kNoMemory);
  }
}

Result<CommitReport> ArenaImpl::commit_locked(const Batch::Op* ops,
                                              std::size_t n,
                                              CommitFlags flags) {
  CommitReport report;
  // 1. Validate every transition against the current states, in order, so
  //    the error names the first chunk at fault.
  items_.clear();
  items_.reserve(n);
  for (std::size_t k = 0; k < n; ++k) {
    PageState from{}, to{};
    Result<std::uint32_t> head = validate(ops[k].rx, ops[k].kind, from, to);
    if (!head) return head.error();
    items_.push_back(Item{*head, region_.length(*head), from, to,
                          static_cast<std::uint32_t>(k)});
  }
  if (items_.empty()) return report;

  // 2. Sort by address; a chunk named twice is a caller error.
  std::sort(items_.begin(), items_.end(),
            [](const Item& x, const Item& y) { return x.head < y.head; });
  for (std::size_t k = 1; k < items_.size(); ++k)
    if (items_[k].head == items_[k - 1].head)
      return Error(Errc::duplicate_in_batch, 0,
                   region_.rx_page(items_[k].head));

  // 3. Coalesce address-adjacent chunks with the same target into runs.
  runs_.clear();
  for (std::uint32_t k = 0; k < items_.size(); ++k) {
    const Item& it = items_[k];
    if (!runs_.empty() && runs_.back().b == it.head &&
        runs_.back().to == it.to) {
      runs_.back().b += it.pages;
      runs_.back().end_item = k + 1;
    } else {
      runs_.push_back(Run{it.head, it.head + it.pages, it.to, k, k + 1});
    }
  }

  // Room in the quarantine now: nothing may fail after the system calls.
  std::size_t releases = 0;
  for (const Item& it : items_) releases += it.to == PageState::retired;
  quarantine_.reserve(quarantine_.size() + releases);

  // 4. The VMA budget, from the state map, before any system call.
  auto set_all = [&](bool target) noexcept {
    for (const Item& it : items_)
      region_.set_state(it.head, it.head + it.pages, target ? it.to : it.from,
                        it.head);
  };
  set_all(true);
  if (over_budget()) {
    set_all(false);
    return Error(Errc::vma_budget, 0, region_.rx_page(items_.front().head));
  }

  // 5. Code is made visible to instruction fetch before it is executable.
  bool barrier = flags == CommitFlags::barrier;
  const auto epoch = static_cast<BarrierEpoch>(barriers_);
  for (const Run& run : runs_) {
    if (run.to != PageState::executable) continue;
    region_.flush(run.a, run.b);
    ++report.flushes;
    // Code at an address that held code before (reuse, or an unsealed
    // chunk sealed again) may be stale in other cores' pipelines, unless
    // every core has serialised since that address stopped being
    // executable: a barrier issued after that has already done this one's
    // work, and no core can have fetched from the address since.
    for (std::size_t i = run.a; i < run.b && !barrier; ++i)
      barrier = (region_.flags(i) & kHeldCode) && region_.revoked(i) == epoch;
  }

  // 6. One protection change per run (two in dual_map: one per view).
  auto from_of = [&](const Run& run) {
    return [this, &run](std::size_t page) noexcept {
      // The items of a run are sorted and contiguous.
      for (std::uint32_t k = run.first_item; k < run.end_item; ++k)
        if (page < items_[k].head + items_[k].pages) return items_[k].from;
      return items_[run.end_item - 1].from;
    };
  };
  auto rollback = [&](std::size_t done) noexcept {
    for (std::size_t r = done; r-- > 0;) {
      const Run& run = runs_[r];
      for (std::uint32_t k = run.first_item; k < run.end_item; ++k) {
        const Item& it = items_[k];
        std::size_t calls = 0;
        // Undoing a change of our own is not optional: if the kernel
        // refuses, the tracked state and the kernel's would disagree (and
        // code might stay writable), so that is fatal by design.
        if (!region_.change(
                it.head, it.head + it.pages, [&](std::size_t) { return it.to; },
                [&](std::size_t) { return it.from; }, calls, sys_))
          fatal("cannot roll back a protection change",
                region_.rx_page(it.head), 0);
        protection_calls_ += calls;
      }
    }
    set_all(false);
  };
  auto chunk_of_page = [&](const void* page_addr) -> const void* {
    const std::ptrdiff_t i = region_.index_of(page_addr, false);
    if (i < 0) return page_addr;
    return region_.rx_page(region_.head(static_cast<std::size_t>(i)));
  };

  for (std::size_t r = 0; r < runs_.size(); ++r) {
    const Run& run = runs_[r];
    std::size_t calls = 0;
    Result<void> res = region_.change(
        run.a, run.b, from_of(run), [&run](std::size_t) { return run.to; },
        calls, sys_);
    report.protection_calls += calls;
    protection_calls_ += calls;
    if (!res) {
      const Error& e = res.error();
      rollback(r);
      return Error(e.code(), e.sys_errno(), chunk_of_page(e.chunk()));
    }
  }

  // 7. At most one cross-thread barrier per commit.
  if (barrier && barrier_registered_) {
    if (Result<void> b = pal_.barrier(sys_); !b) {
      rollback(runs_.size());
      return Error(b.error().code(), b.error().sys_errno(),
                   region_.rx_page(items_.front().head));
    }
    report.barrier = true;
    ++barriers_;
  }

  // 8. Commit the bookkeeping: nothing below can fail. Pages that stopped
  //    being executable did so before this commit's barrier (if any), so
  //    they carry the epoch from before it.
  for (const Run& run : runs_)
    if (run.to == PageState::executable)
      region_.add_flags(run.a, run.b, kHeldCode);
  for (const Item& it : items_)
    if (it.from == PageState::executable && it.to != PageState::executable)
      region_.set_revoked(it.head, it.head + it.pages, epoch);
  for (const Item& it : items_) {
    --chunks_[static_cast<int>(to_public(it.from))];
    ++chunks_[static_cast<int>(to_public(it.to))];
  }
  if (releases) {
    // Chunks released together pass the quarantine together, so they come
    // back as one run (one call) instead of piecemeal.
    released_ += releases;
    for (const Item& it : items_)
      if (it.to == PageState::retired)
        quarantine_.push_back(
            Quarantined{it.head, it.pages, released_, allocations_});
  }
  report.chunks = items_.size();
  report.runs = runs_.size();
  run_count_ += runs_.size();
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
      overflow_(other.overflow_) {
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

Batch::~Batch() { detail::meta_free(ops_); }

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
void Batch::patch(const void*, std::span<const std::byte>) noexcept {
  overflow_ = true;  // not yet implemented
}

Result<CommitReport> Batch::commit(CommitFlags flags) noexcept {
  if (overflow_) return Error(Errc::out_of_memory, detail::kNoMemory);
  Result<CommitReport> r = detail::impl_of(*arena_).commit(ops_, size_, flags);
  if (r) size_ = 0;
  return r;
}

std::size_t Batch::size() const noexcept { return size_; }

void Batch::clear() noexcept {
  size_ = 0;
  overflow_ = false;
}

}  // namespace wxa
