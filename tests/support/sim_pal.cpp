// SPDX-License-Identifier: MIT
// SimPal: reservations, protections, shared objects and views kept in a
// model over one reused buffer; no system call after construction.
#include "support/sim_pal.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

extern "C" char __executable_start;  // GNU ld: the program image's start

namespace wxa::test {
namespace {

// Handles are numbers no real descriptor has.
constexpr int kFdBase = 1 << 24;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "SimPal: %s\n", what);
  std::abort();
}

Error fail(int err) { return detail::error_from_errno(err); }

}  // namespace

SimPal::SimPal(std::size_t pages) noexcept {
  restore_capabilities();
  ps_ = caps_.page_size;
  buffer_bytes_ = pages * ps_;  // 64 MiB of 4 KiB pages, 1 GiB of 64 KiB
  // Right below the program's image, so that a reservation within reach
  // of an anchor in it can be placed as the kernel would place it (the gap
  // below a PIE binary is free); else the first free slot at 256 MiB steps
  // around it.
  const auto image = reinterpret_cast<std::uintptr_t>(&__executable_start);
  const std::uintptr_t step = std::uintptr_t{256} << 20;
  auto try_at = [&](std::uintptr_t at) {
    void* p = ::mmap(
        reinterpret_cast<void*>(at), buffer_bytes_, PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1,
        0);
    if (p == reinterpret_cast<void*>(at))
      buffer_ = static_cast<std::byte*>(p);
    else if (p != MAP_FAILED && ::munmap(p, buffer_bytes_) != 0)
      die("cannot unmap a misplaced buffer");
  };
  if (image > buffer_bytes_ + step)
    try_at((image & ~(std::uintptr_t{ps_} - 1)) - buffer_bytes_);
  for (int k = 1; k <= 6 && !buffer_; ++k)
    for (int sign = 0; sign < 2 && !buffer_; ++sign)
      try_at((sign ? image - k * step : image + k * step) & ~(step - 1));
  if (!buffer_) {
    void* p = ::mmap(nullptr, buffer_bytes_, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) die("cannot map the buffer");
    buffer_ = static_cast<std::byte*>(p);
  }
  pages_.resize(buffer_bytes_ / ps_);
  objects_.reserve(16);
}

SimPal::~SimPal() {
  clear();
  for (std::byte* s : slabs_) std::free(s);
  if (buffer_ && ::munmap(buffer_, buffer_bytes_) != 0)
    die("cannot unmap the buffer");
}

void SimPal::restore_capabilities() noexcept {
  caps_ = detail::system_pal().capabilities();
}

void SimPal::clear() noexcept {
  for (auto& [first, last] : ranges_)
    for (std::size_t i = first; i < last; ++i) {
      detach(i);
      pages_[i] = Page{};
    }
  ranges_.clear();
  for (Object& o : objects_) {
    for (ObjPage& op : o.pages)
      if (op.data) give_page(op.data);
    o = Object{};
  }
  objects_.clear();
  open_ = 0;
  barrier_registered_ = false;
}

// --- Bookkeeping -----------------------------------------------------------

int SimPal::span(const void* p, std::size_t bytes, std::size_t& first,
                 std::size_t& last) const noexcept {
  const auto u = reinterpret_cast<std::uintptr_t>(p);
  const auto b = reinterpret_cast<std::uintptr_t>(buffer_);
  if (u % ps_ != 0 || bytes == 0) return EINVAL;
  if (u < b || u - b > buffer_bytes_ || bytes > buffer_bytes_ - (u - b))
    return ENOMEM;  // not memory this layer handed out
  first = (u - b) / ps_;
  last = first + (bytes + ps_ - 1) / ps_;
  return 0;
}

bool SimPal::all_reserved(std::size_t first, std::size_t last) const noexcept {
  for (std::size_t i = first; i < last; ++i)
    if (!pages_[i].reserved) return false;
  return true;
}

SimPal::Object* SimPal::object(detail::SharedHandle h) noexcept {
  const long id = static_cast<long>(h.fd) - kFdBase;
  if (id < 0 || static_cast<std::size_t>(id) >= objects_.size()) return nullptr;
  Object& o = objects_[static_cast<std::size_t>(id)];
  return o.live && o.open ? &o : nullptr;
}

std::byte* SimPal::take_page() noexcept {
  if (free_pages_.empty()) {
    constexpr std::size_t kSlab = 64;
    auto* slab = static_cast<std::byte*>(std::aligned_alloc(ps_, kSlab * ps_));
    if (!slab) die("out of memory for object pages");
    slabs_.push_back(slab);
    for (std::size_t k = 0; k < kSlab; ++k)
      free_pages_.push_back(slab + k * ps_);
  }
  std::byte* p = free_pages_.back();
  free_pages_.pop_back();
  std::memset(p, 0, ps_);
  return p;
}

void SimPal::give_page(std::byte* p) noexcept { free_pages_.push_back(p); }

void SimPal::zero(std::size_t i) noexcept {
  Page& pg = pages_[i];
  if (pg.dirty) std::memset(page_ptr(i), 0, ps_);
  pg.dirty = false;
}

void SimPal::write_back(std::size_t i) noexcept {
  Page& pg = pages_[i];
  if (pg.obj == kNone || pg.access != Access::read_write) return;
  ObjPage& op = objects_[pg.obj].pages[pg.obj_page];
  if (!op.data) op.data = take_page();
  std::memcpy(op.data, page_ptr(i), ps_);
}

void SimPal::detach(std::size_t i) noexcept {
  Page& pg = pages_[i];
  if (pg.obj != kNone) {
    write_back(i);
    Object& o = objects_[pg.obj];
    for (std::uint32_t& v : o.pages[pg.obj_page].views)
      if (v == i) v = kNone;
    --o.mapped;
    const std::uint32_t id = pg.obj;
    pg.obj = kNone;
    maybe_free(id);
  }
  zero(i);
  pg.access = Access::none;
  pg.named = false;
}

void SimPal::attach(std::size_t i, std::uint32_t obj, std::uint32_t obj_page,
                    Access access) noexcept {
  Object& o = objects_[obj];
  ObjPage& op = o.pages[obj_page];
  bool placed = false;
  for (std::uint32_t& v : op.views)
    if (v == kNone) {
      v = static_cast<std::uint32_t>(i);
      placed = true;
      break;
    }
  if (!placed) die("more views of one object page than kMaxViews");
  ++o.mapped;
  Page& pg = pages_[i];
  pg.obj = obj;
  pg.obj_page = obj_page;
  pg.access = access;
  if (op.data) {
    std::memcpy(page_ptr(i), op.data, ps_);
    pg.dirty = true;
  }
  pg.dirty |= access == Access::read_write;
}

void SimPal::gather(Object& o, std::size_t j) noexcept {
  for (std::uint32_t v : o.pages[j].views)
    if (v != kNone) write_back(v);
}

void SimPal::scatter(Object& o, std::size_t j) noexcept {
  const ObjPage& op = o.pages[j];
  for (std::uint32_t v : op.views) {
    if (v == kNone) continue;
    if (op.data) {
      std::memcpy(page_ptr(v), op.data, ps_);
      pages_[v].dirty = true;
    } else {
      pages_[v].dirty = true;  // force the zeroing
      zero(v);
      pages_[v].dirty = pages_[v].access == Access::read_write;
    }
  }
}

void SimPal::maybe_free(std::uint32_t id) noexcept {
  Object& o = objects_[id];
  if (o.open || o.mapped != 0 || !o.live) return;
  for (ObjPage& op : o.pages)
    if (op.data) give_page(op.data);
  o = Object{};
}

void SimPal::claim(std::size_t first, std::size_t last) noexcept {
  for (std::size_t i = first; i < last; ++i) pages_[i].reserved = true;
  // Merge with the intervals that touch or overlap [first, last).
  auto it = ranges_.upper_bound(first);
  if (it != ranges_.begin()) {
    auto prev = std::prev(it);
    if (prev->second >= first) {
      first = prev->first;
      last = std::max(last, prev->second);
      it = ranges_.erase(prev);
    }
  }
  while (it != ranges_.end() && it->first <= last) {
    last = std::max(last, it->second);
    it = ranges_.erase(it);
  }
  ranges_.emplace(first, last);
}

void SimPal::drop(std::size_t first, std::size_t last) noexcept {
  for (std::size_t i = first; i < last; ++i) {
    if (!pages_[i].reserved) continue;
    detach(i);
    pages_[i] = Page{};
  }
  auto it = ranges_.upper_bound(first);
  if (it != ranges_.begin()) --it;
  while (it != ranges_.end() && it->first < last) {
    const std::size_t b = it->first, e = it->second;
    if (e <= first) {
      ++it;
      continue;
    }
    it = ranges_.erase(it);
    if (b < first) ranges_.emplace(b, first);
    if (e > last) ranges_.emplace(last, e);
  }
}

std::size_t SimPal::reserved_pages() const noexcept {
  std::size_t n = 0;
  for (const auto& [b, e] : ranges_) n += e - b;
  return n;
}

// The kernel's placement: top-down, the highest gap that fits; within a
// window, the real layer's choice (the placement nearest the middle).
std::size_t SimPal::place(std::size_t pages, std::uintptr_t lo,
                          std::uintptr_t hi) const noexcept {
  const std::size_t total = pages_.size();
  const auto base = reinterpret_cast<std::uintptr_t>(buffer_);
  std::size_t wlo = 0, whi = total;  // the window in pages
  if (hi > lo) {
    if (hi <= base || lo >= base + buffer_bytes_) return kNone;
    wlo = lo <= base ? 0 : (lo - base + ps_ - 1) / ps_;
    whi = hi >= base + buffer_bytes_ ? total : (hi - base) / ps_;
  }
  std::size_t best = kNone, best_dist = ~std::size_t{0};
  const std::size_t mid2 = wlo + whi;  // twice the middle, in pages
  std::size_t gap_end = total;
  for (auto it = ranges_.rbegin();; ++it) {
    const std::size_t gap_begin = it == ranges_.rend() ? 0 : it->second;
    const std::size_t b = std::max(gap_begin, wlo), e = std::min(gap_end, whi);
    if (e > b && e - b >= pages) {
      if (hi <= lo) return e - pages;
      const std::size_t want = mid2 / 2 > pages / 2 ? mid2 / 2 - pages / 2 : 0;
      const std::size_t at = std::clamp(want, b, e - pages);
      const std::size_t c2 = 2 * at + pages;
      const std::size_t dist = c2 > mid2 ? c2 - mid2 : mid2 - c2;
      if (dist < best_dist) best = at, best_dist = dist;
    }
    if (it == ranges_.rend()) break;
    gap_end = it->first;
  }
  return best;
}

void SimPal::maps(std::vector<SimVma>& out) const {
  out.clear();
  const auto base = reinterpret_cast<std::uintptr_t>(buffer_);
  static const char* const kPerms[] = {"---", "r--", "rw-", "r-x"};
  for (const auto& [first, last] : ranges_) {
    std::size_t i = first;
    while (i < last) {
      // The kernel merges neighbours with the same protection that map the
      // same thing: anonymous memory with the same name, or consecutive
      // pages of one object.
      const Page& pg = pages_[i];
      std::size_t j = i + 1;
      if (pg.obj == kNone) {
        while (j < last && pages_[j].obj == kNone &&
               pages_[j].access == pg.access && pages_[j].named == pg.named)
          ++j;
      } else {
        while (j < last && pages_[j].obj == pg.obj &&
               pages_[j].access == pg.access &&
               pages_[j].obj_page == pg.obj_page + (j - i))
          ++j;
      }
      SimVma& v = out.emplace_back();
      v.begin = base + i * ps_;
      v.end = base + j * ps_;
      std::memcpy(v.perms, kPerms[static_cast<int>(pg.access)], 3);
      v.perms[3] = pg.obj == kNone ? 'p' : 's';
      i = j;
    }
  }
}

bool SimPal::access_at(const void* p, Access& out) const noexcept {
  const auto u = reinterpret_cast<std::uintptr_t>(p);
  const auto b = reinterpret_cast<std::uintptr_t>(buffer_);
  if (u < b || u - b >= buffer_bytes_) return false;
  const Page& pg = pages_[(u - b) / ps_];
  if (!pg.reserved) return false;
  out = pg.access;
  return true;
}

// --- detail::Pal -------------------------------------------------------------

Result<std::byte*> SimPal::reserve(std::size_t bytes, std::uintptr_t lo,
                                   std::uintptr_t hi,
                                   SyscallCounts& n) noexcept {
  if (hi > lo) ++n.other;  // the real layer reads /proc/self/maps first
  ++n.mmap;
  if (bytes == 0) return fail(EINVAL);
  // With a guard page at each end, as the Linux layer (two madvise calls).
  const std::size_t pages = (bytes + ps_ - 1) / ps_ + 2;
  const std::size_t at = place(pages, lo, hi);
  if (at == kNone)
    return hi > lo ? Result<std::byte*>(Error(Errc::unreachable_anchor))
                   : Result<std::byte*>(fail(ENOMEM));
  n.madvise += 2;
  claim(at, at + pages);
  return page_ptr(at + 1);
}

Result<void> SimPal::unmap(void* p, std::size_t bytes,
                           SyscallCounts& n) noexcept {
  ++n.munmap;
  std::size_t first = 0, last = 0;
  if (const int e = span(p, bytes, first, last)) return fail(e);
  if (first == 0 || last >= pages_.size()) return fail(EINVAL);
  drop(first - 1, last + 1);  // and the guards
  return {};
}

Result<void> SimPal::protect(void* p, std::size_t bytes, Access access,
                             SyscallCounts& n) noexcept {
  ++n.mprotect;
  std::size_t first = 0, last = 0;
  if (const int e = span(p, bytes, first, last)) return fail(e);
  if (!all_reserved(first, last)) return fail(ENOMEM);
  for (std::size_t i = first; i < last; ++i) {
    const Page& pg = pages_[i];
    if (access != Access::read_execute) continue;
    if (pg.obj == kNone ? !caps_.anon_exec : !caps_.shared_exec)
      return fail(EACCES);  // as SELinux execmem / memfd_noexec refuse
  }
  for (std::size_t i = first; i < last; ++i) {
    Page& pg = pages_[i];
    if (pg.access == Access::read_write && access != Access::read_write)
      write_back(i);
    pg.access = access;
    pg.dirty |= access == Access::read_write;
  }
  return {};
}

Result<void> SimPal::reset(void* p, std::size_t bytes,
                           SyscallCounts& n) noexcept {
  ++n.mmap;
  std::size_t first = 0, last = 0;
  if (const int e = span(p, bytes, first, last)) return fail(e);
  for (std::size_t i = first; i < last; ++i)
    if (pages_[i].reserved) detach(i);
  claim(first, last);
  return {};
}

Result<void> SimPal::decommit(void* p, std::size_t bytes,
                              SyscallCounts& n) noexcept {
  ++n.madvise;
  std::size_t first = 0, last = 0;
  if (const int e = span(p, bytes, first, last)) return fail(e);
  if (!all_reserved(first, last)) return fail(ENOMEM);
  for (std::size_t i = first; i < last; ++i) {
    Page& pg = pages_[i];
    if (pg.obj != kNone) continue;  // a shared view keeps its object's bytes
    pg.dirty = true;
    zero(i);
    pg.dirty = pg.access == Access::read_write;
  }
  return {};
}

Result<detail::SharedHandle> SimPal::create_shared(std::size_t bytes,
                                                   const char*,
                                                   SyscallCounts& n) noexcept {
  if (!caps_.shared_memory || !caps_.shared_exec)
    return Error(Errc::not_supported);
  ++n.memfd;
  ++n.other;  // ftruncate
  std::size_t id = 0;
  while (id < objects_.size() && objects_[id].live) ++id;
  if (id == objects_.size()) objects_.emplace_back();
  Object& o = objects_[id];
  o.live = true;
  o.open = true;
  o.mapped = 0;
  o.pages.assign((bytes + ps_ - 1) / ps_, ObjPage{});
  ++open_;
  return detail::SharedHandle{kFdBase + static_cast<int>(id), -1,
                              detail::fork_generation()};
}

Result<void> SimPal::close_shared(detail::SharedHandle h,
                                  SyscallCounts& n) noexcept {
  ++n.other;
  if (!object(h)) return fail(EBADF);
  const auto id = static_cast<std::uint32_t>(h.fd - kFdBase);
  objects_[id].open = false;
  --open_;
  maybe_free(id);
  return {};
}

Result<std::byte*> SimPal::reserve_view(detail::SharedHandle, std::size_t bytes,
                                        std::uintptr_t lo, std::uintptr_t hi,
                                        Access, SyscallCounts& n) noexcept {
  return SimPal::reserve(bytes, lo, hi, n);
}

Result<void> SimPal::unmap_view(void* p, std::size_t bytes,
                                SyscallCounts& n) noexcept {
  return SimPal::unmap(p, bytes, n);
}

Result<void> SimPal::map_shared(void* p, std::size_t bytes,
                                detail::SharedHandle h, std::size_t offset,
                                Access access, SyscallCounts& n) noexcept {
  ++n.mmap;
  Object* o = object(h);
  if (!o) return fail(EBADF);
  std::size_t first = 0, last = 0;
  if (const int e = span(p, bytes, first, last)) return fail(e);
  if (offset % ps_ != 0) return fail(EINVAL);
  const std::size_t j0 = offset / ps_;
  // The kernel maps past the end too (and SIGBUSes on access): a bug.
  if (j0 > o->pages.size() || last - first > o->pages.size() - j0)
    die("map_shared past the end of the object");
  if (access == Access::read_execute && !caps_.shared_exec)
    return fail(EPERM);  // vm.memfd_noexec
  const auto id = static_cast<std::uint32_t>(h.fd - kFdBase);
  for (std::size_t i = first; i < last; ++i) {
    if (pages_[i].reserved) detach(i);
    // Write back writable views of the page, so that the new one shows it.
    gather(*o, j0 + (i - first));
  }
  claim(first, last);
  for (std::size_t i = first; i < last; ++i)
    attach(i, id, static_cast<std::uint32_t>(j0 + (i - first)), access);
  if (access == Access::read_write) ++n.madvise;  // MADV_DONTFORK
  return {};
}

Result<void> SimPal::discard_shared(detail::SharedHandle h, std::size_t offset,
                                    std::size_t bytes, void*,
                                    SyscallCounts& n) noexcept {
  ++n.other;
  Object* o = object(h);
  if (!o) return fail(EBADF);
  // fallocate(PUNCH_HOLE | KEEP_SIZE): whole pages inside the range drop to
  // zero; partial pages are zeroed in part. Every view sees it.
  const std::size_t size = o->pages.size() * ps_;
  const std::size_t end = std::min(size, offset + bytes);
  for (std::size_t at = offset; at < end;) {
    const std::size_t j = at / ps_;
    const std::size_t in = at % ps_, len = std::min(ps_ - in, end - at);
    gather(*o, j);
    ObjPage& op = o->pages[j];
    if (op.data) {
      if (len == ps_) {
        give_page(op.data);
        op.data = nullptr;
      } else {
        std::memset(op.data + in, 0, len);
      }
    }
    scatter(*o, j);
    at += len;
  }
  return {};
}

Result<void> SimPal::write_shared(detail::SharedHandle h, std::size_t offset,
                                  const detail::WritePiece* pieces,
                                  std::size_t count,
                                  SyscallCounts& n) noexcept {
  Object* o = object(h);
  if (!o) {
    ++n.write;
    return fail(EBADF);
  }
  if (!caps_.shared_write) {
    ++n.write;
    return fail(EPERM);  // a host that refuses the copy
  }
  n.write += (count + 63) / 64;  // pwritev, 64 pieces a call
  std::size_t total = 0;
  for (std::size_t k = 0; k < count; ++k) total += pieces[k].bytes;
  const std::size_t size = o->pages.size() * ps_;
  if (offset > size || total > size - offset)
    die("write_shared past the end of the object");
  std::size_t at = offset;
  for (std::size_t k = 0; k < count; ++k) {
    const auto* src = static_cast<const std::byte*>(pieces[k].data);
    std::size_t left = pieces[k].bytes;
    while (left > 0) {
      const std::size_t j = at / ps_;
      const std::size_t in = at % ps_, len = std::min(ps_ - in, left);
      gather(*o, j);
      ObjPage& op = o->pages[j];
      if (!op.data) op.data = take_page();
      std::memcpy(op.data + in, src, len);
      scatter(*o, j);
      src += len;
      left -= len;
      at += len;
    }
  }
  return {};
}

Result<void> SimPal::populate(void* p, std::size_t bytes,
                              SyscallCounts& n) noexcept {
  if (!caps_.populate_read) return Error(Errc::not_supported);
  ++n.madvise;
  std::size_t first = 0, last = 0;
  if (const int e = span(p, bytes, first, last)) return fail(e);
  if (!all_reserved(first, last)) return fail(ENOMEM);
  for (std::size_t i = first; i < last; ++i)
    if (pages_[i].access == Access::none) return fail(EFAULT);
  return {};
}

Result<void> SimPal::small_pages(void*, std::size_t,
                                 SyscallCounts& n) noexcept {
  ++n.madvise;  // the simulated kernel has no huge pages to split
  return {};
}

Result<void> SimPal::name(void* p, std::size_t bytes, const char*,
                          SyscallCounts& n) noexcept {
  ++n.other;
  if (!caps_.vma_naming) return fail(EINVAL);
  std::size_t first = 0, last = 0;
  if (const int e = span(p, bytes, first, last)) return fail(e);
  if (!all_reserved(first, last)) return fail(ENOMEM);
  for (std::size_t i = first; i < last; ++i)
    if (pages_[i].obj != kNone) return fail(EBADF);  // not anonymous
  for (std::size_t i = first; i < last; ++i) pages_[i].named = true;
  return {};
}

Result<void> SimPal::register_barrier(SyscallCounts& n) noexcept {
  if (barrier_registered_) return {};
  if (!caps_.barrier) return Error(Errc::not_supported);
  ++n.membarrier;
  barrier_registered_ = true;
  return {};
}

Result<void> SimPal::barrier(SyscallCounts& n) noexcept {
  ++n.membarrier;
  if (!caps_.barrier) return fail(EINVAL);
  if (!barrier_registered_) return fail(EPERM);  // membarrier(2)
  return {};
}

void SimPal::flush_icache(void* p, std::size_t bytes) noexcept {
  std::size_t first = 0, last = 0;
  if (bytes == 0) return;
  const auto u = reinterpret_cast<std::uintptr_t>(p);
  const std::size_t skew = u % ps_;
  if (span(reinterpret_cast<void*>(u - skew), bytes + skew, first, last) != 0 ||
      !all_reserved(first, last))
    die("flush_icache of memory that is not mapped");
}

}  // namespace wxa::test
