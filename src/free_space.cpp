// SPDX-License-Identifier: MIT
// The arena's free space: lanes, open and unused runs of pages, the
// quarantine's way back to use, and trim() giving memory back to the OS.
#include <algorithm>
#include <atomic>
#include <bit>
#include <new>

#include "arena_impl.hpp"
#include "error.hpp"

namespace wxa::detail {

namespace {
// A thread's slot: the lowest one free when it first commits, or allocates
// from an arena with lanes, given back when it exits, so that threads alive
// at the same time hold different slots, hence different lanes (as long as
// there are lanes enough) and scratch of their own, however many threads
// came and went before them.
class LaneSlot {
 public:
  LaneSlot() noexcept {
    for (std::size_t w = 0; w < kWords; ++w) {
      std::uint64_t bits = g_used[w].load(std::memory_order_relaxed);
      while (~bits) {
        const int b = std::countr_one(bits);
        if (g_used[w].compare_exchange_weak(bits, bits | (1ull << b),
                                            std::memory_order_relaxed)) {
          index = w * 64 + static_cast<std::size_t>(b);
          return;
        }
      }
    }
    // More threads than slots: the rest share lanes in turn.
    index = g_next.fetch_add(1, std::memory_order_relaxed);
  }
  ~LaneSlot() {
    if (index < kWords * 64)
      g_used[index / 64].fetch_and(~(1ull << (index % 64)),
                                   std::memory_order_relaxed);
  }
  LaneSlot(const LaneSlot&) = delete;
  LaneSlot& operator=(const LaneSlot&) = delete;

  std::size_t index = 0;

 private:
  static constexpr std::size_t kWords = 4;
  static inline std::atomic<std::uint64_t> g_used[kWords] = {};
  static inline std::atomic<std::size_t> g_next{0};
};
}  // namespace

std::size_t ArenaImpl::my_slot() noexcept {
  thread_local const LaneSlot slot;
  return slot.index;
}

ArenaImpl::LanePages ArenaImpl::my_lane() const noexcept {
  const std::size_t lanes = region_.lanes();
  if (lanes <= 1) return {0, region_.pages()};
  const std::size_t per_lane = region_.lane_pages();
  const std::size_t lo = my_slot() % lanes * per_lane;
  return {lo, std::min(lo + per_lane, region_.pages())};
}

std::ptrdiff_t ArenaImpl::take_open(std::size_t pages, bool lane) noexcept {
  if (lane) {
    // In this thread's lane: the first open run there that holds the
    // chunk, counting one that reaches into the lane from below.
    const auto [first, hi] = my_lane();
    const auto lo = static_cast<std::uint32_t>(first);
    auto it = open_.lower_bound(lo);
    if (it != open_.begin()) {
      auto below = std::prev(it);
      const std::size_t end = std::size_t{below->first} + below->second;
      if (end >= std::size_t{lo} + pages) {
        try {
          carve_front(open_, split_run(open_, below, lo),
                      static_cast<std::uint32_t>(pages));
          return lo;
        } catch (const std::bad_alloc&) {
          // Nothing changed: any other fit will do.
        }
      }
    }
    for (; it != open_.end() && it->first < hi; ++it) {
      if (it->second >= pages) {
        std::uint32_t a = it->first;
        carve_front(open_, it, static_cast<std::uint32_t>(pages));
        return a;
      }
    }
    return -1;
  }
  // First fit by address: consecutive allocations come out adjacent, so a
  // batch of them seals with one call.
  for (auto it = open_.begin(); it != open_.end(); ++it) {
    if (it->second >= pages) {
      std::uint32_t a = it->first;
      carve_front(open_, it, static_cast<std::uint32_t>(pages));
      return a;
    }
  }
  return -1;
}

Result<void> ArenaImpl::open_at(RunMap::iterator it, std::uint32_t a,
                                std::uint32_t n) noexcept {
  // Pages from the middle of the run: split it at `a` first, the only step
  // that may need memory; a failure below joins the halves again.
  RunMap::iterator before = unused_.end();
  if (a != it->first) {
    try {
      const RunMap::iterator tail = split_run(unused_, it, a);
      before = it;
      it = tail;
    } catch (const std::bad_alloc&) {
      return Error(Errc::out_of_memory, kNoMemory);
    }
  }
  auto rejoin = [&]() noexcept {
    if (before == unused_.end()) return;
    before->second += it->second;
    unused_.erase(it);
  };
  region_.set_state(a, a + n, PageState::open, 0);
  if (over_budget()) {
    region_.set_state(a, a + n, PageState::unused, 0);
    rejoin();
    return Error(Errc::vma_budget);
  }
  std::size_t calls = 0;
  Result<void> r = region_.change(
      a, a + n, [](std::size_t) { return PageState::unused; },
      [](std::size_t) { return PageState::open; }, calls, sys_);
  protection_calls_ += calls;
  if (!r) {
    region_.set_state(a, a + n, PageState::unused, 0);
    rejoin();
    return make_error(r.error(), nullptr);
  }
  carve_front(unused_, it, n);
  insert_run(open_, a, n);  // merges with open neighbours
  return {};
}

Result<void> ArenaImpl::open_more(std::size_t pages, bool lane) noexcept {
  if (lane) {
    // In this thread's lane: an unused run with room for the chunk from
    // where it enters the lane; open_pages of it, not past the lane's end,
    // become open.
    const auto [lo, hi] = my_lane();
    auto it = unused_.lower_bound(static_cast<std::uint32_t>(lo));
    if (it != unused_.begin() &&
        std::size_t{std::prev(it)->first} + std::prev(it)->second > lo)
      --it;
    for (; it != unused_.end() && it->first < hi; ++it) {
      const std::size_t s = std::max<std::size_t>(it->first, lo);
      const std::size_t e = std::size_t{it->first} + it->second;
      if (e - s < pages) continue;
      const std::size_t n =
          std::clamp(std::min(options_.open_pages, hi - s), pages, e - s);
      return open_at(it, static_cast<std::uint32_t>(s),
                     static_cast<std::uint32_t>(n));
    }
    return Error(Errc::exhausted);
  }
  // An unused run that holds the chunk by itself: its front, at least
  // open_pages of it, becomes open.
  for (auto it = unused_.begin(); it != unused_.end(); ++it) {
    if (it->second < pages) continue;
    return open_at(it, it->first,
                   static_cast<std::uint32_t>(std::min<std::size_t>(
                       it->second, std::max(pages, options_.open_pages))));
  }
  // Otherwise a span of free pages may hold it, split between open and
  // unused runs (after trim(), or where open pages were taken and freed
  // again): the first span long enough, walked in address order over both
  // maps. Opening its unused parts up to the chunk's end merges the span
  // into one open run. Each unused part costs a call; if one fails, those
  // opened before it stay open (free pages, consistently listed).
  std::uint32_t start = 0, end = 0;
  bool found = false;
  for (auto o = open_.begin(), u = unused_.begin();
       !found && (o != open_.end() || u != unused_.end());) {
    const bool take_unused =
        o == open_.end() || (u != unused_.end() && u->first < o->first);
    const auto& run = take_unused ? *u++ : *o++;
    if (run.first != end) start = run.first;
    end = run.first + run.second;
    found = end - start >= pages;
  }
  if (!found) return Error(Errc::exhausted);
  const std::size_t stop = start + pages;
  for (auto it = unused_.lower_bound(start);
       it != unused_.end() && it->first < stop;) {
    auto next = std::next(it);  // stays valid: open_at() moves only `it`
    const std::size_t n = std::min<std::size_t>(
        it->second, std::max(stop - it->first, options_.open_pages));
    if (Result<void> r = open_at(it, it->first, static_cast<std::uint32_t>(n));
        !r)
      return r;
    it = next;
  }
  return {};
}

std::size_t ArenaImpl::eligible_pages() const noexcept {
  std::size_t pages = 0;
  for (const Quarantined& q : quarantine_) {
    if (!passed(q)) break;
    pages += q.pages;
  }
  return pages;
}

Result<void> ArenaImpl::recycle() noexcept {
  // Entries that enough later releases or allocations have passed, oldest
  // first.
  std::size_t eligible = 0;
  while (eligible < quarantine_.size() && passed(quarantine_[eligible]))
    ++eligible;
  if (eligible == 0) return {};
  // By address (released in address order, as a heap releases its pages,
  // they are already).
  const auto by_head = [](const Quarantined& x, const Quarantined& y) {
    return x.head < y.head;
  };
  if (!std::is_sorted(quarantine_.begin(), quarantine_.begin() + eligible,
                      by_head))
    std::sort(quarantine_.begin(), quarantine_.begin() + eligible, by_head);
  std::size_t done = 0;
  Result<void> result;
  while (done < eligible) {
    // Coalesce address-adjacent entries into one run: one call for all.
    std::size_t end = done + 1;
    std::uint32_t a = quarantine_[done].head;
    std::uint32_t b = a + quarantine_[done].pages;
    while (end < eligible && quarantine_[end].head == b)
      b += quarantine_[end++].pages;
    region_.set_state(a, b, PageState::open, 0);
    if (over_budget()) {
      for (std::size_t k = done; k < end; ++k)
        region_.set_state(quarantine_[k].head,
                          quarantine_[k].head + quarantine_[k].pages,
                          PageState::retired, quarantine_[k].head);
      result = Error(Errc::vma_budget);
      break;
    }
    std::size_t calls = 0;
    Result<void> r = region_.change(
        a, b, [](std::size_t) { return PageState::retired; },
        [](std::size_t) { return PageState::open; }, calls, sys_);
    protection_calls_ += calls;
    if (!r) {
      for (std::size_t k = done; k < end; ++k)
        region_.set_state(quarantine_[k].head,
                          quarantine_[k].head + quarantine_[k].pages,
                          PageState::retired, quarantine_[k].head);
      result = make_error(r.error(), nullptr);
      break;
    }
    // Stale code must never run again: traps until new code is written.
    region_.trap_fill(a, b);
    chunks_[static_cast<int>(State::retired)] -= end - done;  // free now
    try {
      insert_run(open_, a, b - a);
    } catch (const std::bad_alloc&) {
      // The pages stay open, unlisted.
      result = Error(Errc::out_of_memory, kNoMemory);
      done = end;
      break;
    }
    done = end;
  }
  quarantine_.erase(quarantine_.begin(), quarantine_.begin() + done);
  // What is left of the eligible prefix after a failure went out of order:
  // restore it (the entries after the prefix are in release order still).
  if (done < eligible)
    std::sort(quarantine_.begin(), quarantine_.end(),
              [](const Quarantined& x, const Quarantined& y) {
                return x.seq < y.seq;
              });
  return result;
}

Result<void> ArenaImpl::trim() noexcept {
  if (foreign_process()) return Error(Errc::wrong_process);  // before the lock
  const std::unique_lock lock = acquire();
  try {
    if (Result<void> r = trim_quarantine(); !r) return r;
    if (Result<void> r = trim_open(); !r) return r;
    if (Result<void> r = region_.ops().trim(sys_); !r) return r;
    trim_scratch();
  } catch (const std::bad_alloc&) {
    return Error(Errc::out_of_memory, kNoMemory);
  }
  return {};
}

void ArenaImpl::trim_scratch() noexcept {
  // Commit scratch nobody uses goes too (it grows with the largest commit,
  // a mass release's undo records included), and the metadata allocator
  // gives back what it kept.
  ContentWriter* writer = region_.ops().content_writer();
  for (const Idle& idle : idle_scratch_) {
    Scratch& sc = *idle.scratch;
    if (writer && sc.plan) writer->destroy_plan(sc.plan);
    sc.plan = nullptr;
    decltype(sc.items)().swap(sc.items);
    decltype(sc.runs)().swap(sc.runs);
    decltype(sc.content)().swap(sc.content);
  }
  meta_collect();
}

Result<void> ArenaImpl::trim_quarantine() {
  // The whole quarantine ends here: its pages become inaccessible (a stale
  // call faults) and their memory goes back. One barrier first, so that no
  // core still holds their old code when they are reused (later commits
  // then need none for them).
  if (!quarantine_.empty() && barrier_registered_) {
    if (Result<void> b = pal_.barrier(sys_); !b) return b;
    ++barriers_;
  }
  std::size_t done = 0;
  while (done < quarantine_.size()) {
    // Address-adjacent entries together: one call for all (the quarantine
    // is in release order, usually address order too).
    std::size_t end = done + 1;
    const std::uint32_t a = quarantine_[done].head;
    std::uint32_t b = a + quarantine_[done].pages;
    while (end < quarantine_.size() && quarantine_[end].head == b)
      b += quarantine_[end++].pages;
    // Retired pages that are still mapped (trapped code, where retiring
    // overwrites rather than revokes) become inaccessible first; elsewhere
    // this makes no call.
    std::size_t calls = 0;
    region_.set_state(a, b, PageState::unused, 0);
    Result<void> r =
        over_budget()
            ? Result<void>(Error(Errc::vma_budget))
            : region_.change(
                  a, b, [](std::size_t) { return PageState::retired; },
                  [](std::size_t) { return PageState::unused; }, calls, sys_);
    protection_calls_ += calls;
    if (r) r = region_.decommit(a, b, sys_);
    if (!r) {
      // What was given back stays given back; the rest stays retired
      // (if the pages are already inaccessible, retired is still true of
      // them: they never run again and come back through recycle()).
      for (std::size_t k = done; k < end; ++k)
        region_.set_state(quarantine_[k].head,
                          quarantine_[k].head + quarantine_[k].pages,
                          PageState::retired, quarantine_[k].head);
      if (calls) {
        std::size_t back = 0;
        if (!region_.change(
                a, b, [](std::size_t) { return PageState::unused; },
                [](std::size_t) { return PageState::retired; }, back, sys_))
          fatal("cannot restore retired pages", region_.rx_page(a), 0);
        protection_calls_ += back;
      }
      quarantine_.erase(quarantine_.begin(), quarantine_.begin() + done);
      return r;
    }
    insert_run(unused_, a, b - a);
    chunks_[static_cast<int>(State::retired)] -= end - done;
    done = end;
  }
  quarantine_.clear();
  return {};
}

Result<void> ArenaImpl::trim_open() {
  const bool revoke_first = region_.ops().revoke_before_decommit();
  while (!open_.empty()) {
    auto it = open_.begin();
    const std::uint32_t a = it->first, n = it->second;
    // Drop the contents first: if making the pages inaccessible then
    // fails, they are still consistently open (and empty). Where a
    // dropped page would read as zeros that execute (a memfd mapped
    // executable), the pages become inaccessible first instead.
    if (!revoke_first) {
      if (Result<void> r = region_.decommit(a, a + n, sys_); !r) return r;
    }
    region_.set_state(a, a + n, PageState::unused, 0);
    if (over_budget()) {
      region_.set_state(a, a + n, PageState::open, 0);
      return Error(Errc::vma_budget);
    }
    std::size_t calls = 0;
    Result<void> r = region_.change(
        a, a + n, [](std::size_t) { return PageState::open; },
        [](std::size_t) { return PageState::unused; }, calls, sys_);
    protection_calls_ += calls;
    if (!r) {
      region_.set_state(a, a + n, PageState::open, 0);
      return make_error(r.error(), nullptr);
    }
    open_.erase(it);
    insert_run(unused_, a, n);
    // Inaccessible and unlisted as open now: if giving the memory back
    // fails, the pages are consistently unused (and still committed).
    if (revoke_first) {
      if (Result<void> d = region_.decommit(a, a + n, sys_); !d) return d;
    }
  }
  return {};
}

}  // namespace wxa::detail
