// SPDX-License-Identifier: MIT
// The Windows platform layer: VirtualAlloc, VirtualProtect, sections and
// their views, FlushInstructionCache, FlushProcessWriteBuffers.
//
// System calls are counted under the Linux-named kinds of SyscallCounts:
//   mmap       VirtualAlloc(MEM_RESERVE), MapViewOfFileEx
//   munmap     VirtualFree(MEM_RELEASE), UnmapViewOfFile
//   mprotect   VirtualProtect, VirtualAlloc(MEM_COMMIT) (commit with access)
//   madvise    VirtualFree(MEM_DECOMMIT), VirtualAlloc(MEM_RESET)
//   memfd      CreateFileMappingW
//   membarrier FlushProcessWriteBuffers
//   other      VirtualQuery, CloseHandle
//
// The dual mapping. A view of a section cannot be mapped over part of a
// reservation without placeholder reservations (VirtualAlloc2 /
// MapViewOfFile3), and views start at 64 KiB boundaries of the section, so a
// page-sized chunk cannot have a view of its own. Each reserve_view() is
// therefore one whole view of the section: the executable view is mapped
// FILE_MAP_READ | FILE_MAP_EXECUTE (VirtualProtect refuses write access
// there: no page of it can ever write the section), the writable view
// FILE_MAP_WRITE (no page of it can ever be made executable). Pages of both
// start no-access; map_shared() and reset() change a page's protection
// within its view. A sealed chunk's page is no-access in the writable view:
// the view of the section stays mapped, but no page of it is both writable
// there and executable in the other view.
#include <windows.h>

#include <errno.h>
#include <io.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <cstdio>

#include "pal/common.hpp"
#include "pal/pal.hpp"

namespace wxa::detail {
namespace {

DWORD protection_of(Access access) noexcept {
  switch (access) {
    case Access::none:
      return PAGE_NOACCESS;
    case Access::read:
      return PAGE_READONLY;
    case Access::read_write:
      return PAGE_READWRITE;
    case Access::read_execute:
      return PAGE_EXECUTE_READ;
  }
  return PAGE_NOACCESS;
}

// Arbitrary Code Guard refused dynamic code (not in mingw-w64's headers).
constexpr DWORD kErrorDynamicCodeBlocked = 1655;

// The one place a GetLastError() value becomes an Error.
Error error_from_last(DWORD err, const void* chunk = nullptr) noexcept {
  const int e = static_cast<int>(err);
  switch (err) {
    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY:
    case ERROR_COMMITMENT_LIMIT:
    case ERROR_NO_SYSTEM_RESOURCES:
      return Error(Errc::out_of_memory, e, chunk);
    case ERROR_ACCESS_DENIED:
    case kErrorDynamicCodeBlocked:
      return Error(Errc::permission_denied, e, chunk);
    case ERROR_INVALID_PARAMETER:
    case ERROR_INVALID_ADDRESS:
      return Error(Errc::invalid_argument, e, chunk);
    case ERROR_NOT_SUPPORTED:
    case ERROR_CALL_NOT_IMPLEMENTED:
      return Error(Errc::not_supported, e, chunk);
    default:
      return Error(Errc::os_error, e, chunk);
  }
}

Error last_error() noexcept { return error_from_last(::GetLastError()); }

Capabilities probe() noexcept {
  Capabilities caps;
  SYSTEM_INFO si;
  ::GetSystemInfo(&si);
  caps.page_size = si.dwPageSize ? si.dwPageSize : 4096;
  caps.granularity =
      std::max<std::size_t>(si.dwAllocationGranularity, caps.page_size);
  // Windows has no per-process VMA limit; the budget keeps Linux's default
  // so that an arena fragments the address space no more here than there.
  caps.max_map_count = 65530;
  const std::size_t page = caps.page_size;

  // Private memory may gain execute unless a policy (Arbitrary Code Guard)
  // forbids it: ask by doing it.
  void* p =
      ::VirtualAlloc(nullptr, page, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
  if (p) {
    DWORD old = 0;
    caps.anon_exec = ::VirtualProtect(p, page, PAGE_EXECUTE_READ, &old) != 0;
    if (!::VirtualFree(p, 0, MEM_RELEASE)) caps.anon_exec = false;
  }

  // The section's maximum protection (what views of it may ask for), not
  // a view's: no view below is ever mapped writable and executable.
  HANDLE s = ::CreateFileMappingW(INVALID_HANDLE_VALUE, nullptr,
                                  PAGE_EXECUTE_READWRITE, 0,
                                  static_cast<DWORD>(page), nullptr);
  if (s) {
    caps.shared_memory = true;
    void* x = ::MapViewOfFile(s, FILE_MAP_READ | FILE_MAP_EXECUTE, 0, 0, page);
    if (x) caps.shared_exec = ::UnmapViewOfFile(x) != 0;
    if (!::CloseHandle(s)) caps.shared_memory = false;
  }
  // FlushProcessWriteBuffers needs no registration and cannot fail.
  caps.barrier = true;
  return caps;
}

// The lowest address >= `from` aligned to `align` (a power of two).
std::uintptr_t align_up(std::uintptr_t from, std::uintptr_t align) noexcept {
  return (from + align - 1) & ~(align - 1);
}

// Finds a free, granularity-aligned range of `bytes` within [lo, hi) whose
// middle is closest to the window's middle, walking the address space with
// VirtualQuery. Returns 0 if there is none.
std::uintptr_t find_free(std::size_t bytes, std::uintptr_t lo,
                         std::uintptr_t hi, SyscallCounts& n) noexcept {
  const std::uintptr_t gran = system_pal().capabilities().granularity;
  SYSTEM_INFO si;
  ::GetSystemInfo(&si);
  const auto min_app =
      reinterpret_cast<std::uintptr_t>(si.lpMinimumApplicationAddress);
  const auto max_app =
      reinterpret_cast<std::uintptr_t>(si.lpMaximumApplicationAddress);
  lo = std::max(lo, min_app);
  hi = std::min(hi, max_app);
  const std::uintptr_t mid = lo + (hi - lo) / 2;
  std::uintptr_t best = 0, best_dist = ~std::uintptr_t{0};
  std::uintptr_t at = lo;
  while (at < hi) {
    MEMORY_BASIC_INFORMATION m;
    ++n.other;
    if (::VirtualQuery(reinterpret_cast<void*>(at), &m, sizeof m) == 0) break;
    const auto base = reinterpret_cast<std::uintptr_t>(m.BaseAddress);
    const std::uintptr_t end = base + m.RegionSize;
    if (m.State == MEM_FREE) {
      const std::uintptr_t b = align_up(std::max(base, lo), gran);
      const std::uintptr_t e = std::min(end, hi);
      // The highest aligned start that still fits.
      const std::uintptr_t last =
          e > b && e - b >= bytes ? (e - bytes) & ~(gran - 1) : 0;
      if (last >= b) {
        const std::uintptr_t want =
            mid > bytes / 2 ? (mid - bytes / 2) & ~(gran - 1) : 0;
        const std::uintptr_t place = std::clamp(want, b, last);
        const std::uintptr_t c = place + bytes / 2;
        const std::uintptr_t dist = c > mid ? c - mid : mid - c;
        if (dist < best_dist) best = place, best_dist = dist;
      }
    }
    if (end <= at) break;
    at = end;
  }
  return best;
}

// Makes [p, p+bytes) no-access. Pages that are only reserved (decommitted)
// are inaccessible already: VirtualProtect refuses ranges that contain
// them, so those parts are skipped and the committed parts protected.
Result<void> protect_none(void* p, std::size_t bytes,
                          SyscallCounts& n) noexcept {
  DWORD old = 0;
  ++n.mprotect;
  if (::VirtualProtect(p, bytes, PAGE_NOACCESS, &old)) return {};
  const DWORD err = ::GetLastError();
  if (err != ERROR_INVALID_ADDRESS) return error_from_last(err);
  auto at = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t end = at + bytes;
  while (at < end) {
    MEMORY_BASIC_INFORMATION m;
    ++n.other;
    if (::VirtualQuery(reinterpret_cast<void*>(at), &m, sizeof m) == 0)
      return last_error();
    const std::uintptr_t stop = std::min(
        end, reinterpret_cast<std::uintptr_t>(m.BaseAddress) + m.RegionSize);
    if (m.State == MEM_FREE) return error_from_last(ERROR_INVALID_ADDRESS);
    if (m.State == MEM_COMMIT && m.Protect != PAGE_NOACCESS) {
      ++n.mprotect;
      if (!::VirtualProtect(reinterpret_cast<void*>(at), stop - at,
                            PAGE_NOACCESS, &old))
        return last_error();
    }
    at = stop;
  }
  return {};
}

}  // namespace

const Capabilities& Pal::capabilities() noexcept {
  static const Capabilities caps = probe();
  return caps;
}

Result<std::byte*> Pal::reserve(std::size_t bytes, std::uintptr_t lo,
                                std::uintptr_t hi, SyscallCounts& n) noexcept {
  if (hi <= lo) {
    ++n.mmap;
    void* p = ::VirtualAlloc(nullptr, bytes, MEM_RESERVE, PAGE_NOACCESS);
    if (!p) return last_error();
    return static_cast<std::byte*>(p);
  }
  // Another thread may take the range between the look and the call: then
  // look again.
  for (int attempt = 0; attempt < 4; ++attempt) {
    const std::uintptr_t at = find_free(bytes, lo, hi, n);
    if (at == 0) return Error(Errc::unreachable_anchor);
    ++n.mmap;
    void* p = ::VirtualAlloc(reinterpret_cast<void*>(at), bytes, MEM_RESERVE,
                             PAGE_NOACCESS);
    if (p) return static_cast<std::byte*>(p);
    const DWORD err = ::GetLastError();
    if (err != ERROR_INVALID_ADDRESS) return error_from_last(err);
  }
  return Error(Errc::unreachable_anchor);
}

Result<std::byte*> Pal::reserve_view(SharedHandle h, std::size_t bytes,
                                     std::uintptr_t lo, std::uintptr_t hi,
                                     Access max, SyscallCounts& n) noexcept {
  const DWORD access = max == Access::read_execute
                           ? FILE_MAP_READ | FILE_MAP_EXECUTE
                           : FILE_MAP_WRITE;
  void* view = nullptr;
  for (int attempt = 0; attempt < 4 && !view; ++attempt) {
    std::uintptr_t at = 0;
    if (hi > lo) {
      at = find_free(bytes, lo, hi, n);
      if (at == 0) return Error(Errc::unreachable_anchor);
    }
    ++n.mmap;
    view = ::MapViewOfFileEx(h.section, access, 0, 0, bytes,
                             reinterpret_cast<void*>(at));
    if (!view) {
      const DWORD err = ::GetLastError();
      if (at == 0 || err != ERROR_INVALID_ADDRESS) return error_from_last(err);
    }
  }
  if (!view) return Error(Errc::unreachable_anchor);
  // Pages start with the view's access; nothing of a new section is code
  // yet, and nothing of it may be reachable until the arena says so.
  DWORD old = 0;
  ++n.mprotect;
  if (!::VirtualProtect(view, bytes, PAGE_NOACCESS, &old)) {
    Error e = last_error();
    ++n.munmap;
    if (!::UnmapViewOfFile(view))
      fatal("cannot unmap a view that could not be protected", view,
            static_cast<int>(::GetLastError()));
    return e;
  }
  return static_cast<std::byte*>(view);
}

Result<void> Pal::unmap_view(void* p, std::size_t, SyscallCounts& n) noexcept {
  ++n.munmap;
  if (!::UnmapViewOfFile(p)) return last_error();
  return {};
}

Result<void> Pal::unmap(void* p, std::size_t, SyscallCounts& n) noexcept {
  ++n.munmap;
  if (!::VirtualFree(p, 0, MEM_RELEASE)) return last_error();
  return {};
}

Result<void> Pal::protect(void* p, std::size_t bytes, Access access,
                          SyscallCounts& n) noexcept {
  if (access == Access::none) return protect_none(p, bytes, n);
  // Committing pages that are committed already sets their protection and
  // keeps their contents; reserved pages are committed (zero-filled).
  ++n.mprotect;
  if (!::VirtualAlloc(p, bytes, MEM_COMMIT, protection_of(access)))
    return last_error();
  return {};
}

Result<void> Pal::reset(void* p, std::size_t bytes, SyscallCounts& n) noexcept {
  // Only views call this (dual_map): the page loses all access in its view.
  DWORD old = 0;
  ++n.mprotect;
  if (!::VirtualProtect(p, bytes, PAGE_NOACCESS, &old)) return last_error();
  return {};
}

Result<void> Pal::decommit(void* p, std::size_t bytes,
                           SyscallCounts& n) noexcept {
  // MEM_DECOMMIT also drops the protection (the pages become reserved). The
  // contract keeps it: region by region, pages that were accessible are
  // committed again with their protection, zero-filled on first touch, so
  // the memory is given back all the same. Reserved pages have nothing to
  // give back.
  auto at = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t end = at + bytes;
  while (at < end) {
    MEMORY_BASIC_INFORMATION m;
    ++n.other;
    if (::VirtualQuery(reinterpret_cast<void*>(at), &m, sizeof m) == 0)
      return last_error();
    const std::uintptr_t stop = std::min(
        end, reinterpret_cast<std::uintptr_t>(m.BaseAddress) + m.RegionSize);
    void* here = reinterpret_cast<void*>(at);
    if (m.State == MEM_FREE) return error_from_last(ERROR_INVALID_ADDRESS);
    if (m.State == MEM_COMMIT) {
      ++n.madvise;
      if (!::VirtualFree(here, stop - at, MEM_DECOMMIT)) return last_error();
      if (m.Protect != PAGE_NOACCESS) {
        ++n.mprotect;
        if (!::VirtualAlloc(here, stop - at, MEM_COMMIT, m.Protect))
          return last_error();
      }
    }
    at = stop;
  }
  return {};
}

Result<SharedHandle> Pal::create_shared(std::size_t bytes, const char*,
                                        SyscallCounts& n) noexcept {
  const Capabilities& caps = capabilities();
  if (!caps.shared_memory || !caps.shared_exec)
    return Error(Errc::not_supported);
  // PAGE_EXECUTE_READWRITE is the section's maximum protection, which lets
  // one view be read+execute and another read+write; no single view is
  // ever both. Pagefile-backed and committed whole (SEC_COMMIT): committing
  // pages of a SEC_RESERVE section through one view would make them
  // accessible in the other view with that view's access. Not inheritable:
  // no child process gets a handle to it.
  const auto size = static_cast<std::uint64_t>(bytes);
  ++n.memfd;
  HANDLE s = ::CreateFileMappingW(
      INVALID_HANDLE_VALUE, nullptr, PAGE_EXECUTE_READWRITE | SEC_COMMIT,
      static_cast<DWORD>(size >> 32), static_cast<DWORD>(size), nullptr);
  if (!s) return last_error();
  return SharedHandle{s};
}

Result<void> Pal::close_shared(SharedHandle h, SyscallCounts& n) noexcept {
  ++n.other;
  if (!::CloseHandle(h.section)) return last_error();
  return {};
}

Result<void> Pal::map_shared(void* p, std::size_t bytes, SharedHandle,
                             std::size_t, Access access,
                             SyscallCounts& n) noexcept {
  // The view is there since reserve_view(); its page gains the access.
  DWORD old = 0;
  ++n.mprotect;
  if (!::VirtualProtect(p, bytes, protection_of(access), &old))
    return last_error();
  return {};
}

Result<void> Pal::discard_shared(SharedHandle, std::size_t, std::size_t bytes,
                                 void* view, SyscallCounts& n) noexcept {
  // A pagefile-backed section cannot have a hole punched in it; MEM_RESET
  // tells the system the pages' contents are no longer needed, so it may
  // drop them instead of paging them out (their contents are undefined).
  ++n.madvise;
  if (!::VirtualAlloc(view, bytes, MEM_RESET, PAGE_NOACCESS))
    return last_error();
  return {};
}

Result<void> Pal::write_shared(SharedHandle, std::size_t, const WritePiece*,
                               std::size_t, SyscallCounts&) noexcept {
  // No system call writes a section without a writable view of it
  // (WriteProcessMemory changes the page's protection for the copy), so
  // no backend that needs this is offered here: capabilities().shared_write
  // is false.
  return Error(Errc::not_supported);
}

Result<void> Pal::populate(void*, std::size_t, SyscallCounts&) noexcept {
  return Error(Errc::not_supported);  // capabilities().populate_read
}

Result<void> Pal::small_pages(void*, std::size_t, SyscallCounts&) noexcept {
  return {};  // VirtualAlloc gives large pages only when asked for them
}

Result<void> Pal::name(void*, std::size_t, const char*,
                       SyscallCounts&) noexcept {
  return Error(Errc::not_supported);  // capabilities().vma_naming is false
}

Result<void> Pal::register_barrier(SyscallCounts&) noexcept {
  return {};  // FlushProcessWriteBuffers needs no registration
}

Result<void> Pal::barrier(SyscallCounts& n) noexcept {
  // Interrupts every processor running a thread of this process (an IPI),
  // which serialises its instruction stream before it next runs user code.
  ++n.membarrier;
  ::FlushProcessWriteBuffers();
  return {};
}

void Pal::flush_icache(void* p, std::size_t bytes) noexcept {
  // A no-op on x86-64 hardware, but the documented contract for code that
  // was written: call it, and treat a refusal as what it is.
  if (!::FlushInstructionCache(::GetCurrentProcess(), p, bytes))
    fatal("cannot flush the instruction cache", p,
          static_cast<int>(::GetLastError()));
}

std::uint64_t fork_generation() noexcept {
  return 0;  // Windows has no fork(): every process is its own first
}

Result<std::uint64_t> process_token(SyscallCounts&) noexcept { return 1; }

std::uint64_t current_process_token() noexcept { return 1; }

Pal& system_pal() noexcept {
  static Pal pal;
  return pal;
}

void os_error_text(int err, char* out, std::size_t cap) noexcept {
  char msg[128] = {};
  const DWORD len = ::FormatMessageA(
      FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, nullptr,
      static_cast<DWORD>(err), 0, msg, sizeof msg, nullptr);
  std::size_t k = len;
  while (k > 0 && (msg[k - 1] == '\n' || msg[k - 1] == '\r' ||
                   msg[k - 1] == ' ' || msg[k - 1] == '.'))
    msg[--k] = '\0';
  std::snprintf(out, cap, "error %d: %s", err, k ? msg : "unknown error");
}

// --- perf map ----------------------------------------------------------------

void perf_map_name(char* out, std::size_t cap) noexcept {
  if (cap > 0) out[0] = '\0';  // perf(1) maps are a Linux convention
}

Result<void> append_perf_map(const char*, std::size_t) noexcept {
  return Error(Errc::not_supported);
}

// --- metadata allocation -----------------------------------------------------

const char* const kOsErrorName = "error";

std::ptrdiff_t write_stderr_some(const char* s, std::size_t len) noexcept {
  DWORD w = 0;
  if (!::WriteFile(::GetStdHandle(STD_ERROR_HANDLE), s, static_cast<DWORD>(len),
                   &w, nullptr) ||
      w == 0)
    return -1;
  return static_cast<std::ptrdiff_t>(w);
}

// No mimalloc on Windows builds: the C runtime's heap holds the metadata.
const MetaFunctions& loaded_meta_functions() noexcept {
  static const MetaFunctions none;
  return none;
}

}  // namespace wxa::detail
