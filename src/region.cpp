// SPDX-License-Identifier: MIT
// Region: the page state map and VMA accounting over a backend.
#include "region.hpp"

#include <bit>
#include <cstring>

namespace wxa::detail {

Region::~Region() {
  destroy_backend(ops_);
  meta_free(state_);
  meta_free(head_);
  meta_free(length_);
  meta_free(flags_);
  meta_free(revoked_);
}

Result<void> Region::init(Pal& pal, const BackendFacts& backend,
                          std::size_t pages, std::uintptr_t lo,
                          std::uintptr_t hi, bool name_mappings,
                          std::size_t lanes, SyscallCounts& n) noexcept {
  pal_ = &pal;
  pages_ = pages;
  page_size_ = pal.capabilities().page_size;
  shift_ = static_cast<unsigned>(std::countr_zero(page_size_));

  // A second init() (the arena trying another backend) starts afresh.
  destroy_backend(ops_);
  ops_ = nullptr;
  meta_free(state_);
  meta_free(head_);
  meta_free(length_);
  meta_free(flags_);
  meta_free(revoked_);
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
  for (std::size_t& c : counts_) c = 0;
  counts_[static_cast<int>(PageState::unused)] = pages;

  ops_ = backend.make();
  if (!ops_) return Error(Errc::out_of_memory, kNoMemory);
  ops_->set_lanes(lanes);
  if (Result<void> r = ops_->init(pal, pages, shift_, lo, hi, name_mappings, n);
      !r) {
    destroy_backend(ops_);
    ops_ = nullptr;
    return r;
  }
  views_ = ops_->views();
  lane_mask_ = ops_->lane_pages() ? ops_->lane_pages() - 1 : 0;
  for (int v = 0; v < 2; ++v)
    for (int k = 0; k < kPageStates; ++k)
      access_[v][k] = ops_->access(static_cast<PageState>(k), View(v));
  // Every view starts as one inaccessible range.
  vmas_ = static_cast<std::size_t>(views_);
  return {};
}

void Region::destroy(SyscallCounts& n) noexcept {
  if (ops_) ops_->destroy(n);
}

std::ptrdiff_t Region::index_of(const void* p, bool either) const noexcept {
  auto u = reinterpret_cast<std::uintptr_t>(p);
  auto rx = reinterpret_cast<std::uintptr_t>(rx_base());
  const std::size_t bytes = pages_ << shift_;
  if (u >= rx && u - rx < bytes)
    return static_cast<std::ptrdiff_t>((u - rx) >> shift_);
  if (either) return ops_->page_of_rw(p);
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

// VMA boundaries between pages i-1 and i for i in [a, b), all views: where
// the protection changes, and at a lane edge where both pages are mapped
// (from two objects, which never merge).
std::size_t Region::boundaries(std::size_t a, std::size_t b) const noexcept {
  std::size_t n = 0;
  if (a == 0) a = 1;
  if (b > pages_) b = pages_;
  const int nviews = views_;
  for (std::size_t i = a; i < b; ++i)
    for (int v = 0; v < nviews; ++v) {
      const Access x = access(state_[i - 1], View(v));
      const Access y = access(state_[i], View(v));
      n += x != y ||
           (lane_edge(i) && v == 0 && x != Access::none && y != Access::none);
    }
  return n;
}

void Region::set_state(std::size_t a, std::size_t b, PageState s,
                       std::uint32_t head) noexcept {
  // Pages of one state that keep their protection in every view (a
  // kernel_write seal or release) move no VMA boundary: no recount, so a
  // commit's state updates cost no more than the pages they change.
  bool keeps = a < b;
  for (std::size_t i = a + 1; i < b && keeps; ++i)
    keeps = state_[i] == state_[a];
  for (int v = 0; v < views_ && keeps; ++v)
    keeps = access(state_[a], View(v)) == access(s, View(v));
  if (keeps) {
    counts_[static_cast<int>(state_[a])] -= b - a;
    for (std::size_t i = a; i < b; ++i) {
      state_[i] = s;
      head_[i] = head;
    }
    counts_[static_cast<int>(s)] += b - a;
    return;
  }
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

}  // namespace wxa::detail
