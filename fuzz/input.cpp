// SPDX-License-Identifier: MIT
// Picks the operands of an operation from the input: addresses (chunks,
// their insides and views, heap functions, old and foreign addresses) and
// sizes.
#include <cstddef>
#include <cstdint>
#include <iterator>

#include "harness_internal.hpp"

namespace wxa::fuzz::harness {
namespace {

constexpr std::size_t kMaxStale = 64;  // remembered old addresses

}  // namespace

// --- Picking ---------------------------------------------------------------

void Harness::remember(std::uintptr_t a) {
  if (stale_.size() < kMaxStale) {
    stale_.push_back(a);
  } else {
    stale_[stale_next_] = a;
    stale_next_ = (stale_next_ + 1) % kMaxStale;
  }
}

const void* Harness::pick_address(Slot& s) {
  static const char kForeign[16] = {};
  const std::uint8_t sel = in_.u8();
  const std::size_t bytes = s.pages * ps_;
  auto nth = [&](std::size_t i) {
    auto it = s.chunks.begin();
    std::advance(it, static_cast<std::ptrdiff_t>(i));
    return it;
  };
  switch (sel % 8) {
    case 3:  // inside a chunk, not its start
      if (!s.chunks.empty()) {
        auto it = nth(in_.below(s.chunks.size()));
        return ptr(it->first + 1 + in_.below(it->second.pages * ps_ - 1));
      }
      break;
    case 4:  // a chunk's writable view (dual_map), or its start (protect)
      if (!s.chunks.empty()) {
        auto it = nth(in_.below(s.chunks.size()));
        return ptr(view(s, it->first) + (in_.u8() & 1 ? 0 : in_.below(ps_)));
      }
      break;
    case 5:  // any page of the reservation, perhaps not at its start
      return ptr(s.rx_base + in_.below(s.pages) * ps_ +
                 (in_.u8() & 1 ? in_.below(ps_) : 0));
    case 6: {  // outside
      const Slot& other = slots_[&s == &slots_[0] ? 1 : 0];
      switch (in_.u8() % 7) {
        case 0:
          return nullptr;
        case 1:
          return kForeign;
        case 2:
          return this;
        case 3:
          if (other.arena)
            return ptr(other.rx_base + in_.below(other.pages) * ps_);
          return nullptr;
        case 4:
          return ptr(s.rx_base + bytes);
        case 5:
          return ptr(s.rx_base - 1);
        default:
          return ptr(s.rw_base + bytes);
      }
    }
    case 7:  // an address handed out before
      if (!stale_.empty()) return ptr(stale_[in_.below(stale_.size())]);
      break;
    default:
      break;
  }
  if (s.chunks.empty()) return ptr(s.rx_base + in_.below(s.pages) * ps_);
  return ptr(nth(in_.below(s.chunks.size()))->first);
}

std::size_t Harness::pick_size(const Slot& s) {
  const std::uint8_t sel = in_.u8();
  switch (sel % 8) {
    case 0:
      return 1 + in_.below(64);
    case 1:
      return 1 + in_.below(ps_);
    case 2:
      return ps_;
    case 3:
      return ps_ * (1 + in_.below(4)) + in_.below(2);
    case 4:
      return 1 + in_.below(8 * ps_);
    case 5:
      return (sel & 0x80) ? 0 : 1 + in_.below(16) * ps_;
    case 6:
      return s.pages * ps_ + ((sel & 0x80) ? 1 : 0);
    default:
      return (1 + in_.below(16)) * ps_;
  }
}

const void* Harness::pick_heap_address(Slot& s) {
  static const char kForeign[16] = {};
  const std::uint8_t sel = in_.u8();
  if (!s.heap_pages.empty() && sel % 8 < 4) {
    auto it = s.heap_pages.begin();
    std::advance(it,
                 static_cast<std::ptrdiff_t>(in_.below(s.heap_pages.size())));
    const HeapPageM& page = it->second;
    if (sel % 8 == 3)  // anywhere in the page
      return ptr(it->first + in_.below(page.pages * ps_));
    if (!page.fns.empty()) {
      auto fn = page.fns.begin();
      std::advance(fn, static_cast<std::ptrdiff_t>(in_.below(page.fns.size())));
      const std::size_t inner = sel % 8 == 2 && fn->second.size > 1
                                    ? 1 + in_.below(fn->second.size - 1)
                                    : 0;
      return ptr(it->first + fn->first + inner);
    }
  }
  switch (sel % 8) {
    case 4:
      if (!stale_.empty()) return ptr(stale_[in_.below(stale_.size())]);
      break;
    case 5:
      return nullptr;
    case 6:
      return kForeign;
    default:
      break;
  }
  return pick_address(s);
}

}  // namespace wxa::fuzz::harness
