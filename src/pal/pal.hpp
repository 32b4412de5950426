// SPDX-License-Identifier: MIT
// The platform contract: every OS call wxarena makes goes through Pal.
//
// Layering: layer 2 (see DESIGN.md). Includes only the public result and
// value types (wxarena/types.hpp); nothing above this folder calls the OS.
// One file per OS family implements it (linux.cpp, windows.cpp) over a
// shared middle (common.cpp: fatal, formatting, errno translation,
// metadata allocation); processor-specific bits are in cpu.hpp. A Pal counts
// every system call it makes (failed ones too) in the SyscallCounts it is
// handed. Tests plug in a fake Pal (derived from the real one) to inject
// failures.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>

#include "wxarena/result.hpp"
#include "wxarena/types.hpp"

namespace wxa::detail {

/// The error number of the library's own out-of-memory errors (a failed
/// metadata allocation), in the OS's numbering: ENOMEM, or
/// ERROR_NOT_ENOUGH_MEMORY on Windows.
#ifdef _WIN32
inline constexpr int kNoMemory = 8;
#else
inline constexpr int kNoMemory = ENOMEM;
#endif

/// What the platform allows; probed once per process.
struct Capabilities {
  std::size_t page_size = 0;
  /// Alignment of reservations and views: the page size on Linux, the
  /// allocation granularity (64 KiB) on Windows. Chunks stay page-sized.
  std::size_t granularity = 0;
  std::size_t max_map_count = 0;  ///< vm.max_map_count (65530 if unknown)
  std::size_t cpus = 1;           ///< online CPUs (1 if unknown)
  bool anon_exec = false;      ///< private anonymous memory may gain PROT_EXEC
  bool shared_memory = false;  ///< memfd_create works
  bool shared_exec = false;    ///< a memfd may be mapped PROT_EXEC
  bool memfd_exec_flag = false;  ///< the kernel knows MFD_EXEC
  bool barrier = false;          ///< membarrier PRIVATE_EXPEDITED_SYNC_CORE
  bool vma_naming = false;       ///< PR_SET_VMA_ANON_NAME
  /// The kernel can copy into a shared object that is mapped executable
  /// (pwritev into a memfd, seen through a read+execute view): the
  /// kernel_write backend's mechanism.
  bool shared_write = false;
  bool populate_read = false;  ///< MADV_POPULATE_READ (Linux 5.14)
  /// Parts of one private anonymous mapping merge again, protection
  /// permitting, only where the kernel's record of their anonymous memory
  /// agrees (Linux's anon_vma). A write makes that record for the whole VMA
  /// it lands in, so parts written while apart stay apart for good, and on
  /// kernels without a 2025 fix (6.1 among them) a written part also never
  /// merges back into an unwritten neighbour. A reservation written once
  /// while it is still one VMA gives every later part the same record, and
  /// its parts then merge by protection alone, as the region counts them
  /// (the protect backend does this; see docs/portability.md).
  bool anon_merge_by_origin = false;
};

/// A shared-memory object (memfd on Linux, a pagefile-backed section on
/// Windows).
struct SharedHandle {
#ifdef _WIN32
  void* section = nullptr;
  [[nodiscard]] bool valid() const noexcept { return section != nullptr; }
#else
  int fd = -1;
  /// The same object opened read-only (through /proc/self/fd), or -1: views
  /// that are never writable are mapped through it, so that not even
  /// mprotect() can make them writable later (a shared mapping of a
  /// read-only descriptor may not gain PROT_WRITE).
  int ro_fd = -1;
  /// fork_generation() of the process that created it: a fork() child has
  /// the descriptors closed for it (see create_shared) and must not close
  /// the numbers again, which may by then name other files.
  std::uint64_t generation = 0;
  [[nodiscard]] bool valid() const noexcept { return fd >= 0; }
#endif
};

/// One piece of a write into a shared object.
struct WritePiece {
  const void* data;
  std::size_t bytes;
};

class Pal {
 public:
  virtual ~Pal() = default;

  /// Probes on first use (the probe's own calls are not charged to anyone).
  [[nodiscard]] virtual const Capabilities& capabilities() noexcept;

  /// Reserves `bytes` of inaccessible address space, nothing committed. If
  /// hi > lo, the whole range lies within [lo, hi). Linux: fenced by a guard
  /// page at each end that no mapping merges with, so that the kernel never
  /// joins a page of the range to a mapping outside it.
  [[nodiscard]] virtual Result<std::byte*> reserve(std::size_t bytes,
                                                   std::uintptr_t lo,
                                                   std::uintptr_t hi,
                                                   SyscallCounts& n) noexcept;
  /// Unmaps for good a range reserve() returned (with its guards).
  [[nodiscard]] virtual Result<void> unmap(void* p, std::size_t bytes,
                                           SyscallCounts& n) noexcept;
  /// Changes the protection of an existing private mapping.
  [[nodiscard]] virtual Result<void> protect(void* p, std::size_t bytes,
                                             Access access,
                                             SyscallCounts& n) noexcept;
  /// Replaces a range with fresh inaccessible anonymous memory: drops any
  /// view there and decommits (one call).
  [[nodiscard]] virtual Result<void> reset(void* p, std::size_t bytes,
                                           SyscallCounts& n) noexcept;
  /// Gives the pages' contents back without changing protection.
  [[nodiscard]] virtual Result<void> decommit(void* p, std::size_t bytes,
                                              SyscallCounts& n) noexcept;
  /// Creates a shared-memory object of `bytes` bytes that may be mapped
  /// executable, closed on exec and closed in fork() children (a child must
  /// not be able to write its parent's code through an inherited
  /// descriptor).
  [[nodiscard]] virtual Result<SharedHandle> create_shared(
      std::size_t bytes, const char* name, SyscallCounts& n) noexcept;
  [[nodiscard]] virtual Result<void> close_shared(SharedHandle h,
                                                  SyscallCounts& n) noexcept;
  /// Reserves the address range of one view of all of `h` (bytes long),
  /// inaccessible, optionally within [lo, hi); `max` is the most access the
  /// view will ever be given (read_execute or read_write). Linux: the same
  /// anonymous placeholder as reserve(), views are mapped over it later.
  /// Windows: a whole view of the section whose pages are made no-access
  /// (a view cannot be mapped over part of a reservation there).
  [[nodiscard]] virtual Result<std::byte*> reserve_view(
      SharedHandle h, std::size_t bytes, std::uintptr_t lo, std::uintptr_t hi,
      Access max, SyscallCounts& n) noexcept;
  /// Unmaps for good a range reserve_view() returned.
  [[nodiscard]] virtual Result<void> unmap_view(void* p, std::size_t bytes,
                                                SyscallCounts& n) noexcept;
  /// Maps [offset, offset+bytes) of `h` at p (replacing what is there), in
  /// a range reserve_view() returned. Writable views are excluded from
  /// fork() children. Windows: the view is already there; this changes the
  /// protection of its pages.
  [[nodiscard]] virtual Result<void> map_shared(void* p, std::size_t bytes,
                                                SharedHandle h,
                                                std::size_t offset,
                                                Access access,
                                                SyscallCounts& n) noexcept;
  /// Frees the backing store of part of a shared object; `view` is where
  /// that part lies in one of its views (Windows discards through a view).
  [[nodiscard]] virtual Result<void> discard_shared(SharedHandle h,
                                                    std::size_t offset,
                                                    std::size_t bytes,
                                                    void* view,
                                                    SyscallCounts& n) noexcept;
  /// Writes the pieces, one after another, into `h` from `offset` on, with
  /// one call per at most IOV_MAX pieces (pwritev). A short write is
  /// retried for the rest; an error is returned as is (part may have been
  /// written: the caller restores what it needs). Counted as `write`.
  [[nodiscard]] virtual Result<void> write_shared(SharedHandle h,
                                                  std::size_t offset,
                                                  const WritePiece* pieces,
                                                  std::size_t count,
                                                  SyscallCounts& n) noexcept;
  /// Maps the pages of a readable range in (MADV_POPULATE_READ), so that
  /// the first access does not fault. not_supported where the kernel lacks
  /// it; the caller carries on.
  [[nodiscard]] virtual Result<void> populate(void* p, std::size_t bytes,
                                              SyscallCounts& n) noexcept;
  /// Keeps an anonymous read+write range in small pages (no transparent
  /// huge pages), so that giving pages back (decommit) gives back what it
  /// names, not a whole huge page's worth around it. not_supported where
  /// the kernel has no huge pages; the caller carries on.
  [[nodiscard]] virtual Result<void> small_pages(void* p, std::size_t bytes,
                                                 SyscallCounts& n) noexcept;
  /// Names an anonymous range in /proc/<pid>/maps.
  [[nodiscard]] virtual Result<void> name(void* p, std::size_t bytes,
                                          const char* label,
                                          SyscallCounts& n) noexcept;
  /// Registers this process for the cross-thread barrier (idempotent; the
  /// call is made once per process).
  [[nodiscard]] virtual Result<void> register_barrier(
      SyscallCounts& n) noexcept;
  /// Makes every thread of the process execute a serialising instruction
  /// before it next runs user code.
  [[nodiscard]] virtual Result<void> barrier(SyscallCounts& n) noexcept;
  /// Makes code written at [p, p+bytes) visible to instruction fetch on this
  /// core (no-op on x86-64). Not a system call.
  virtual void flush_icache(void* p, std::size_t bytes) noexcept;
};

/// Counts fork()s in this process's ancestry line: a child sees a value
/// its parent never had. Cheap (no system call) after the first use. Only
/// children made by glibc's fork() see it change (an atfork handler);
/// process_token() sees every child.
[[nodiscard]] std::uint64_t fork_generation() noexcept;

/// This process's token: non-zero, the same on every call in one process,
/// and different from that of every ancestor it was forked from, whatever
/// made the child (fork(), _Fork(), the system call, clone() without
/// CLONE_VM). Linux: a word on a page marked MADV_WIPEONFORK, which the
/// kernel gives every child as zeros; a child makes its own token on its
/// first call (greater than every ancestor's). The page is made on the
/// first call in the process (one mmap and one madvise, counted in `n`);
/// no call after that. Where the kernel lacks MADV_WIPEONFORK (before
/// 4.14) or ignores it (qemu-user), children keep the parent's token and
/// only fork_generation() tells them apart.
[[nodiscard]] Result<std::uint64_t> process_token(SyscallCounts& n) noexcept;
/// process_token() if this process has made one, else 0; never a system
/// call. An object that recorded process_token() at its creation compares
/// the two to know whether it runs in the process that made it.
[[nodiscard]] std::uint64_t current_process_token() noexcept;

#ifndef _WIN32
/// Registers a descriptor to be closed in every fork() child; false when
/// the table (4096 descriptors) is full.
[[nodiscard]] bool track_for_fork(int fd) noexcept;
void untrack_for_fork(int fd) noexcept;
#endif

/// The process's real platform layer.
[[nodiscard]] Pal& system_pal() noexcept;

/// The one place an errno becomes an Error.
[[nodiscard]] Error error_from_errno(int err,
                                     const void* chunk = nullptr) noexcept;

/// Describes an OS error number (an errno on Linux, a GetLastError value on
/// Windows) into `out`, e.g. "errno 12: Cannot allocate memory".
void os_error_text(int err, char* out, std::size_t cap) noexcept;

/// Writes a message to stderr without allocating, then aborts. The only
/// fatal path: a failed re-seal of code or a detected W^X violation.
[[noreturn]] void fatal(const char* what, const void* address,
                        int err) noexcept;

/// Appends `len` bytes to /tmp/perf-<pid>.map in one write(2); the file is
/// opened once per process. Not counted: it touches no mapping.
[[nodiscard]] Result<void> append_perf_map(const char* text,
                                           std::size_t len) noexcept;
/// The process's perf map file name.
void perf_map_name(char* out, std::size_t cap) noexcept;

/// Allocation of metadata (never inside code pages): mimalloc, loaded so
/// that it does not replace the host's malloc; the C library otherwise.
[[nodiscard]] void* meta_alloc(std::size_t bytes) noexcept;
[[nodiscard]] void* meta_calloc(std::size_t count, std::size_t size) noexcept;
void meta_free(void* p) noexcept;
/// Asks the metadata allocator to give what it keeps for reuse back to the
/// OS (Arena::trim(), and an arena's end).
void meta_collect() noexcept;
/// True when metadata comes from mimalloc.
[[nodiscard]] bool meta_uses_mimalloc() noexcept;

}  // namespace wxa::detail
