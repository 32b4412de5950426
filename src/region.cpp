// SPDX-License-Identifier: MIT
// Region: reservation, page state map, view changes and VMA accounting.
#include "region.hpp"

#include <bit>
#include <cstring>

namespace wxa::detail {

Region::~Region() {
  meta_free(state_);
  meta_free(head_);
  meta_free(length_);
  meta_free(flags_);
  meta_free(revoked_);
}

Result<void> Region::init(Pal& pal, Backend backend, std::size_t pages,
                          std::uintptr_t lo, std::uintptr_t hi,
                          bool name_mappings, SyscallCounts& n) noexcept {
  pal_ = &pal;
  backend_ = backend;
  pages_ = pages;
  page_size_ = pal.capabilities().page_size;
  shift_ = static_cast<unsigned>(std::countr_zero(page_size_));
  const std::size_t bytes = pages << shift_;

  state_ = static_cast<PageState*>(meta_calloc(pages, sizeof(PageState)));
  head_ =
      static_cast<std::uint32_t*>(meta_calloc(pages, sizeof(std::uint32_t)));
  length_ =
      static_cast<std::uint32_t*>(meta_calloc(pages, sizeof(std::uint32_t)));
  flags_ = static_cast<std::uint8_t*>(meta_calloc(pages, 1));
  revoked_ =
      static_cast<BarrierEpoch*>(meta_calloc(pages, sizeof(BarrierEpoch)));
  if (!state_ || !head_ || !length_ || !flags_ || !revoked_)
    return Error(Errc::out_of_memory, kNoMemory);
  counts_[static_cast<int>(PageState::unused)] = pages;

  if (!dual()) {
    Result<std::byte*> rx = pal.reserve(bytes, lo, hi, n);
    if (!rx) return rx.error();
    rx_base_ = rw_base_ = *rx;
    vmas_ = 1;
    if (name_mappings && pal.capabilities().vma_naming) {
      // Best effort: a name only helps people read /proc/<pid>/maps.
      (void)pal.name(rx_base_, bytes, "wxarena", n);
    }
    return {};
  }

  // The shared object first: where views cannot be mapped over part of a
  // reservation (Windows), each view's range is a whole view of it.
  Result<SharedHandle> shm = pal.create_shared(bytes, "wxarena", n);
  if (!shm) return shm.error();
  shm_ = *shm;
  Result<std::byte*> rx =
      pal.reserve_view(shm_, bytes, lo, hi, Access::read_execute, n);
  if (!rx) {
    Error e = rx.error();
    destroy(n);
    return e;
  }
  rx_base_ = *rx;
  // The writable views live in a second range of the same size, at the
  // same offsets, so that adjacent views merge into one VMA.
  Result<std::byte*> rw =
      pal.reserve_view(shm_, bytes, 0, 0, Access::read_write, n);
  if (!rw) {
    Error e = rw.error();
    destroy(n);
    return e;
  }
  rw_base_ = *rw;
  vmas_ = 2;
  return {};
}

void Region::destroy(SyscallCounts& n) noexcept {
  const std::size_t bytes = pages_ << shift_;
  // Nothing can be reported from here (destructors); the calls are counted.
  if (dual()) {
    if (rx_base_) (void)pal_->unmap_view(rx_base_, bytes, n);
    if (rw_base_) (void)pal_->unmap_view(rw_base_, bytes, n);
  } else if (rx_base_) {
    (void)pal_->unmap(rx_base_, bytes, n);
  }
  if (shm_.valid()) (void)pal_->close_shared(shm_, n);
  rx_base_ = rw_base_ = nullptr;
  shm_ = SharedHandle{};
}

std::ptrdiff_t Region::index_of(const void* p, bool either) const noexcept {
  auto u = reinterpret_cast<std::uintptr_t>(p);
  auto rx = reinterpret_cast<std::uintptr_t>(rx_base_);
  const std::size_t bytes = pages_ << shift_;
  if (u >= rx && u - rx < bytes)
    return static_cast<std::ptrdiff_t>((u - rx) >> shift_);
  if (either && dual()) {
    auto rw = reinterpret_cast<std::uintptr_t>(rw_base_);
    if (u >= rw && u - rw < bytes)
      return static_cast<std::ptrdiff_t>((u - rw) >> shift_);
  }
  return -1;
}

void Region::add_flags(std::size_t a, std::size_t b, std::uint8_t f) noexcept {
  for (std::size_t i = a; i < b; ++i) flags_[i] |= f;
}

void Region::clear_flags(std::size_t a, std::size_t b,
                         std::uint8_t f) noexcept {
  for (std::size_t i = a; i < b; ++i)
    flags_[i] &= static_cast<std::uint8_t>(~f);
}

void Region::set_revoked(std::size_t a, std::size_t b,
                         BarrierEpoch e) noexcept {
  for (std::size_t i = a; i < b; ++i) revoked_[i] = e;
}

Access Region::access(PageState s, View v) const noexcept {
  if (!dual()) {
    if (v == View::rw) return Access::none;
    switch (s) {
      case PageState::open:
      case PageState::writable:
        return Access::read_write;
      case PageState::executable:
        return Access::read_execute;
      case PageState::read_only:
        return Access::read;
      default:
        return Access::none;
    }
  }
  if (v == View::rw)
    return (s == PageState::open || s == PageState::writable)
               ? Access::read_write
               : Access::none;
  switch (s) {
    case PageState::executable:
      return Access::read_execute;
    case PageState::read_only:
      return Access::read;
    default:
      return Access::none;
  }
}

// Protection boundaries between pages i-1 and i for i in [a, b), both views.
std::size_t Region::boundaries(std::size_t a, std::size_t b) const noexcept {
  std::size_t n = 0;
  if (a == 0) a = 1;
  if (b > pages_) b = pages_;
  const int nviews = dual() ? 2 : 1;
  for (std::size_t i = a; i < b; ++i)
    for (int v = 0; v < nviews; ++v)
      n += access(state_[i - 1], View(v)) != access(state_[i], View(v));
  return n;
}

void Region::set_state(std::size_t a, std::size_t b, PageState s,
                       std::uint32_t head) noexcept {
  // Only boundaries at indices in [a, b+1) can change.
  const std::size_t before = boundaries(a, b + 1);
  for (std::size_t i = a; i < b; ++i) {
    --counts_[static_cast<int>(state_[i])];
    state_[i] = s;
    head_[i] = head;
  }
  counts_[static_cast<int>(s)] += b - a;
  vmas_ = vmas_ - before + boundaries(a, b + 1);
}

Result<void> Region::set_view(View v, std::size_t a, std::size_t b, Access want,
                              SyscallCounts& n) noexcept {
  const std::size_t bytes = (b - a) << shift_;
  if (!dual()) return pal_->protect(rx_page(a), bytes, want, n);
  std::byte* at = v == View::rx ? rx_page(a) : rw_page(a);
  // Inaccessible means no view at all: the shared pages are unmapped and an
  // anonymous placeholder holds the address. Executable access is only ever
  // gained by mapping the shared object, never by mprotect.
  if (want == Access::none) return pal_->reset(at, bytes, n);
  return pal_->map_shared(at, bytes, shm_, a << shift_, want, n);
}

Result<void> Region::decommit(std::size_t a, std::size_t b,
                              SyscallCounts& n) noexcept {
  const std::size_t bytes = (b - a) << shift_;
  if (dual())
    return pal_->discard_shared(shm_, a << shift_, bytes, rx_page(a), n);
  return pal_->decommit(rx_page(a), bytes, n);
}

void Region::trap_fill(std::size_t a, std::size_t b) noexcept {
  std::byte* p = rw_page(a);
  const std::size_t bytes = (b - a) << shift_;
#if defined(__x86_64__) || defined(__i386__)
  std::memset(p, 0xCC, bytes);  // int3
#elif defined(__aarch64__)
  const std::uint32_t brk = 0xD4200000;  // brk #0
  for (std::size_t off = 0; off < bytes; off += 4)
    std::memcpy(p + off, &brk, 4);
#else
  std::memset(p, 0, bytes);
#endif
}

void Region::flush(std::size_t a, std::size_t b) noexcept {
  pal_->flush_icache(rw_page(a), (b - a) << shift_);
}

}  // namespace wxa::detail
