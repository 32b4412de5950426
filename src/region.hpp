// SPDX-License-Identifier: MIT
// Region: one reservation, its page state map and its VMA count, over the
// backend that carries out what the states say (backend/backend.hpp).
//
// Layering: layer 3. Includes backend/backend.hpp, the platform layer (pal/)
// and metadata helpers only. The region knows which state every page is in and
// moves runs of pages between states with the fewest calls, asking its
// backend what each view must show; it knows nothing of chunks' lifecycle
// rules, quarantine or locking (that is the arena's).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "backend/backend.hpp"
#include "error.hpp"
#include "meta.hpp"
#include "pal/pal.hpp"
#include "wxarena/arena.hpp"

namespace wxa::detail {

/// Per-page flag: the page has been executable since it was last unused.
inline constexpr std::uint8_t kHeldCode = 1;
/// Per-page flag, on a chunk's first page: a commit that let go of the
/// arena's lock is writing the chunk; other commits wait for it.
inline constexpr std::uint8_t kInFlight = 2;

/// The arena's count of cross-thread barriers at some moment, modulo 2^32.
/// A page records it when it stops being executable: code that lands there
/// later needs a barrier only if none has been issued since.
using BarrierEpoch = std::uint32_t;

/// Which passes of a change to make: removing access first, then adding or
/// changing it, so no page is ever writable and executable in any view at
/// once.
enum Passes : unsigned { kRemove = 1, kAdd = 2, kBothPasses = 3 };

/// True when going from `from` to `to` only takes rights away (to none, or
/// to read-only from more): such a change belongs to the first pass.
constexpr bool only_removes(Access from, Access to) noexcept {
  return to == Access::none || (to == Access::read && from != Access::none);
}

class Region {
 public:
  Region() noexcept = default;
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  ~Region();

  /// Reserves `pages` pages with the given backend, optionally within
  /// [lo, hi). All pages start `unused`.
  [[nodiscard]] Result<void> init(Pal& pal, const BackendFacts& backend,
                                  std::size_t pages, std::uintptr_t lo,
                                  std::uintptr_t hi, bool name_mappings,
                                  std::size_t lanes, SyscallCounts& n) noexcept;
  /// Unmaps everything (idempotent). Failures here cannot be reported.
  void destroy(SyscallCounts& n) noexcept;

  [[nodiscard]] Backend backend() const noexcept {
    return ops_ ? ops_->kind() : Backend{};
  }
  [[nodiscard]] PageBackend& ops() const noexcept { return *ops_; }
  /// True when the memory is shared with fork() children (a memfd).
  [[nodiscard]] bool shared() const noexcept {
    return ops_->facts().shared_memory;
  }
  [[nodiscard]] std::size_t pages() const noexcept { return pages_; }
  [[nodiscard]] std::size_t page_size() const noexcept { return page_size_; }
  [[nodiscard]] unsigned page_shift() const noexcept { return shift_; }
  [[nodiscard]] std::byte* rx_base() const noexcept { return ops_->rx_base(); }
  [[nodiscard]] std::byte* rx_page(std::size_t i) const noexcept {
    return ops_->rx_base() + (i << shift_);
  }
  /// The address standing for page i in the writable range, or nullptr
  /// where writable bytes do not follow page offsets (they are staged).
  [[nodiscard]] std::byte* rw_page(std::size_t i) const noexcept {
    return ops_->rw_page(i);
  }

  /// Page index of an address in the rx view (or, if `either`, in the
  /// writable bytes of a chunk); -1 if outside.
  [[nodiscard]] std::ptrdiff_t index_of(const void* p,
                                        bool either = false) const noexcept;

  [[nodiscard]] PageState state(std::size_t i) const noexcept {
    return state_[i];
  }
  [[nodiscard]] std::uint32_t head(std::size_t i) const noexcept {
    return head_[i];
  }
  [[nodiscard]] std::uint32_t length(std::size_t head) const noexcept {
    return length_[head];
  }
  [[nodiscard]] std::uint8_t flags(std::size_t i) const noexcept {
    return flags_[i];
  }
  void add_flags(std::size_t a, std::size_t b, std::uint8_t f) noexcept;
  void clear_flags(std::size_t a, std::size_t b, std::uint8_t f) noexcept;
  /// The barrier epoch at which page i last stopped being executable.
  [[nodiscard]] BarrierEpoch revoked(std::size_t i) const noexcept {
    return revoked_[i];
  }
  void set_revoked(std::size_t a, std::size_t b, BarrierEpoch e) noexcept;

  /// Sets the tracked state of [a, b) (no system call) and keeps the VMA
  /// count up to date. `head` is recorded for every page.
  void set_state(std::size_t a, std::size_t b, PageState s,
                 std::uint32_t head) noexcept;
  void set_length(std::size_t head, std::uint32_t pages) noexcept {
    length_[head] = pages;
  }

  /// The kernel protection a page in state `s` has in view `v`.
  [[nodiscard]] Access access(PageState s, View v) const noexcept {
    return access_[static_cast<int>(v)][static_cast<int>(s)];
  }
  /// How many views follow the page states (the backend's views()).
  [[nodiscard]] int views() const noexcept { return views_; }
  /// Pages per lane (the backend's lane_pages()): 0 for one lane.
  [[nodiscard]] std::size_t lane_pages() const noexcept {
    return lane_mask_ ? lane_mask_ + 1 : 0;
  }
  /// How many lanes the pages make (1 without lanes).
  [[nodiscard]] std::size_t lanes() const noexcept {
    return lane_mask_ ? (pages_ + lane_mask_) / (lane_mask_ + 1) : 1;
  }
  /// True when a lane starts at page i (> 0).
  [[nodiscard]] bool lane_edge(std::size_t i) const noexcept {
    return lane_mask_ && (i & lane_mask_) == 0;
  }
  /// Kernel VMAs the region occupies, from the state map.
  [[nodiscard]] std::size_t vmas() const noexcept {
    return vmas_ + ops_->fixed_vmas();
  }
  /// Pages per state.
  [[nodiscard]] std::size_t count(PageState s) const noexcept {
    return counts_[static_cast<int>(s)];
  }

  /// Brings the kernel's view of [a, b) from the protections `cur(i, v)` to
  /// `want(i, v)`, in the given passes: access is removed (pass kRemove)
  /// before it is added (kAdd), so no page is ever writable and executable
  /// in any view at once. One call per maximal sub-run that changes. On
  /// failure, what this call did is undone and the error is returned (an
  /// undo that fails is fatal). `calls` counts protection calls made.
  template <class Cur, class Want>
  [[nodiscard]] Result<void> change_access(std::size_t a, std::size_t b,
                                           Cur cur, Want want, unsigned passes,
                                           std::size_t& calls,
                                           SyscallCounts& n) noexcept;

  /// change_access() between page states: `from(i)` to `to(i)`.
  template <class From, class To>
  [[nodiscard]] Result<void> change(std::size_t a, std::size_t b, From from,
                                    To to, std::size_t& calls, SyscallCounts& n,
                                    unsigned passes = kBothPasses) noexcept {
    return change_access(
        a, b, [&](std::size_t i, View v) { return access(from(i), v); },
        [&](std::size_t i, View v) { return access(to(i), v); }, passes, calls,
        n);
  }

  /// Frees the memory behind [a, b), which must be free (open or unused).
  [[nodiscard]] Result<void> decommit(std::size_t a, std::size_t b,
                                      SyscallCounts& n) noexcept {
    return ops_->decommit(a, b, n);
  }
  /// Fills recycled pages [a, b) with trap instructions.
  void trap_fill(std::size_t a, std::size_t b) noexcept {
    ops_->trap_fill(a, b);
  }
  /// Makes code in [a, b) visible to instruction fetch.
  void flush(std::size_t a, std::size_t b) noexcept { ops_->flush(a, b); }

  [[nodiscard]] Pal& pal() const noexcept { return *pal_; }

 private:
  std::size_t boundaries(std::size_t a, std::size_t b) const noexcept;

  Pal* pal_ = nullptr;
  PageBackend* ops_ = nullptr;
  std::size_t pages_ = 0, page_size_ = 0;
  unsigned shift_ = 0;
  PageState* state_ = nullptr;
  std::uint32_t* head_ = nullptr;
  std::uint32_t* length_ = nullptr;
  std::uint8_t* flags_ = nullptr;
  BarrierEpoch* revoked_ = nullptr;
  std::size_t vmas_ = 0;
  std::size_t counts_[kPageStates] = {};
  // The backend's access() and views(), asked once: the state map consults
  // them for every page it changes.
  Access access_[2][kPageStates] = {};
  int views_ = 0;
  std::size_t lane_mask_ = 0;  // lane_pages() - 1, or 0 for one lane
};

// --- Region::change_access ---------------------------------------------------

template <class Cur, class Want>
Result<void> Region::change_access(std::size_t a, std::size_t b, Cur cur,
                                   Want want, unsigned passes,
                                   std::size_t& calls,
                                   SyscallCounts& n) noexcept {
  // A step: view v over [sa, sb) was set to its `want` access.
  struct Step {
    std::size_t sa, sb;
    View v;
  };
  static constexpr int kMaxSteps = 64;
  Step done[kMaxSteps];
  int ndone = 0;
  const int nviews = views_;

  auto undo = [&]() noexcept {
    for (int k = ndone - 1; k >= 0; --k) {
      const Step& s = done[k];
      std::size_t i = s.sa;
      while (i < s.sb) {
        Access back = cur(i, s.v);
        std::size_t j = i + 1;
        while (j < s.sb && cur(j, s.v) == back) ++j;
        ++calls;
        if (!ops_->set_access(s.v, i, j, back, n))
          fatal("cannot undo a protection change", rx_page(i), 0);
        i = j;
      }
    }
  };

  // Pass 0 removes access (to `none`), pass 1 adds or changes it.
  for (int pass = 0; pass < 2; ++pass) {
    if (!(passes & (pass == 0 ? kRemove : kAdd))) continue;
    for (int vi = 0; vi < nviews; ++vi) {
      const View v = static_cast<View>(vi);
      std::size_t i = a;
      while (i < b) {
        Access target = want(i, v);
        const bool removes = only_removes(cur(i, v), target);
        std::size_t j = i + 1;
        bool differs = cur(i, v) != target;
        // One call never spans two lanes (two objects).
        while (j < b && !lane_edge(j) && want(j, v) == target &&
               only_removes(cur(j, v), target) == removes) {
          differs |= cur(j, v) != target;
          ++j;
        }
        if (differs && (removes == (pass == 0))) {
          if (ndone == kMaxSteps) {
            undo();
            return Error(Errc::invalid_argument);
          }
          ++calls;
          Result<void> r = ops_->set_access(v, i, j, target, n);
          if (!r) {
            Error e = make_error(r.error(), rx_page(i));
            undo();
            return e;
          }
          done[ndone++] = Step{i, j, v};
        }
        i = j;
      }
    }
  }
  return {};
}

}  // namespace wxa::detail
