// SPDX-License-Identifier: MIT
// CodeHeap: packs small functions into arena pages and publishes them in one
// batch commit, so a thousand functions cost a few pages and a few calls.
//
// Layering: includes arena.hpp (and so result.hpp) only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "wxarena/arena.hpp"
#include "wxarena/result.hpp"

namespace wxa {

namespace detail {
class HeapImpl;
}

/// One function's space in a CodeHeap.
struct Function {
  std::span<std::byte> rw;   ///< where to write it (until publish())
  const void* rx = nullptr;  ///< where it will run, and its identity

  template <class Fn>
  [[nodiscard]] Fn* entry() const noexcept {
    return reinterpret_cast<Fn*>(const_cast<void*>(rx));
  }
};

struct HeapOptions {
  std::size_t alignment = 16;  ///< default function alignment (power of two)
  /// Pages left without a live function are retired (made inaccessible,
  /// then quarantined by the arena) by publish() once at least this many
  /// are waiting; 0 or 1: by the next publish(), the strict default. Opt-in
  /// deferred retirement: a larger value saves a TLB invalidation per page
  /// (retiring 34 or more pages together is one flush on Linux x86-64), at
  /// the price of dead functions on waiting pages staying callable until
  /// then. They run their old code, never new code: a page is written again
  /// only after its retirement and the quarantine.
  std::size_t retire_pages = 0;
};

struct HeapStats {
  std::size_t live_functions = 0;     ///< published and pending, not released
  std::size_t pending_functions = 0;  ///< written but not yet published
  std::size_t live_bytes = 0;         ///< bytes asked for by live functions
  std::size_t committed_bytes = 0;    ///< pages the heap holds from the arena
                                      ///< (`pages` and `reserve_pages`)
  std::size_t pages = 0;
  std::size_t empty_pages = 0;    ///< of `pages`: no live function, waiting
                                  ///< to be retired (see retire_pages)
  std::size_t reserve_pages = 0;  ///< not in `pages`: taken from the arena
                                  ///< ahead of need (at most 16), writable,
                                  ///< given back when the heap is destroyed
  std::uint64_t publishes = 0;
  /// Of `committed_bytes`: writable pages held in staging memory
  /// (kernel_write: the pages written since the last publish() and the
  /// reserve); 0 where writable pages are the code's own.
  std::size_t staging_bytes = 0;
  [[nodiscard]] double committed_per_live() const noexcept {
    return live_bytes ? double(committed_bytes) / double(live_bytes) : 0.0;
  }
};

/// A heap of small functions on an Arena. Functions are written through
/// Function::rw, become callable at Function::rx after publish(), and are
/// released one by one; a page goes back to the arena (retired, then
/// quarantined) once no live function remains on it, so space is reused only
/// when that is safe.
///
/// On Backend::kernel_write the heap's last page takes new functions after
/// its seal too, after every byte it ever used (never over a released
/// function): their Function::rw is then the heap's own shadow page, not
/// staging, and the next publish() copies them in, with the traps of
/// released functions, in one write (a function released right before the
/// new ones: traps written into the shadow by publish(), one piece). A JIT
/// publishing one function at a time costs one system call a function, not
/// a fresh page. An emptied last
/// page is retired by the next publish() unless a function went on it first.
///
/// Thread safety: a CodeHeap is used by one thread at a time (give each
/// thread its own heap; heaps on one arena may be used concurrently). The
/// arena must outlive the heap.
class CodeHeap {
 public:
  [[nodiscard]] static Result<CodeHeap> create(
      Arena& arena, const HeapOptions& options = {}) noexcept;
  CodeHeap(CodeHeap&& other) noexcept;
  CodeHeap& operator=(CodeHeap&& other) noexcept;
  CodeHeap(const CodeHeap&) = delete;
  CodeHeap& operator=(const CodeHeap&) = delete;
  /// Releases every page the heap holds (in one commit; one by one if a
  /// page was released behind the heap's back and that commit is refused).
  ~CodeHeap();

  /// Space for a function of `bytes` bytes, aligned to `alignment` (0: the
  /// heap's default). Writable until publish(). Errors: zero_size,
  /// size_too_large, bad_alignment, and the arena's allocation errors.
  [[nodiscard]] Result<Function> allocate(std::size_t bytes,
                                          std::size_t alignment = 0) noexcept;
  /// allocate() and copy `code` in.
  [[nodiscard]] Result<Function> emit(std::span<const std::byte> code,
                                      std::size_t alignment = 0) noexcept;
  /// Seals every pending function (and retires emptied pages, see
  /// HeapOptions::retire_pages) in one batch commit. After it returns, every
  /// function allocated before is callable.
  [[nodiscard]] Result<CommitReport> publish(
      CommitFlags flags = CommitFlags::none) noexcept;
  /// Releases one function by its rx address. Its code stays callable until
  /// the next publish(); from then on, on Backend::kernel_write, its bytes
  /// are traps (written in that publish's commit, the page and the other
  /// functions on it unchanged); on the other backends it runs its old code
  /// until its page is retired. Errors: null_pointer,
  /// foreign_pointer (not this heap's), interior_pointer, double_release
  /// (also once the function's page went back to the arena, as long as no
  /// other chunk holds that page yet).
  [[nodiscard]] Result<void> release(const void* rx) noexcept;

  [[nodiscard]] HeapStats stats() const noexcept;
  [[nodiscard]] Arena& arena() const noexcept;

 private:
  explicit CodeHeap(detail::HeapImpl* impl) noexcept : impl_(impl) {}
  detail::HeapImpl* impl_ = nullptr;
};

}  // namespace wxa
