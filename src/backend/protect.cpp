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
