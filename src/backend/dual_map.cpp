// SPDX-License-Identifier: MIT
// The dual_map backend: one memfd with two views at the same offsets. The
// executable view maps a page read+execute only while it is sealed code
// (read-only while sealed data); the writable view maps it read+write only
// while it is open or writable. A page is never mapped executable by
// mprotect, only by mapping the memfd, and inaccessible means no view at
// all (an anonymous placeholder holds the address).
#include "backend/backend.hpp"

namespace wxa::detail {
namespace {

class DualMapBackend final : public PageBackend {
 public:
  const BackendFacts& facts() const noexcept override;

  Result<void> init(Pal& pal, std::size_t pages, unsigned shift,
                    std::uintptr_t lo, std::uintptr_t hi, bool,
                    SyscallCounts& n) noexcept override {
    pal_ = &pal;
    pages_ = pages;
    shift_ = shift;
    // The shared object first: where views cannot be mapped over part of a
    // reservation (Windows), each view's range is a whole view of it.
    Result<SharedHandle> shm = pal.create_shared(bytes(), "wxarena", n);
    if (!shm) return shm.error();
    shm_ = *shm;
    Result<std::byte*> rx =
        pal.reserve_view(shm_, bytes(), lo, hi, Access::read_execute, n);
    if (!rx) {
      Error e = rx.error();
      destroy(n);
      return e;
    }
    rx_base_ = *rx;
    // The writable views live in a second range of the same size, at the
    // same offsets, so that adjacent views merge into one VMA. It is placed
    // right beside the first where that is free (below, where the kernel
    // maps next, else above), so that a page's two views are one
    // reservation's size apart: a JIT that keeps read-write data in writable
    // chunks reaches it from code with 32-bit PC-relative fixups
    // (include/wxarena/adapters/). Else anywhere.
    const std::uintptr_t page = std::uintptr_t{1} << shift_;
    const std::uintptr_t fenced = bytes() + 2 * page;  // with its guards
    const auto code = reinterpret_cast<std::uintptr_t>(rx_base_);
    Result<std::byte*> rw = Error(Errc::unreachable_anchor);
    if (code - page > fenced)
      rw = pal.reserve_view(shm_, bytes(), code - page - fenced, code - page,
                            Access::read_write, n);
    const std::uintptr_t above = code + bytes() + page;
    if (!rw && rw.error().code() == Errc::unreachable_anchor &&
        above < UINTPTR_MAX - fenced)
      rw = pal.reserve_view(shm_, bytes(), above, above + fenced,
                            Access::read_write, n);
    if (!rw && rw.error().code() == Errc::unreachable_anchor)
      rw = pal.reserve_view(shm_, bytes(), 0, 0, Access::read_write, n);
    if (!rw) {
      Error e = rw.error();
      destroy(n);
      return e;
    }
    rw_base_ = *rw;
    return {};
  }

  void destroy(SyscallCounts& n) noexcept override {
    if (rx_base_) (void)pal_->unmap_view(rx_base_, bytes(), n);
    if (rw_base_) (void)pal_->unmap_view(rw_base_, bytes(), n);
    if (shm_.valid()) (void)pal_->close_shared(shm_, n);
    rx_base_ = rw_base_ = nullptr;
    shm_ = SharedHandle{};
  }

  int views() const noexcept override { return 2; }

  Access access(PageState s, View v) const noexcept override {
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

  Result<void> set_access(View v, std::size_t a, std::size_t b, Access want,
                          SyscallCounts& n) noexcept override {
    const std::size_t len = (b - a) << shift_;
    std::byte* at = v == View::rx ? rx_page(a) : rw_page(a);
    // Inaccessible means no view at all: the shared pages are unmapped and
    // an anonymous placeholder holds the address. Executable access is
    // only ever gained by mapping the shared object, never by mprotect.
    if (want == Access::none) return pal_->reset(at, len, n);
    return pal_->map_shared(at, len, shm_, a << shift_, want, n);
  }

  std::size_t fixed_vmas() const noexcept override { return 0; }

  Result<void> decommit(std::size_t a, std::size_t b,
                        SyscallCounts& n) noexcept override {
    return pal_->discard_shared(shm_, a << shift_, (b - a) << shift_,
                                rx_page(a), n);
  }

  Result<std::byte*> stage(std::uint32_t head, std::uint32_t,
                           bool) noexcept override {
    return rw_page(head);
  }
  std::byte* staged(std::uint32_t head) const noexcept override {
    return rw_page(head);
  }
  std::ptrdiff_t page_of_rw(const void* p) const noexcept override {
    auto u = reinterpret_cast<std::uintptr_t>(p);
    auto rw = reinterpret_cast<std::uintptr_t>(rw_base_);
    if (u >= rw && u - rw < bytes())
      return static_cast<std::ptrdiff_t>((u - rw) >> shift_);
    return -1;
  }
  std::span<std::byte> rw_range() const noexcept override {
    return {rw_base_, bytes()};
  }
  std::byte* rw_page(std::size_t i) const noexcept override {
    return rw_base_ + (i << shift_);
  }

  void trap_fill(std::size_t a, std::size_t b) noexcept override {
    fill_traps(rw_page(a), (b - a) << shift_);
  }

  void flush(std::size_t a, std::size_t b) noexcept override {
    pal_->flush_icache(rw_page(a), (b - a) << shift_);
  }

 private:
  std::byte* rw_base_ = nullptr;
  SharedHandle shm_;
};

}  // namespace

extern const BackendFacts kDualMapFacts;
const BackendFacts kDualMapFacts{
    .kind = Backend::dual_map,
    // A memfd that may be mapped executable.
    .refusal =
        [](const Capabilities& caps) noexcept {
          return caps.shared_memory && caps.shared_exec ? Errc::ok
                                                        : Errc::not_supported;
        },
    .initial_vmas = 2,  // its two views
    .shared_memory = true,
    .rw_is_rx = false,
    .make = &new_backend<DualMapBackend>,
};

const BackendFacts& DualMapBackend::facts() const noexcept {
  return kDualMapFacts;
}

}  // namespace wxa::detail
