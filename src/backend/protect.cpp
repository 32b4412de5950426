// SPDX-License-Identifier: MIT
// The protect backend: one private anonymous reservation whose pages are
// flipped with mprotect, read+write while writable, read+execute when
// sealed. Writable bytes are the pages themselves (rw() == rx()).
#include "backend/backend.hpp"

namespace wxa::detail {
namespace {

class ProtectBackend final : public PageBackend {
 public:
  const BackendFacts& facts() const noexcept override;

  Result<void> init(Pal& pal, std::size_t pages, unsigned shift,
                    std::uintptr_t lo, std::uintptr_t hi, bool name,
                    SyscallCounts& n) noexcept override {
    pal_ = &pal;
    pages_ = pages;
    shift_ = shift;
    Result<std::byte*> rx = pal.reserve(bytes(), lo, hi, n);
    if (!rx) return rx.error();
    rx_base_ = *rx;
    if (pal.capabilities().anon_merge_by_origin) {
      if (Result<void> r = give_one_origin(n); !r) {
        if (Result<void> u = pal.unmap(rx_base_, bytes(), n); !u)
          return u.error();
        rx_base_ = nullptr;
        return r;
      }
    }
    if (name && pal.capabilities().vma_naming) {
      // Best effort: a name only helps people read /proc/<pid>/maps.
      (void)pal.name(rx_base_, bytes(), "wxarena", n);
    }
    return {};
  }

  void destroy(SyscallCounts& n) noexcept override {
    if (rx_base_) (void)pal_->unmap(rx_base_, bytes(), n);
    rx_base_ = nullptr;
  }

  int views() const noexcept override { return 1; }

  // Makes the kernel's record of the reservation's anonymous memory while
  // it is one VMA (see Capabilities::anon_merge_by_origin): writable for a
  // moment, one byte written (a zero: the page reads as fresh), its memory
  // given back, inaccessible again. Every part split off later shares the
  // record, so parts of equal protection merge, whichever were written, on
  // every kernel: the VMA count the region keeps from the page states.
  // Without it that count could fall short of the kernel's and the budget
  // would no longer refuse first, so a failure here fails the arena (the
  // RLIMIT_DATA limit, or the commit limit under strict overcommit, where
  // the whole reservation is charged from now on).
  Result<void> give_one_origin(SyscallCounts& n) noexcept {
    if (Result<void> r =
            pal_->protect(rx_base_, bytes(), Access::read_write, n);
        !r)
      return r;
    *reinterpret_cast<volatile std::byte*>(rx_base_) = std::byte{0};
    // The whole range: a first write may have been given a huge page.
    Result<void> r = pal_->decommit(rx_base_, bytes(), n);
    Result<void> back = pal_->protect(rx_base_, bytes(), Access::none, n);
    if (!r) return r;
    return back;
  }

  Access access(PageState s, View v) const noexcept override {
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

  Result<void> set_access(View, std::size_t a, std::size_t b, Access want,
                          SyscallCounts& n) noexcept override {
    return pal_->protect(rx_page(a), (b - a) << shift_, want, n);
  }

  Result<void> decommit(std::size_t a, std::size_t b,
                        SyscallCounts& n) noexcept override {
    return pal_->decommit(rx_page(a), (b - a) << shift_, n);
  }

  Result<std::byte*> stage(std::uint32_t head, std::uint32_t,
                           bool) noexcept override {
    // Open pages were trap-filled (or are fresh zeros); an unsealed chunk
    // keeps its code where it is.
    return rx_page(head);
  }
  std::byte* staged(std::uint32_t head) const noexcept override {
    return rx_page(head);
  }
  std::span<std::byte> rw_range() const noexcept override {
    return {rx_base_, bytes()};
  }
  std::byte* rw_page(std::size_t i) const noexcept override {
    return rx_page(i);
  }

  void trap_fill(std::size_t a, std::size_t b) noexcept override {
    fill_traps(rx_page(a), (b - a) << shift_);
  }

  void flush(std::size_t a, std::size_t b) noexcept override {
    pal_->flush_icache(rx_page(a), (b - a) << shift_);
  }
};

}  // namespace

extern const BackendFacts kProtectFacts;
const BackendFacts kProtectFacts{
    .kind = Backend::protect,
    // Private anonymous memory must be allowed to gain execute: a policy
    // forbids it (SELinux deny_execmem, Arbitrary Code Guard).
    .refusal =
        [](const Capabilities& caps) noexcept {
          return caps.anon_exec ? Errc::ok : Errc::permission_denied;
        },
    .initial_vmas = 1,  // the reservation
    .shared_memory = false,
    .rw_is_rx = true,
    .make = &new_backend<ProtectBackend>,
};

const BackendFacts& ProtectBackend::facts() const noexcept {
  return kProtectFacts;
}

}  // namespace wxa::detail
