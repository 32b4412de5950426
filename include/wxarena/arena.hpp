// SPDX-License-Identifier: MIT
// The Arena: one reservation of address space handing out page-aligned code
// chunks under strict W^X, and the Batch that changes their permissions.
//
// Layering: includes only result.hpp and types.hpp. Everything here is
// noexcept; errors are returned as Result / Error (see result.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "wxarena/result.hpp"
#include "wxarena/types.hpp"

namespace wxa {

class Arena;
struct Options;

namespace detail {
class ArenaImpl;
class HeapImpl;
class Pal;
enum class OpKind : std::uint8_t;
/// Creates an arena on a given platform layer (tests plug a fake one in).
Result<Arena> create_arena(const Options& options, Pal& pal) noexcept;
ArenaImpl& impl_of(Arena& arena) noexcept;
}  // namespace detail

/// The tracked state of a chunk (see the lifecycle in DESIGN.md).
enum class State : std::uint8_t {
  free,        ///< not allocated
  writable,    ///< allocated; writable through rw(), not executable anywhere
  executable,  ///< sealed to code: executable at rx(), no writable view
  read_only,   ///< sealed to data: readable at rx(), never executable
  retired,     ///< released; inaccessible, waiting in quarantine
};

/// What seal() turns a writable chunk into.
enum class Seal : std::uint8_t { execute, read_only };

[[nodiscard]] std::string_view to_string(State state) noexcept;

/// Arena configuration. Every field has a usable default.
struct Options {
  Backend backend = Backend::automatic;
  /// Address space reserved up front (PROT_NONE, nothing committed); rounded
  /// up to pages. It bounds everything the arena can hand out at once.
  /// kernel_write also reserves a staging pool right next to it, where
  /// writable chunks are written until sealed: an eighth of this (all of it
  /// up to 64 MiB), so that writable chunks not yet sealed hold at most
  /// that at once (beyond it allocate() and unseal fail with exhausted).
  /// Up to 1.77 GiB, every staging page is within 2 GiB of every code page.
  std::size_t reserve_bytes = std::size_t{1} << 30;
  /// If set, the whole reservation lies within `reach` bytes of `anchor`
  /// (e.g. the host's text, so generated code can call it with rel32).
  const void* anchor = nullptr;
  /// Maximum distance from anchor; 0 means 2 GiB less one reservation (x86-64
  /// rel32). Ignored without an anchor.
  std::size_t reach = 0;
  /// A released chunk's pages are not handed out again until this many
  /// later chunks have been released too, or this many allocated (a stale
  /// call faults meanwhile). Chunks released in one commit pass the
  /// quarantine together. Counting allocations lets a JIT that frees code
  /// and then only compiles reuse those pages instead of faulting in fresh
  /// ones (and holding both).
  std::size_t quarantine = 16;
  /// Most kernel VMAs the arena may occupy; 0 means a quarter of
  /// vm.max_map_count. Operations that would exceed it fail with
  /// Errc::vma_budget before the kernel would.
  std::size_t vma_budget = 0;
  /// Pages made writable ahead of need with one call, so that allocate()
  /// is usually free of system calls (they cost no memory until written);
  /// also how many quarantined pages are recycled together (at most 64 on
  /// kernel_write, where recycling makes no call: recently written pages
  /// are reused while they are still in the caches).
  std::size_t open_pages = 1024;
  /// Name the arena's mappings in /proc/<pid>/maps where the kernel allows.
  bool name_mappings = true;
  /// kernel_write: the reservation is split into this many lanes, each
  /// backed by a memfd of its own (made when its first page is opened),
  /// and each thread allocates from one lane first, so that threads
  /// publishing side by side do not wait for each other's writes (the
  /// kernel serialises writes to one file). Each lane in use is a VMA of
  /// its own. 0: one per online CPU, at most 8; 1: one memfd. Lanes hold
  /// at least 64 pages each, so small reservations get fewer. More than
  /// 64 is refused (invalid_argument); otherwise ignored by the other
  /// backends.
  std::size_t lanes = 0;
};

/// One chunk as handed out: its writable view (only while writable) and its
/// executable address, which is also the chunk's identity in every call.
/// In the protect backend both are the same address; in dual_map they differ.
/// A Chunk is a plain descriptor: copying it copies no memory.
class Chunk {
 public:
  constexpr Chunk() noexcept = default;
  constexpr Chunk(std::byte* rw, const std::byte* rx, std::size_t size) noexcept
      : rw_(rw), rx_(rx), size_(size) {}

  /// The writable view; empty unless the chunk was obtained writable.
  [[nodiscard]] std::span<std::byte> rw() const noexcept {
    return rw_ ? std::span<std::byte>(rw_, size_) : std::span<std::byte>();
  }
  /// The address code runs at (and the chunk's identity).
  [[nodiscard]] const void* rx() const noexcept { return rx_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] explicit operator bool() const noexcept {
    return rx_ != nullptr;
  }

  /// The function at `offset` within the chunk, as a pointer of type Fn*.
  template <class Fn>
  [[nodiscard]] Fn* entry(std::size_t offset = 0) const noexcept {
    return reinterpret_cast<Fn*>(const_cast<std::byte*>(rx_ + offset));
  }

 private:
  std::byte* rw_ = nullptr;
  const std::byte* rx_ = nullptr;
  std::size_t size_ = 0;
};

/// What find() knows about an address.
struct ChunkInfo {
  Chunk chunk;  ///< rw() is non-empty only in State::writable
  State state = State::free;
  std::size_t offset = 0;  ///< of the queried address within the chunk
};

/// What one Batch::commit() did.
struct CommitReport {
  std::size_t chunks = 0;            ///< transitions applied
  std::size_t runs = 0;              ///< coalesced page runs
  std::size_t protection_calls = 0;  ///< mprotect / view mapping calls
  std::size_t writes = 0;   ///< pwritev calls copying code in (kernel_write)
  std::size_t flushes = 0;  ///< instruction-cache flush ranges
  bool barrier = false;     ///< a cross-thread barrier was issued
};

/// A snapshot of an arena's accounting.
struct Stats {
  Backend backend = Backend::automatic;  ///< the backend in use (never
                                         ///< automatic once created)
  std::size_t page_size = 0;
  std::size_t reserved_bytes = 0;
  std::size_t committed_bytes = 0;  ///< pages that are not PROT_NONE-and-clean
  std::size_t open_bytes = 0;       ///< free pages already writable (reserve)
  std::size_t bytes[5] = {};        ///< by State (index with State)
  std::size_t chunks[5] = {};       ///< live chunks by State (free: 0)
  std::size_t vmas = 0;             ///< kernel VMAs the arena occupies
  std::size_t vma_budget = 0;
  /// kernel_write: staging memory holding writable chunks now, and staging
  /// that may be resident (held, or free but not given back yet: at most
  /// what recent commits used plus a few pages). 0 elsewhere.
  std::size_t staging_bytes = 0, staging_resident_bytes = 0;
  SyscallCounts syscalls;
  std::uint64_t allocations = 0, commits = 0, runs = 0, protection_calls = 0,
                flushes = 0, barriers = 0;

  [[nodiscard]] std::size_t bytes_in(State s) const noexcept {
    return bytes[static_cast<int>(s)];
  }
  [[nodiscard]] std::size_t chunks_in(State s) const noexcept {
    return chunks[static_cast<int>(s)];
  }
};

/// A maximal run of pages with one tracked state, for auditors.
struct RunInfo {
  const void* rx = nullptr;  ///< start in the executable view
  void* rw = nullptr;        ///< start in the writable view (dual_map)
  std::size_t bytes = 0;
  State state = State::free;
  bool open = false;                ///< free but already writable
  Access rx_access = Access::none;  ///< expected kernel protection, rx view
  Access rw_access = Access::none;  ///< expected protection, rw view (dual)
};

/// Flags for Batch::commit().
enum class CommitFlags : std::uint8_t {
  none = 0,
  /// Issue the cross-thread barrier even if not needed. Where the host has
  /// no membarrier SYNC_CORE, the commit fails with not_supported instead
  /// (and changes nothing): no other way makes every thread serialise.
  barrier = 1,
};

/// An arena of executable memory. Thread safety: every member function may be
/// called from any thread at any time; the arena serialises them with one
/// internal mutex. On kernel_write, the kernel's copy of a commit's bytes
/// runs outside it, so threads publishing different chunks copy side by
/// side; a commit naming a chunk whose copy is under way waits for that
/// commit to end, then applies to the states it left. Moving an arena is
/// not thread-safe. A moved-from arena answers every call with
/// invalid_argument (or empty stats, ranges and runs).
///
/// In a child process (made by any kind of fork), every call that could
/// change the arena fails with wrong_process, and so does find(): the child
/// shares the parent's code memory (dual_map, kernel_write) or holds a copy
/// of an arena whose lock another thread may have held at the fork. The
/// child may still call the code it inherited, and destroy the arena.
class Arena {
 public:
  /// Reserves the address space and probes the platform once.
  /// Errors: invalid_argument, size_too_large, unreachable_anchor,
  /// not_supported (no usable backend), out_of_memory, permission_denied.
  [[nodiscard]] static Result<Arena> create(
      const Options& options = {}) noexcept;

  Arena(Arena&& other) noexcept;
  Arena& operator=(Arena&& other) noexcept;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  /// Unmaps everything; chunks become invalid.
  ~Arena();

  /// A writable chunk of at least `bytes` bytes (rounded up to pages),
  /// filled with trap instructions or zeros. Usually makes no system call.
  /// Errors: zero_size, size_too_large, exhausted, vma_budget, OS errors.
  [[nodiscard]] Result<Chunk> allocate(std::size_t bytes) noexcept;

  /// Makes a writable chunk executable (or read-only data). Flushes the
  /// instruction cache for it first. One batch of one; see Batch.
  [[nodiscard]] Result<void> seal(const void* rx,
                                  Seal to = Seal::execute) noexcept;
  [[nodiscard]] Result<void> seal(const Chunk& c,
                                  Seal to = Seal::execute) noexcept {
    return seal(c.rx(), to);
  }
  /// Makes an executable or read-only chunk writable again, for patching.
  /// The caller guarantees no thread runs it meanwhile. Returns the chunk
  /// with its writable view.
  [[nodiscard]] Result<Chunk> unseal(const void* rx) noexcept;
  /// Retires a chunk (any allocated state): it becomes inaccessible at once,
  /// and its pages are reused only after the quarantine.
  [[nodiscard]] Result<void> release(const void* rx) noexcept;
  [[nodiscard]] Result<void> release(const Chunk& c) noexcept {
    return release(c.rx());
  }
  /// Writes `bytes` into live code at `at` (an address inside an executable
  /// chunk; the whole range must lie inside that chunk), then makes the new
  /// bytes visible to instruction fetch on every thread (cache maintenance
  /// and the cross-thread barrier). The caller guarantees that no thread
  /// runs the patched bytes meanwhile.
  /// kernel_write: nothing becomes non-executable; other code on the same
  /// page keeps running. protect and dual_map: unseal + write + seal in one
  /// call; the chunk's pages are not executable meanwhile, so other code on
  /// them must not run either.
  /// Errors: null_pointer, foreign_pointer, not_allocated, illegal_transition
  /// (the chunk is not executable), out_of_bounds, zero_size, OS errors; on
  /// error the code is unchanged.
  [[nodiscard]] Result<void> patch(const void* at,
                                   std::span<const std::byte> bytes) noexcept;

  /// The chunk containing `address` (either view), with its state and the
  /// address's offset. Errors: null_pointer, foreign_pointer, not_allocated
  /// (free or retired pages).
  [[nodiscard]] Result<ChunkInfo> find(const void* address) const noexcept;

  /// Gives memory back to the OS. The quarantine ends for every released
  /// chunk: after one cross-thread barrier, its pages are made inaccessible
  /// (a stale call faults) and decommitted, and later allocations may reuse
  /// them. Free pages are decommitted and made inaccessible too, and
  /// writable staging (kernel_write) and commit scratch nobody holds are
  /// given back.
  [[nodiscard]] Result<void> trim() noexcept;

  [[nodiscard]] Stats stats() const noexcept;
  [[nodiscard]] Backend backend() const noexcept;
  [[nodiscard]] std::size_t page_size() const noexcept;
  /// The reservation, as seen in the executable view.
  [[nodiscard]] std::span<const std::byte> range() const noexcept;
  /// The writable-view reservation (dual_map), or range() (protect).
  [[nodiscard]] std::span<std::byte> rw_range() const noexcept;
  /// Every run of pages with one tracked state, lowest address first.
  /// Allocates; meant for auditors and tests, not hot paths.
  [[nodiscard]] std::vector<RunInfo> runs() const;

 private:
  friend class Batch;
  friend class CodeHeap;
  friend Result<Arena> detail::create_arena(const Options&,
                                            detail::Pal&) noexcept;
  friend detail::ArenaImpl& detail::impl_of(Arena&) noexcept;
  explicit Arena(detail::ArenaImpl* impl) noexcept : impl_(impl) {}
  detail::ArenaImpl* impl_ = nullptr;
};

/// Collects transitions of many chunks and applies them at once: sorted by
/// address, adjacent pages with the same target coalesced into runs, one
/// protection call per run, one instruction-cache flush pass (before code
/// becomes executable), at most one cross-thread barrier, then the state
/// updates. All-or-nothing: on failure every chunk keeps its state.
///
/// Thread safety: a Batch is used by one thread at a time; different
/// batches on one arena may commit concurrently (the arena serialises them,
/// but for kernel_write's copies; see Arena).
class Batch {
 public:
  explicit Batch(Arena& arena) noexcept;
  Batch(Batch&& other) noexcept;
  Batch& operator=(Batch&& other) noexcept;
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;
  ~Batch();

  /// Queue a transition. Nothing is checked or changed until commit().
  void seal(const void* rx, Seal to = Seal::execute) noexcept;
  void seal(const Chunk& c, Seal to = Seal::execute) noexcept {
    seal(c.rx(), to);
  }
  void unseal(const void* rx) noexcept;
  void release(const void* rx) noexcept;
  void release(const Chunk& c) noexcept { release(c.rx()); }
  /// Queue a patch of live code (see Arena::patch); `bytes` is copied now.
  /// At most one patch per chunk per batch, and no other transition of it.
  void patch(const void* at, std::span<const std::byte> bytes) noexcept;

  /// Applies every queued transition, or none. On success the batch is
  /// emptied; on failure it is kept and the error names the first chunk at
  /// fault (Error::chunk()). Errors: those of the single operations, plus
  /// duplicate_in_batch, vma_budget, not_supported (CommitFlags::barrier
  /// without membarrier) and OS errors.
  [[nodiscard]] Result<CommitReport> commit(
      CommitFlags flags = CommitFlags::none) noexcept;

  [[nodiscard]] std::size_t size() const noexcept;
  [[nodiscard]] bool empty() const noexcept { return size() == 0; }
  void clear() noexcept;

 private:
  friend class detail::ArenaImpl;
  friend class Arena;
  friend class detail::HeapImpl;
  struct Op;
  void push(const void* rx, detail::OpKind kind) noexcept;
  void free_patches() noexcept;
  Arena* arena_ = nullptr;
  Op* ops_ = nullptr;
  std::size_t size_ = 0, capacity_ = 0;
  bool overflow_ = false;  // a queue allocation failed: commit reports it
  Error refused_;          // a queued operation no commit could apply
};

}  // namespace wxa
