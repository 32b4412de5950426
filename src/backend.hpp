// SPDX-License-Identifier: MIT
// The backend contract: how a run of pages moves between page states, what
// each view must show, what it costs in VMAs, and how a commit's bytes reach
// the code. Stated once here; one file per backend implements it:
//
//   backend_protect.cpp       one private mapping flipped with mprotect
//   backend_dual_map.cpp      a memfd with an executable view and writable
//                             views that exist only while a chunk is writable
//   backend_kernel_write.cpp  a memfd mapped once read+execute and never
//                             writable; the kernel copies code in (pwritev)
//
// Layering: layer 3 (see DESIGN.md). Includes the platform layer (pal/) and
// metadata helpers only. A backend knows nothing of chunks' lifecycle rules,
// quarantine, budgets or locking: the region keeps the page state map and the
// VMA count, the arena and its commit engine decide what changes, and ask the
// backend to carry it out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "meta.hpp"
#include "pal/pal.hpp"
#include "wxarena/arena.hpp"

namespace wxa::detail {

/// The state of one page. `unused` and `open` are both free: `open` pages
/// are already prepared (writable in protect and dual_map, mapped in
/// kernel_write), waiting to be handed out without a system call.
enum class PageState : std::uint8_t {
  unused,      // inaccessible, nothing committed
  open,        // free, prepared
  writable,    // in a writable chunk
  executable,  // in an executable chunk
  read_only,   // in a read-only chunk
  retired,     // released, in quarantine; never runnable as its old code
};

inline constexpr int kPageStates = 6;

/// The public State a page state shows as.
constexpr State to_public(PageState s) noexcept {
  switch (s) {
    case PageState::writable:
      return State::writable;
    case PageState::executable:
      return State::executable;
    case PageState::read_only:
      return State::read_only;
    case PageState::retired:
      return State::retired;
    default:
      return State::free;
  }
}

/// One view of the reserved pages. Every backend has `rx` (where code runs
/// and chunks are named); dual_map also has `rw`, a second mapping of the
/// same pages at the same offsets.
enum class View : std::uint8_t { rx = 0, rw = 1 };

/// One chunk whose bytes a commit changes (kernel_write only: the other
/// backends' chunks are written in place by their owner).
struct ContentItem {
  std::uint32_t head, pages;
  PageState from, to;
  /// A patch: `size` bytes at `data` go to `offset` within the chunk.
  const std::byte* data = nullptr;
  std::uint32_t offset = 0, size = 0;
};

/// A commit's writes into the code, as a backend that writes content plans
/// them (opaque to the arena).
class ContentPlan {
 public:
  virtual ~ContentPlan() = default;
};

/// The contract. Page indices count from the start of the reservation;
/// [a, b) is a run of pages. Every call that may fail leaves the kernel's
/// view as it was, or says what it changed.
class PageBackend {
 public:
  virtual ~PageBackend() = default;

  [[nodiscard]] virtual Backend kind() const noexcept = 0;

  // --- the reservation ------------------------------------------------------

  /// Reserves `pages` pages (1 << shift bytes each), optionally within
  /// [lo, hi), with every page `unused`. On failure nothing is left mapped.
  [[nodiscard]] virtual Result<void> init(Pal& pal, std::size_t pages,
                                          unsigned shift, std::uintptr_t lo,
                                          std::uintptr_t hi, bool name,
                                          SyscallCounts& n) noexcept = 0;
  /// Unmaps everything (idempotent). Failures cannot be reported here.
  virtual void destroy(SyscallCounts& n) noexcept = 0;

  /// The most lanes a backend makes (Options::lanes above it is refused).
  static constexpr std::size_t kLaneLimit = 64;
  /// Asked for before init(): split the pages into this many lanes where
  /// the backend's writes serialise per object (kernel_write: one memfd a
  /// lane, since the kernel takes a file's lock for each write), so that
  /// threads working in different lanes do not wait for each other. Others
  /// ignore it.
  virtual void set_lanes(std::size_t lanes) noexcept { (void)lanes; }
  /// Pages per lane (a power of two), or 0 for one lane. Lane edges split
  /// protection calls; where both pages at an edge are mapped, they lie in
  /// different VMAs (different objects never merge).
  [[nodiscard]] virtual std::size_t lane_pages() const noexcept { return 0; }

  [[nodiscard]] std::byte* rx_base() const noexcept { return rx_base_; }

  // --- what the kernel shows ------------------------------------------------

  /// How many views follow the page states (1 or 2).
  [[nodiscard]] virtual int views() const noexcept = 0;
  /// The kernel protection a page in state `s` has in view `v`.
  [[nodiscard]] virtual Access access(PageState s, View v) const noexcept = 0;
  /// Gives view `v` of [a, b) the protection `want`: one call.
  [[nodiscard]] virtual Result<void> set_access(View v, std::size_t a,
                                                std::size_t b, Access want,
                                                SyscallCounts& n) noexcept = 0;
  /// VMAs the backend occupies besides those the page states make.
  [[nodiscard]] virtual std::size_t fixed_vmas() const noexcept { return 0; }
  /// Frees the memory behind [a, b), whose pages are free.
  [[nodiscard]] virtual Result<void> decommit(std::size_t a, std::size_t b,
                                              SyscallCounts& n) noexcept = 0;
  /// True when decommitted pages would still be reachable as code (a hole
  /// in a memfd reads as zeros, which execute): the arena then makes pages
  /// inaccessible before it decommits them, not after.
  [[nodiscard]] virtual bool revoke_before_decommit() const noexcept {
    return false;
  }

  // --- where chunks are written -------------------------------------------

  /// The writable bytes of a chunk about to become writable: a view of its
  /// pages (protect, dual_map) or staging memory (kernel_write), holding,
  /// when `keep_code`, the chunk's current bytes (unseal). Called before any
  /// system call of the commit.
  [[nodiscard]] virtual Result<std::byte*> stage(std::uint32_t head,
                                                 std::uint32_t pages,
                                                 bool keep_code) noexcept = 0;
  /// True when what stage() returns without `keep_code` may hold stale
  /// bytes: the arena fills it with traps before handing it out (after
  /// letting go of its lock; the chunk is no one else's yet). Elsewhere
  /// the pages themselves were trap-filled when they were recycled.
  [[nodiscard]] virtual bool stage_needs_traps() const noexcept {
    return false;
  }
  /// Gives back what stage() took, once the chunk is no longer writable (or
  /// the commit that staged it failed).
  virtual void unstage(std::uint32_t head, std::uint32_t pages) noexcept {
    (void)head;
    (void)pages;
  }
  /// The writable bytes of a writable chunk (what stage() returned).
  [[nodiscard]] virtual std::byte* staged(
      std::uint32_t head) const noexcept = 0;
  /// The page index of a writable address (the chunk's page it stands
  /// for), or -1.
  [[nodiscard]] virtual std::ptrdiff_t page_of_rw(
      const void* p) const noexcept {
    (void)p;
    return -1;
  }
  /// Where writable bytes live: the writable view (dual_map), the staging
  /// reservation (kernel_write), or the reservation itself (protect).
  [[nodiscard]] virtual std::span<std::byte> rw_range() const noexcept = 0;
  /// The address in the writable range standing for page i, for auditors
  /// (nullptr where writable bytes do not follow the page offsets).
  [[nodiscard]] virtual std::byte* rw_page(std::size_t i) const noexcept = 0;

  /// Fills [a, b) of recycled pages with traps, so stale code never becomes
  /// executable again (protect and dual_map write through the writable
  /// view; kernel_write trapped them when they were retired).
  virtual void trap_fill(std::size_t a, std::size_t b) noexcept = 0;

  // --- the commit
  // -------------------------------------------------------------

  /// True when a commit's bytes reach the code through a content plan
  /// (below) rather than by the pages changing protection under the writer.
  [[nodiscard]] virtual bool writes_content() const noexcept { return false; }
  /// True when plan_content(), write_planned() and finish_content() touch
  /// only the plan's own chunks and what never changes after init(), so
  /// the arena may call them without its lock once those chunks are marked
  /// in flight.
  [[nodiscard]] virtual bool plans_without_lock() const noexcept {
    return false;
  }
  /// Turns a commit's items into a plan of writes: staged chunks that are
  /// sealed, traps over chunks that are retired or stop being read-only
  /// data, patches. `plan` is reused from commit to commit (made here when
  /// null; freed with destroy_plan()). Allocates; runs before any system
  /// call of the commit, under the arena's lock unless plans_without_lock().
  [[nodiscard]] virtual Result<void> plan_content(ContentPlan*& plan,
                                                  const ContentItem* items,
                                                  std::size_t count) noexcept {
    (void)plan;
    (void)items;
    (void)count;
    return {};
  }
  /// Copies a plan's bytes into the code. Runs without the arena's lock
  /// where plans_without_lock() says so: it touches only the plan and the
  /// pages of the plan's chunks, which no other commit may name meanwhile.
  /// On failure what was written is restored before it returns.
  [[nodiscard]] virtual Result<void> write_planned(ContentPlan& plan,
                                                   SyscallCounts& n) noexcept {
    (void)plan;
    (void)n;
    return {};
  }
  /// After write_planned(), with or without the lock as it: the backend's
  /// own records of what the plan's pages hold (kept per page, so touching
  /// only those), and fresh pages mapped in. On failure the writes are
  /// undone before it returns (undo_content(), here without the lock).
  /// After success, undo_content() (then under the lock) restores it all.
  [[nodiscard]] virtual Result<void> finish_content(ContentPlan& plan,
                                                    const ContentItem* items,
                                                    std::size_t count,
                                                    SyscallCounts& n) noexcept {
    (void)plan;
    (void)items;
    (void)count;
    (void)n;
    return {};
  }
  /// Restores what a finished plan changed; a failure is fatal.
  virtual void undo_content(ContentPlan& plan, SyscallCounts& n) noexcept {
    (void)plan;
    (void)n;
  }
  virtual void destroy_plan(ContentPlan* plan) noexcept { (void)plan; }
  /// Makes new code in [a, b) visible to instruction fetch (before it is
  /// executable for protect and dual_map, after the content is written for
  /// kernel_write).
  virtual void flush(std::size_t a, std::size_t b) noexcept = 0;
  /// Makes the bytes [at, at + bytes) of live code visible to instruction
  /// fetch on this core.
  virtual void flush_bytes(const void* at, std::size_t bytes) noexcept {
    pal_->flush_icache(const_cast<void*>(at), bytes);
  }

  /// Gives memory nobody uses back (free staging pages); no state changes.
  [[nodiscard]] virtual Result<void> trim(SyscallCounts& n) noexcept {
    (void)n;
    return {};
  }

 protected:
  Pal* pal_ = nullptr;
  std::size_t pages_ = 0;
  unsigned shift_ = 0;
  std::byte* rx_base_ = nullptr;

  [[nodiscard]] std::size_t bytes() const noexcept { return pages_ << shift_; }
  [[nodiscard]] std::byte* rx_page(std::size_t i) const noexcept {
    return rx_base_ + (i << shift_);
  }
};

/// The VMAs a backend's reservation occupies before any page is used.
[[nodiscard]] std::size_t initial_vmas(Backend kind) noexcept;

/// Makes the backend of a kind (not automatic) in metadata memory, or
/// returns nullptr when that fails. Free with destroy_backend().
[[nodiscard]] PageBackend* make_backend(Backend kind) noexcept;
void destroy_backend(PageBackend* backend) noexcept;

/// Fills `bytes` at p with this machine's trap instruction (x86-64 int3,
/// AArch64 brk #0).
void fill_traps(std::byte* p, std::size_t bytes) noexcept;

// Free runs of pages by start index, coalesced (metadata helpers).
using RunMap = MetaMap<std::uint32_t, std::uint32_t>;
/// Inserts [a, a+len) into `runs`, merging with neighbours. May throw
/// std::bad_alloc (only when no neighbour merges).
void insert_run(RunMap& runs, std::uint32_t a, std::uint32_t len);
/// Removes the first `len` pages of the run at `it`.
void carve_front(RunMap& runs, RunMap::iterator it, std::uint32_t len) noexcept;
// Splits the run at `it` at page `a` (inside it) into two adjacent runs and
// returns the one starting at `a` (`it` itself if it starts there). May
// throw std::bad_alloc, before anything changed.
RunMap::iterator split_run(RunMap& runs, RunMap::iterator it, std::uint32_t a);

}  // namespace wxa::detail
