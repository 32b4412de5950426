// SPDX-License-Identifier: MIT
// The Linux platform layer: mmap, mprotect, madvise, memfd, membarrier, prctl.
#include <errno.h>
#include <fcntl.h>
#include <linux/membarrier.h>
#include <linux/prctl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <mutex>

#include "pal/common.hpp"
#include "pal/pal.hpp"
#include "wxa_config.h"

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U  // Linux 6.3: the memfd may be mapped executable
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14
#endif

namespace wxa::detail {
namespace {

int prot_of(Access access) noexcept {
  switch (access) {
    case Access::none:
      return PROT_NONE;
    case Access::read:
      return PROT_READ;
    case Access::read_write:
      return PROT_READ | PROT_WRITE;
    case Access::read_execute:
      return PROT_READ | PROT_EXEC;
  }
  return PROT_NONE;
}

// Flags of every inaccessible placeholder, so that adjacent placeholders
// merge into one VMA whichever call made them.
constexpr int kPlaceholderFlags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;

struct MapsGap {
  std::uintptr_t begin, end;
};

// Reads the gaps between the mappings of this process from /proc/self/maps
// into `gaps` (at most `cap`); returns how many, or -1 on failure.
int read_gaps(MapsGap* gaps, int cap, SyscallCounts& n) noexcept {
  ++n.other;
  int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  static constexpr std::size_t kBuf = 1 << 16;
  char buf[kBuf];
  std::size_t have = 0;
  int count = 0;
  std::uintptr_t prev_end = 0x10000;  // below vm.mmap_min_addr: never usable
  // Mappings in the upper half of the address space are the kernel's
  // ([vsyscall] at 0xffffffffff600000 on x86-64) and bound no gap. User
  // space ends at the power of two above its highest mapping, at least
  // 2^47 (x86-64 with 4-level page tables; AArch64 with 48-bit addresses
  // maps near 2^48), less its top page, which the kernel keeps: 64 KiB,
  // any page size.
  constexpr std::uintptr_t kKernelHalf = std::uintptr_t{1} << 63;
  std::uintptr_t user_end = std::uintptr_t{1} << 47;
  bool eof = false;
  while (!eof || have > 0) {
    if (!eof && have < kBuf) {
      ssize_t r = ::read(fd, buf + have, kBuf - have);
      if (r < 0) {
        if (errno == EINTR) continue;
        ::close(fd);
        return -1;
      }
      if (r == 0) eof = true;
      have += static_cast<std::size_t>(r);
    }
    char* nl = static_cast<char*>(memchr(buf, '\n', have));
    if (!nl) {
      if (eof) break;
      if (have == kBuf) {  // an absurdly long line: drop it
        have = 0;
      }
      continue;
    }
    *nl = '\0';
    char* end_ptr = nullptr;
    std::uintptr_t b = strtoull(buf, &end_ptr, 16);
    std::uintptr_t e =
        (*end_ptr == '-') ? strtoull(end_ptr + 1, nullptr, 16) : 0;
    if (e > b && b < kKernelHalf) {
      if (b > prev_end && count < cap) gaps[count++] = {prev_end, b};
      prev_end = std::max(prev_end, e);
      user_end = std::max(user_end, std::bit_ceil(e));
    }
    std::size_t used = static_cast<std::size_t>(nl - buf) + 1;
    memmove(buf, buf + used, have - used);
    have -= used;
  }
  ::close(fd);
  const std::uintptr_t top = user_end - (std::uintptr_t{1} << 16);
  if (prev_end < top && count < cap) gaps[count++] = {prev_end, top};
  return count;
}

std::size_t read_max_map_count() noexcept {
  int fd = ::open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 65530;
  char buf[32] = {};
  ssize_t r = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (r <= 0) return 65530;
  unsigned long v = strtoul(buf, nullptr, 10);
  return v ? v : 65530;
}

int memfd_create_flags(bool exec_flag, bool sealing = false) noexcept {
  return static_cast<int>(MFD_CLOEXEC | (exec_flag ? MFD_EXEC : 0U) |
                          (sealing ? MFD_ALLOW_SEALING : 0U));
}

// kernel_write's whole mechanism, tried for real on a memfd page `fd`
// mapped read+execute at `view`: the kernel copies a function in, it runs;
// another replaces it at the same address, and that one runs. An emulator
// that keeps translated code until the guest itself stores to the page
// (qemu-user) fails the second call, and the backend is then not offered.
bool kernel_copies_code(int fd, void* view) noexcept {
#if defined(__x86_64__)
  auto code = [](unsigned char(&out)[8], std::uint32_t v) {
    out[0] = 0xB8;  // mov eax, imm32; ret
    std::memcpy(out + 1, &v, 4);
    out[5] = 0xC3;
    out[6] = out[7] = 0xCC;
  };
#elif defined(__aarch64__)
  auto code = [](unsigned char(&out)[8], std::uint32_t v) {
    const std::uint32_t w[2] = {0x52800000u | (v & 0xFFFFu) << 5,  // movz w0
                                0xD65F03C0u};                      // ret
    std::memcpy(out, w, 8);
  };
#else
  auto code = [](unsigned char(&)[8], std::uint32_t) {};
#endif
  for (std::uint32_t v : {1u, 2u}) {
    unsigned char bytes[8] = {};
    code(bytes, v);
    if (::pwrite(fd, bytes, sizeof bytes, 0) !=
        static_cast<ssize_t>(sizeof bytes))
      return false;
    if (std::memcmp(view, bytes, sizeof bytes) != 0) return false;
#if defined(__x86_64__) || defined(__aarch64__)
    auto* p = static_cast<char*>(view);
    __builtin___clear_cache(p, p + sizeof bytes);
    if (reinterpret_cast<std::uint32_t (*)()>(view)() != v) return false;
#endif
  }
  return true;
}

Capabilities probe() noexcept {
  Capabilities caps;
  // The kernel's page size (AT_PAGESZ): 4 KiB on x86-64; 4, 16 or 64 KiB
  // on AArch64. Nothing in the library assumes one.
  caps.page_size = static_cast<std::size_t>(::getpagesize());
  caps.granularity = caps.page_size;
  caps.max_map_count = read_max_map_count();
  const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  caps.cpus = cpus > 0 ? static_cast<std::size_t>(cpus) : 1;
  std::size_t page = caps.page_size;

  void* p = ::mmap(nullptr, page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p != MAP_FAILED) {
    caps.anon_exec = ::mprotect(p, page, PROT_READ | PROT_EXEC) == 0;
    caps.vma_naming = ::prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME,
                              reinterpret_cast<unsigned long>(p), page,
                              reinterpret_cast<unsigned long>("wxarena")) == 0;
    if (::munmap(p, page) != 0) caps.anon_exec = false;
  }

  // MFD_EXEC first: where vm.memfd_noexec is 1, a memfd without it is
  // created non-executable. Older kernels reject the unknown flag (EINVAL).
  int fd = static_cast<int>(
      ::syscall(SYS_memfd_create, "wxarena-probe", memfd_create_flags(true)));
  if (fd >= 0) {
    caps.memfd_exec_flag = true;
  } else if (errno == EINVAL || errno == EACCES) {
    // EACCES: vm.memfd_noexec=2 refuses executable memfds; a plain one may
    // still be had (shared_exec then says whether it maps executable).
    fd = static_cast<int>(::syscall(SYS_memfd_create, "wxarena-probe",
                                    memfd_create_flags(false)));
  }
  if (fd >= 0) {
    caps.shared_memory = ::ftruncate(fd, static_cast<off_t>(page)) == 0;
    if (caps.shared_memory) {
      void* x = ::mmap(nullptr, page, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
      if (x != MAP_FAILED) {
        caps.shared_exec = true;
        caps.shared_write = kernel_copies_code(fd, x);
        caps.populate_read = ::madvise(x, page, MADV_POPULATE_READ) == 0;
        if (::munmap(x, page) != 0)
          caps.shared_exec = caps.shared_write = false;
      }
    }
    if (::close(fd) != 0) caps.shared_memory = false;
  }

  // Every Linux kernel keeps an anon_vma per VMA (mm/rmap.c).
  caps.anon_merge_by_origin = true;

  long q = ::syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  caps.barrier = q >= 0 && (q & MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE);
  return caps;
}

}  // namespace

const Capabilities& Pal::capabilities() noexcept {
  static const Capabilities caps = probe();
  return caps;
}

namespace {

// Marks the guard page at each end of a reservation of `total` bytes at p
// (guards included). On failure the whole reservation is unmapped.
Result<std::byte*> fence(void* p, std::size_t total, std::size_t page,
                         SyscallCounts& n) noexcept {
  auto* base = static_cast<std::byte*>(p);
  for (std::byte* guard : {base, base + total - page}) {
    ++n.madvise;
    if (::madvise(guard, page, MADV_DONTDUMP) != 0) {
      const int e = errno;
      ++n.munmap;
      if (::munmap(base, total) != 0) return error_from_errno(errno);
      return error_from_errno(e);
    }
  }
  return base + page;
}

}  // namespace

// Every reservation is fenced by a guard page at each end, inaccessible and
// marked MADV_DONTDUMP. The kernel merges a mapping only with a neighbour of
// the same flags, so no page of the reservation ever merges with what lies
// next to it (another arena's reservation, the other view of a dual_map
// arena, anything else of the process): each arena's count of its VMAs stays
// the kernel's. The guards are two VMAs of the process outside the arena's
// range (Stats::vmas counts the range).
Result<std::byte*> Pal::reserve(std::size_t bytes, std::uintptr_t lo,
                                std::uintptr_t hi, SyscallCounts& n) noexcept {
  const std::uintptr_t page = capabilities().page_size;
  if (bytes > SIZE_MAX - 2 * page) return Error(Errc::out_of_memory, ENOMEM);
  const std::size_t total = bytes + 2 * page;
  if (hi <= lo) {
    ++n.mmap;
    void* p = ::mmap(nullptr, total, PROT_NONE, kPlaceholderFlags, -1, 0);
    if (p == MAP_FAILED) return error_from_errno(errno);
    return fence(p, total, page, n);
  }
  // Within a window: pick the free gap closest to the window's middle and
  // map there without replacing anything (MAP_FIXED_NOREPLACE, Linux 4.17).
  // Another thread may map into the gap meanwhile: then look again.
  const std::uintptr_t mid = lo + (hi - lo) / 2;
  static constexpr int kMaxGaps = 4096;
  for (int attempt = 0; attempt < 4; ++attempt) {
    auto* gaps = static_cast<MapsGap*>(meta_alloc(sizeof(MapsGap) * kMaxGaps));
    if (!gaps) return Error(Errc::out_of_memory, ENOMEM);
    int count = read_gaps(gaps, kMaxGaps, n);
    if (count < 0) {
      meta_free(gaps);
      return error_from_errno(errno);
    }
    std::uintptr_t best = 0, best_dist = ~std::uintptr_t{0};
    for (int i = 0; i < count; ++i) {
      std::uintptr_t b = std::max(gaps[i].begin, lo);
      std::uintptr_t e = std::min(gaps[i].end, hi);
      b = (b + page - 1) & ~(page - 1);
      e &= ~(page - 1);
      if (e <= b || e - b < total) continue;
      // The placement in [b, e - total] nearest to the middle.
      std::uintptr_t want =
          mid > total / 2 ? (mid - total / 2) & ~(page - 1) : 0;
      std::uintptr_t at = std::clamp(want, b, e - total);
      std::uintptr_t dist =
          at + total / 2 > mid ? at + total / 2 - mid : mid - (at + total / 2);
      if (dist < best_dist) best = at, best_dist = dist;
    }
    meta_free(gaps);
    if (best == 0) return Error(Errc::unreachable_anchor);
    ++n.mmap;
    void* p = ::mmap(reinterpret_cast<void*>(best), total, PROT_NONE,
                     kPlaceholderFlags | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == reinterpret_cast<void*>(best)) return fence(p, total, page, n);
    if (p != MAP_FAILED) {
      // A kernel without MAP_FIXED_NOREPLACE treats it as a hint (so does
      // qemu-user's mmap): a placement elsewhere in the window will do.
      const auto got = reinterpret_cast<std::uintptr_t>(p);
      if (got >= lo && got < hi && hi - got >= total)
        return fence(p, total, page, n);
      ++n.munmap;
      if (::munmap(p, total) != 0) return error_from_errno(errno);
      return Error(Errc::not_supported);
    }
    if (errno != EEXIST) return error_from_errno(errno);
  }
  return Error(Errc::unreachable_anchor);
}

Result<std::byte*> Pal::reserve_view(SharedHandle, std::size_t bytes,
                                     std::uintptr_t lo, std::uintptr_t hi,
                                     Access, SyscallCounts& n) noexcept {
  // Views are mapped over an anonymous placeholder with MAP_FIXED.
  return Pal::reserve(bytes, lo, hi, n);
}

Result<void> Pal::unmap_view(void* p, std::size_t bytes,
                             SyscallCounts& n) noexcept {
  return Pal::unmap(p, bytes, n);
}

Result<void> Pal::unmap(void* p, std::size_t bytes, SyscallCounts& n) noexcept {
  // The reservation with its guards (see reserve()).
  const std::size_t page = capabilities().page_size;
  ++n.munmap;
  if (::munmap(static_cast<std::byte*>(p) - page, bytes + 2 * page) != 0)
    return error_from_errno(errno);
  return {};
}

Result<void> Pal::protect(void* p, std::size_t bytes, Access access,
                          SyscallCounts& n) noexcept {
  ++n.mprotect;
  if (::mprotect(p, bytes, prot_of(access)) != 0)
    return error_from_errno(errno);
  return {};
}

Result<void> Pal::reset(void* p, std::size_t bytes, SyscallCounts& n) noexcept {
  ++n.mmap;
  void* r = ::mmap(p, bytes, PROT_NONE, kPlaceholderFlags | MAP_FIXED, -1, 0);
  if (r == MAP_FAILED) return error_from_errno(errno);
  return {};
}

Result<void> Pal::decommit(void* p, std::size_t bytes,
                           SyscallCounts& n) noexcept {
  ++n.madvise;
  if (::madvise(p, bytes, MADV_DONTNEED) != 0) return error_from_errno(errno);
  return {};
}

Result<SharedHandle> Pal::create_shared(std::size_t bytes, const char* label,
                                        SyscallCounts& n) noexcept {
  const Capabilities& caps = capabilities();
  if (!caps.shared_memory || !caps.shared_exec)
    return Error(Errc::not_supported);
  ++n.memfd;
  int fd = static_cast<int>(::syscall(
      SYS_memfd_create, label, memfd_create_flags(caps.memfd_exec_flag, true)));
  if (fd < 0) return error_from_errno(errno);
  // Another process of the same user may reopen the memfd through
  // /proc/<pid>/fd/<n> (a reopen checks the inode's mode, not the
  // descriptor's, and needs only ptrace read access, which Yama allows):
  // no write permission from the first moment, no permission at all once
  // the read-only descriptor below is open. The library's own descriptors
  // keep the access they were opened with. A same-user process can still
  // chmod the inode back (it owns it): see docs/security.md.
  int err = 0;
  ++n.other;
  if (::fchmod(fd, S_IRUSR) != 0) err = errno;
  // Its size is fixed for good: nobody can truncate it under running code
  // (SIGBUS) or grow it; nobody can add a seal (F_SEAL_WRITE would stop
  // the library's own writes). Holes may still be punched (fallocate
  // checks only the write seals), which is how the backends free pages.
  if (!err) {
    ++n.other;
    if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) err = errno;
  }
  if (!err) {
    ++n.other;
    if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) !=
        0)
      err = errno;
  }
  if (!err && !track_for_fork(fd)) err = EMFILE;
  if (err) {
    ++n.other;
    (void)::close(fd);  // already failing; the first error is reported
    return error_from_errno(err);
  }
  // A read-only descriptor of the same object for the views that are never
  // writable. Best effort: without /proc those views use `fd` (and can then
  // be made writable by mprotect, by whoever may call it).
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  ++n.other;
  int ro = ::open(path, O_RDONLY | O_CLOEXEC);
  if (ro >= 0 && !track_for_fork(ro)) {
    ++n.other;
    (void)::close(ro);  // a full table: carry on without it
    ro = -1;
  }
  ++n.other;
  if (::fchmod(fd, 0) != 0) {
    err = errno;
    if (ro >= 0) {
      untrack_for_fork(ro);
      ++n.other;
      (void)::close(ro);
    }
    untrack_for_fork(fd);
    ++n.other;
    (void)::close(fd);
    return error_from_errno(err);
  }
  return SharedHandle{fd, ro, fork_generation()};
}

Result<void> Pal::close_shared(SharedHandle h, SyscallCounts& n) noexcept {
  // In a fork() child the descriptor was closed at fork; the number may
  // name another file by now.
  if (h.generation != fork_generation()) return {};
  int err = 0;
  if (h.ro_fd >= 0) {
    untrack_for_fork(h.ro_fd);
    ++n.other;
    if (::close(h.ro_fd) != 0) err = errno;
  }
  untrack_for_fork(h.fd);
  ++n.other;
  if (::close(h.fd) != 0) err = errno;
  if (err) return error_from_errno(err);
  return {};
}

Result<void> Pal::write_shared(SharedHandle h, std::size_t offset,
                               const WritePiece* pieces, std::size_t count,
                               SyscallCounts& n) noexcept {
  // pwritev(2) into the memfd: the kernel copies through its own mapping of
  // the pages, so no writable mapping of them ever exists in this process.
  // Up to IOV_MAX (1024) pieces per call; a short write (a signal, or
  // memory running out part way) is continued from where it stopped.
  static constexpr std::size_t kMaxIov = 1024;  // IOV_MAX on Linux
  struct iovec iov[kMaxIov];
  std::size_t k = 0, skip = 0;  // next piece, bytes of it already written
  while (k < count) {
    std::size_t m = 0;
    std::size_t total = 0;
    for (std::size_t j = k; j < count && m < kMaxIov; ++j, ++m) {
      const std::size_t sk = j == k ? skip : 0;
      iov[m].iov_base =
          const_cast<char*>(static_cast<const char*>(pieces[j].data) + sk);
      iov[m].iov_len = pieces[j].bytes - sk;
      total += iov[m].iov_len;
    }
    ++n.write;
    // One piece (a publish of one function, most often): pwrite(2), which
    // the kernel takes without copying in and checking an iovec array.
    const ssize_t w = m == 1 ? ::pwrite(h.fd, iov[0].iov_base, iov[0].iov_len,
                                        static_cast<off_t>(offset))
                             : ::pwritev(h.fd, iov, static_cast<int>(m),
                                         static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      return error_from_errno(errno);
    }
    if (w == 0 && total > 0) return error_from_errno(EIO);
    offset += static_cast<std::size_t>(w);
    auto left = static_cast<std::size_t>(w);
    while (k < count && left >= pieces[k].bytes - skip) {
      left -= pieces[k].bytes - skip;
      skip = 0;
      ++k;
    }
    skip += left;
  }
  return {};
}

Result<void> Pal::populate(void* p, std::size_t bytes,
                           SyscallCounts& n) noexcept {
  if (!capabilities().populate_read) return Error(Errc::not_supported);
  ++n.madvise;
  if (::madvise(p, bytes, MADV_POPULATE_READ) != 0)
    return error_from_errno(errno);
  return {};
}

Result<void> Pal::map_shared(void* p, std::size_t bytes, SharedHandle h,
                             std::size_t offset, Access access,
                             SyscallCounts& n) noexcept {
  const int fd = access != Access::read_write && h.ro_fd >= 0 ? h.ro_fd : h.fd;
  ++n.mmap;
  void* r = ::mmap(p, bytes, prot_of(access), MAP_SHARED | MAP_FIXED, fd,
                   static_cast<off_t>(offset));
  if (r == MAP_FAILED) return error_from_errno(errno);
  if (access == Access::read_write) {
    // A fork() child must not inherit a writable view of code pages
    // (MADV_WIPEONFORK does not apply to shared mappings; DONTFORK does).
    ++n.madvise;
    if (::madvise(p, bytes, MADV_DONTFORK) != 0) {
      int err = errno;
      // Do not leave a forkable writable view behind.
      ++n.mmap;
      if (::mmap(p, bytes, PROT_NONE, kPlaceholderFlags | MAP_FIXED, -1, 0) ==
          MAP_FAILED)
        fatal("cannot drop a writable view after madvise failed", p, errno);
      return error_from_errno(err);
    }
  }
  return {};
}

Result<void> Pal::discard_shared(SharedHandle h, std::size_t offset,
                                 std::size_t bytes, void*,
                                 SyscallCounts& n) noexcept {
  ++n.other;
  if (::fallocate(h.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  static_cast<off_t>(offset), static_cast<off_t>(bytes)) != 0)
    return error_from_errno(errno);
  return {};
}

Result<void> Pal::small_pages(void* p, std::size_t bytes,
                              SyscallCounts& n) noexcept {
  // madvise(2): MADV_NOHUGEPAGE; EINVAL where the kernel was built without
  // transparent huge pages.
  ++n.madvise;
  if (::madvise(p, bytes, MADV_NOHUGEPAGE) != 0)
    return errno == EINVAL ? Error(Errc::not_supported)
                           : error_from_errno(errno);
  return {};
}

Result<void> Pal::name(void* p, std::size_t bytes, const char* label,
                       SyscallCounts& n) noexcept {
  ++n.other;
  if (::prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME,
              reinterpret_cast<unsigned long>(p), bytes,
              reinterpret_cast<unsigned long>(label)) != 0)
    return error_from_errno(errno);
  return {};
}

Result<void> Pal::register_barrier(SyscallCounts& n) noexcept {
  // membarrier(2): PRIVATE_EXPEDITED_SYNC_CORE needs one registration per
  // process; repeating it is harmless but costs a call, so do it once.
  static std::mutex m;
  static bool done = false;
  std::lock_guard lock(m);
  if (done) return {};
  if (!capabilities().barrier) return Error(Errc::not_supported);
  ++n.membarrier;
  if (::syscall(SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0) != 0)
    return error_from_errno(errno);
  done = true;
  return {};
}

Result<void> Pal::barrier(SyscallCounts& n) noexcept {
  ++n.membarrier;
  if (::syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0,
                0) != 0)
    return error_from_errno(errno);
  return {};
}

void Pal::flush_icache(void* p, std::size_t bytes) noexcept {
#if defined(__x86_64__) || defined(__i386__)
  // Instruction fetch is coherent with stores on x86; nothing to do here.
  (void)p;
  (void)bytes;
#else
  auto* b = static_cast<char*>(p);
  __builtin___clear_cache(b, b + bytes);
#endif
}

Pal& system_pal() noexcept {
  static Pal pal;
  return pal;
}

void os_error_text(int err, char* out, std::size_t cap) noexcept {
  char msg[128];
  // The GNU strerror_r returns the message; the buffer may go unused.
  std::snprintf(out, cap, "errno %d: %s", err,
                strerror_r(err, msg, sizeof msg));
}

}  // namespace wxa::detail
