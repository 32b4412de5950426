// SPDX-License-Identifier: MIT
// ArenaImpl: chunk allocation, lifecycle rules, quarantine, locking, stats
// and the batch commit behind wxa::Arena and wxa::Batch. Its members are
// defined in arena.cpp (creation, allocation, lookups, stats),
// free_space.cpp (lanes, free runs, recycling, trim), commit.cpp (the
// commit, whose steps are the class Commit in commit.hpp) and
// commit_spans.cpp (the quick commit of a CodeHeap's appended code).
//
// Layering: layers 4 and 5. Includes region.hpp (layer 3) and below. The
// fault-injection tests reach in here through detail::create_arena().
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "meta.hpp"
#include "pal/pal.hpp"
#include "region.hpp"
#include "run_map.hpp"
#include "wxarena/arena.hpp"

namespace wxa {

namespace detail {
/// What a queued transition asks for.
enum class OpKind : std::uint8_t {
  seal_execute,
  seal_read_only,
  unseal,
  release,
  patch,  // write `size` bytes from `data` at `rx` (inside a sealed chunk)
};
}  // namespace detail

struct Batch::Op {
  const void* rx;
  detail::OpKind kind;
  std::uint32_t size = 0;           // patch only
  const std::byte* data = nullptr;  // patch only
};

namespace detail {

class Commit;

/// Adds a step's system calls to a total.
inline void add_counts(SyscallCounts& to, const SyscallCounts& n) noexcept {
  to.mmap += n.mmap;
  to.munmap += n.munmap;
  to.mprotect += n.mprotect;
  to.madvise += n.madvise;
  to.memfd += n.memfd;
  to.membarrier += n.membarrier;
  to.other += n.other;
  to.write += n.write;
}

/// Where recycling makes no system call, how many quarantined pages come
/// back together at most (see ArenaImpl::init()).
inline constexpr std::size_t kFreeRecyclePages = 64;
// Lanes when Options::lanes is 0: one per online CPU, at most this many.
inline constexpr std::size_t kDefaultMaxLanes = 8;

class ArenaImpl {
 public:
  ArenaImpl(Pal& pal, const Options& options) noexcept;
  ~ArenaImpl();
  ArenaImpl(const ArenaImpl&) = delete;
  ArenaImpl& operator=(const ArenaImpl&) = delete;

  [[nodiscard]] Result<void> init() noexcept;

  [[nodiscard]] Result<Chunk> allocate(std::size_t bytes) noexcept;
  // Allocates 1 to `most` single-page chunks into out[], adjacent pages
  // (the first is found as allocate() finds one; the others are the open
  // pages right after it), with one lock taken: a CodeHeap's pages, so
  // that threads sharing the arena do not interleave theirs page by page.
  [[nodiscard]] Result<std::size_t> allocate_pages(std::size_t most,
                                                   Chunk* out) noexcept;
  // Bytes of executable chunks (not named by the batch) that the commit
  // overwrites, where the backend copies content in (elsewhere they are
  // ignored): with traps (`data` null: a CodeHeap's released functions),
  // or with `data` (a CodeHeap's new functions appended on bytes of a
  // sealed page that never held code, which hold traps).
  struct WriteSpan {
    const void* rx;
    std::uint32_t size;
    const std::byte* data = nullptr;
  };
  /// Whether any of the spans copies code in (data), not only traps.
  [[nodiscard]] static bool spans_carry_code(const WriteSpan* spans,
                                             std::size_t n) noexcept {
    return std::any_of(spans, spans + n,
                       [](const WriteSpan& w) { return w.data != nullptr; });
  }
  [[nodiscard]] Result<CommitReport> commit(
      const Batch::Op* ops, std::size_t n, CommitFlags flags,
      const WriteSpan* spans = nullptr, std::size_t span_count = 0) noexcept;
  [[nodiscard]] Result<ChunkInfo> find(const void* p) const noexcept;
  [[nodiscard]] Result<void> trim() noexcept;
  [[nodiscard]] Stats stats() const noexcept;
  [[nodiscard]] std::vector<RunInfo> runs() const;

  [[nodiscard]] Backend backend() const noexcept { return region_.backend(); }
  [[nodiscard]] const Region& region() const noexcept { return region_; }
  [[nodiscard]] Chunk chunk_at(std::size_t head, bool writable) const noexcept;

 private:
  friend class Commit;
  using Op = Batch::Op;  // for Commit, which Batch does not befriend

  struct Quarantined {
    std::uint32_t head, pages;
    std::uint64_t seq;        // releases_ when released
    std::uint64_t alloc_seq;  // allocations_ when released
  };
  struct Item {  // one validated transition in a commit
    std::uint32_t head, pages;
    PageState from, to;
    std::uint32_t op;  // index in the caller's batch
    bool staged;       // writable bytes were staged for it (unseal)
  };
  struct Run {
    std::uint32_t a, b;
    PageState to;
    std::uint32_t first_item, end_item;
    bool changes;  // some page's protection changes in some view
  };
  // What one commit works in, reused: a commit that writes content lets
  // go of the lock while the kernel copies, so every commit in progress
  // needs its own.
  struct Scratch {
    MetaVector<Item> items;
    MetaVector<Run> runs;
    MetaVector<ContentItem> content;
    ContentPlan* plan = nullptr;  // the backend's
  };
  struct Idle {
    Scratch* scratch;
    std::size_t slot;  // my_slot() of the thread that used it last
  };

  // init()'s steps: the reservation's pages; the range an anchor allows
  // (lo, hi untouched without one); the region, made with the first of
  // `candidates` that fits the VMA budget and can be made; how many
  // quarantined pages come back together.
  [[nodiscard]] Result<std::size_t> reservation_pages(
      std::size_t page_size) const noexcept;
  [[nodiscard]] Result<void> anchor_range(std::size_t bytes, std::uintptr_t& lo,
                                          std::uintptr_t& hi) const noexcept;
  [[nodiscard]] Result<void> make_region(const BackendFacts** candidates,
                                         std::size_t count, std::size_t pages,
                                         std::uintptr_t lo,
                                         std::uintptr_t hi) noexcept;
  void set_recycling() noexcept;
  // trim()'s steps: the quarantine ends and gives its memory back, then
  // the open pages do, then commit scratch nobody uses. May throw
  // std::bad_alloc.
  [[nodiscard]] Result<void> trim_quarantine();
  [[nodiscard]] Result<void> trim_open();
  void trim_scratch() noexcept;

  [[nodiscard]] Result<std::uint32_t> validate(const Batch::Op& op,
                                               PageState& from,
                                               PageState& to) const noexcept;
  // First fit among the open pages; with `lane`, only those in this
  // thread's lane.
  [[nodiscard]] std::ptrdiff_t take_open(std::size_t pages,
                                         bool lane = false) noexcept;
  // allocate()'s work under the lock, except the staging's trap fill: the
  // chunk's head page.
  [[nodiscard]] Result<std::uint32_t> allocate_locked(
      std::size_t pages) noexcept;
  // Makes pages [head, head + n), free and taken out of the free runs by
  // the caller, a writable chunk with its staging; on failure (no staging)
  // nothing changed.
  [[nodiscard]] Result<void> make_writable(std::uint32_t head,
                                           std::uint32_t n) noexcept;
  // Lets go of `lock` and fills the new chunks' staging with traps (their
  // pages are no one else's yet), where the backend stages.
  void fill_staging(std::unique_lock<std::mutex>& lock, const Chunk* chunks,
                    std::size_t n) noexcept;
  // Opens free pages for a chunk of `pages`; with `lane`, in this thread's
  // lane only (exhausted if it has no room).
  [[nodiscard]] Result<void> open_more(std::size_t pages,
                                       bool lane = false) noexcept;
  // Opens pages [a, a + n) of the unused run at `it`, which holds them; on
  // failure nothing changed.
  [[nodiscard]] Result<void> open_at(RunMap::iterator it, std::uint32_t a,
                                     std::uint32_t n) noexcept;
  // This thread's slot: the lowest number no other live thread holds.
  [[nodiscard]] static std::size_t my_slot() noexcept;
  // The pages [lo, hi) of the lane this thread allocates from first (all
  // of them with one lane).
  struct LanePages {
    std::size_t lo, hi;
  };
  [[nodiscard]] LanePages my_lane() const noexcept;
  [[nodiscard]] Result<void> recycle() noexcept;
  [[nodiscard]] std::size_t eligible_pages() const noexcept;
  // A quarantined entry may be reused once `quarantine` chunks have been
  // released, or allocated, after it.
  [[nodiscard]] bool passed(const Quarantined& q) const noexcept {
    return released_ - q.seq >= options_.quarantine ||
           allocations_ - q.alloc_seq >= options_.quarantine;
  }
  [[nodiscard]] bool over_budget() const noexcept {
    return region_.vmas() > vma_budget_;
  }
  // Sorts a commit's items by address; a chunk named twice is a caller
  // error (duplicate_in_batch).
  [[nodiscard]] Result<void> sort_items(MetaVector<Item>& items) const;
  // Applies a batch, with the lock held (a Commit does). Where the backend
  // writes content and `lock` is given, the lock is let go while the kernel
  // copies (the batch's chunks are marked kInFlight meanwhile). Sets `busy`,
  // changing nothing, when a chunk is in another commit's flight.
  [[nodiscard]] Result<CommitReport> commit_locked(
      const Batch::Op* ops, std::size_t n, CommitFlags flags, Scratch& s,
      std::unique_lock<std::mutex>* lock, bool& busy,
      const WriteSpan* spans = nullptr, std::size_t span_count = 0);
  // The chunk a span lies in (executable, not in flight: else `busy`),
  // or the error a commit naming it gets.
  [[nodiscard]] Result<std::uint32_t> span_chunk(const WriteSpan& t,
                                                 bool& busy) const noexcept;
  // A commit of spans only, without a plan, where the backend's quick way
  // takes them (commit_spans.cpp): sets `taken` when it did the commit or
  // refused it, else changed nothing (the caller commits the usual way).
  [[nodiscard]] Result<CommitReport> commit_spans(
      std::unique_lock<std::mutex>& lock, const WriteSpan* spans,
      std::size_t count, bool& taken) noexcept;
  // Patches where the backend cannot write live code: unseal, write, seal.
  [[nodiscard]] Result<CommitReport> commit_by_unsealing(const Batch::Op* ops,
                                                         std::size_t n,
                                                         CommitFlags flags,
                                                         Scratch& s);
  [[nodiscard]] Scratch* take_scratch() noexcept;
  void give_scratch(Scratch* s) noexcept;

  // Takes the arena's lock. Critical sections are short (the kernel's copy
  // of a commit runs outside them), so a thread that finds the lock taken
  // spins for a moment first: sleeping on the futex and being woken costs
  // two system calls and an inter-processor interrupt, more than the wait.
  [[nodiscard]] std::unique_lock<std::mutex> acquire() const noexcept;
  // Takes it again, the same way.
  static void relock(std::unique_lock<std::mutex>& lock) noexcept;

  Pal& pal_;
  Options options_;
  mutable std::mutex mutex_;
  Region region_;
  std::size_t vma_budget_ = 0;
  // Quarantined pages recycled together (see init()).
  std::size_t recycle_pages_ = 1;
  bool barrier_registered_ = false;
  // The backend's writer where it writes without the lock (the quick
  // commit of spans needs that), else null.
  ContentWriter* quick_writer_ = nullptr;
  // The process that made the arena: its token (see process_token()) and
  // its count of glibc fork()s (where the kernel ignores MADV_WIPEONFORK).
  std::uint64_t process_token_ = 0;
  std::uint64_t fork_generation_ = 0;

 public:
  // Whether this is another process than the one that made the arena: a
  // child made by any kind of fork. Such a child shares a memfd-backed
  // arena's pages with the parent, and may hold a copy of the arena whose
  // lock a thread that no longer exists held at the fork; so every call is
  // refused there, and checked before any lock is taken. Two loads, no
  // system call.
  [[nodiscard]] bool foreign_process() const noexcept {
    return current_process_token() != process_token_ ||
           fork_generation() != fork_generation_;
  }

 private:
  // Free space: runs of pages by start index, coalesced.
  RunMap open_;                         // free, prepared already
  RunMap unused_;                       // free, inaccessible
  MetaVector<Quarantined> quarantine_;  // oldest first
  std::uint64_t released_ = 0;

  // Scratch reused by every commit, so a commit does not allocate.
  MetaVector<Idle> idle_scratch_;  // capacity: every one made
  std::size_t scratch_made_ = 0;
  std::condition_variable flight_done_;  // a commit let go of its chunks
  std::size_t waiting_ = 0;              // commits waiting for that
  // Releases of commits in flight, for which the quarantine has room.
  std::size_t in_flight_releases_ = 0;
  MetaVector<Batch::Op> split_;  // commit_by_unsealing()'s own batches
  MetaVector<std::byte> patch_saved_;

  mutable SyscallCounts sys_;
  std::size_t chunks_[5] = {};
  std::uint64_t allocations_ = 0, commits_ = 0, run_count_ = 0,
                protection_calls_ = 0, flushes_ = 0, barriers_ = 0;
};

}  // namespace detail
}  // namespace wxa
