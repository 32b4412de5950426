// SPDX-License-Identifier: MIT
// The backend contract: how a run of pages moves between page states, what
// each view must show, what it costs in VMAs, and the facts each backend
// states about itself. Stated once here; one file per backend implements it:
//
//   protect.cpp       one private mapping flipped with mprotect
//   dual_map.cpp      a memfd with an executable view and writable views
//                     that exist only while a chunk is writable
//   kernel_write.cpp  a memfd mapped once read+execute and never writable;
//                     the kernel copies code in (pwritev), from staging
//                     memory (staging.hpp)
//   registry.cpp      the list of backends, best first, and making one
//
// A backend through which a commit's bytes reach the code (kernel_write)
// also implements ContentWriter (content_writer.hpp), found through
// PageBackend::content_writer().
//
// Layering: layer 3 (see DESIGN.md). Includes the platform layer (pal/) and
// metadata helpers only. A backend knows nothing of chunks' lifecycle rules,
// quarantine, budgets or locking: the region keeps the page state map and the
// VMA count, the arena and its commit decide what changes, and ask the
// backend to carry it out. Nothing outside this folder, the C API and the
// error names names a backend kind.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <span>

#include "backend/content_writer.hpp"
#include "backend/page_state.hpp"
#include "meta.hpp"
#include "pal/cpu.hpp"
#include "pal/pal.hpp"
#include "wxarena/arena.hpp"

namespace wxa::detail {

class PageBackend;

/// What a backend states about itself, before it is made and after: the
/// arena and the region ask these instead of switching on its kind. One
/// per backend file; the registry lists them.
struct BackendFacts {
  Backend kind;
  /// Errc::ok when the host allows the backend (its capabilities as the
  /// platform layer found them by trying), else the error an explicit
  /// request for it gets.
  Errc (*refusal)(const Capabilities& caps) noexcept;
  /// The VMAs its reservation occupies before any page is used.
  std::size_t initial_vmas;
  /// The memory is shared with fork() children (a memfd): only the process
  /// that made the arena may change it.
  bool shared_memory;
  /// The writable view is the executable one: writable bytes are the pages
  /// themselves (their rw view's protection is the rx view's).
  bool rw_is_rx;
  /// Allocates (meta_alloc) and constructs one, or nullptr.
  PageBackend* (*make)() noexcept;
};

/// The contract. Page indices count from the start of the reservation;
/// [a, b) is a run of pages. Every call that may fail leaves the kernel's
/// view as it was, or says what it changed.
class PageBackend {
 public:
  virtual ~PageBackend() = default;

  /// What the backend states about itself (its kind among them).
  [[nodiscard]] virtual const BackendFacts& facts() const noexcept = 0;
  [[nodiscard]] Backend kind() const noexcept { return facts().kind; }
  /// The content-writing protocol, where the backend has it (a commit's
  /// bytes reach the code through it), or nullptr: the owner writes the
  /// pages themselves.
  [[nodiscard]] virtual ContentWriter* content_writer() noexcept {
    return nullptr;
  }

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
  /// bytes: the arena has trap_staging() fill it with traps before handing
  /// it out (after letting go of its lock; the chunk is no one else's
  /// yet). Elsewhere the pages themselves were trap-filled when they were
  /// recycled.
  [[nodiscard]] virtual bool stage_needs_traps() const noexcept {
    return false;
  }
  /// Traps over the staging of a new chunk wherever it may hold anything
  /// else. Called without the arena's lock, by the allocating thread.
  virtual void trap_staging(std::uint32_t head, std::uint32_t pages) noexcept {
    (void)head;
    (void)pages;
  }
  /// Gives back what stage() took, once the chunk is no longer writable (or
  /// the commit that staged it failed); `sealed`: its bytes were just
  /// copied into the code by a commit that succeeded.
  virtual void unstage(std::uint32_t head, std::uint32_t pages,
                       bool sealed) noexcept {
    (void)head;
    (void)pages;
    (void)sealed;
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

  // --- the commit ----------------------------------------------------------

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
  /// After a commit succeeded, with the arena's lock held: staging the
  /// commit let go of may be given back. At most a few calls, none in the
  /// steady state; a failure only keeps the memory (tried again later).
  virtual void after_commit(SyscallCounts& n) noexcept { (void)n; }
  /// Staging memory holding writable chunks now, and staging that may be
  /// resident (held, or free but not given back yet); 0 where writable
  /// bytes are the code's own pages.
  [[nodiscard]] virtual std::size_t staging_bytes() const noexcept { return 0; }
  [[nodiscard]] virtual std::size_t staging_resident_bytes() const noexcept {
    return 0;
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

/// The most backends the registry holds.
inline constexpr std::size_t kMaxBackends = 3;
/// The backends to try for `wanted`, best first, into out[] (room for
/// kMaxBackends): every one the host allows for Backend::automatic, else
/// the one asked for. Errors: not_supported (none allowed, or the one
/// asked for is not), permission_denied (a policy forbids it),
/// invalid_argument (no such backend).
[[nodiscard]] Result<std::size_t> backend_candidates(
    Backend wanted, const Capabilities& caps,
    const BackendFacts** out) noexcept;
/// BackendFacts::make for a backend class B: allocates (meta_alloc) and
/// constructs one, or returns nullptr.
template <class B>
[[nodiscard]] PageBackend* new_backend() noexcept {
  void* mem = meta_alloc(sizeof(B));
  return mem ? ::new (mem) B : nullptr;
}
/// Frees a backend made by BackendFacts::make.
void destroy_backend(PageBackend* backend) noexcept;

}  // namespace wxa::detail
