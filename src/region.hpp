// SPDX-License-Identifier: MIT
// Region: one reservation, its page state map, its views and its VMA count.
//
// Layering: layer 3. Includes the platform layer (pal/) and metadata helpers
// only. The region knows which state every page is in, what kernel
// protection each view of a page must have in that state, and how to move a
// run of pages between states with the fewest calls; it knows nothing of
// chunks' lifecycle rules, quarantine or locking (that is the arena's).
#pragma once

#include <cstddef>
#include <cstdint>

#include "meta.hpp"
#include "pal/pal.hpp"
#include "wxarena/arena.hpp"

namespace wxa::detail {

/// The state of one page. `unused` and `open` are both free: `open` pages
/// are already writable, waiting to be handed out without a system call.
enum class PageState : std::uint8_t {
  unused,      // inaccessible, nothing committed
  open,        // free, writable (protect) / writable view mapped (dual_map)
  writable,    // in a writable chunk
  executable,  // in an executable chunk
  read_only,   // in a read-only chunk
  retired,     // released, inaccessible, in quarantine
};

inline constexpr int kPageStates = 6;

/// The public State a page state shows as.
constexpr State to_public(PageState s) noexcept {
  switch (s) {
    case PageState::writable:
      return State::writable;
    case PageState::executable:
      return State::executable;
    case PageState::read_only:
      return State::read_only;
    case PageState::retired:
      return State::retired;
    default:
      return State::free;
  }
}

/// Per-page flag: the page has been executable since it was last unused.
inline constexpr std::uint8_t kHeldCode = 1;

/// The arena's count of cross-thread barriers at some moment, modulo 2^32.
/// A page records it when it stops being executable: code that lands there
/// later needs a barrier only if none has been issued since.
using BarrierEpoch = std::uint32_t;

/// One view of the region (the protect backend has only `rx`).
enum class View : std::uint8_t { rx = 0, rw = 1 };

class Region {
 public:
  Region() noexcept = default;
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  ~Region();

  /// Reserves `pages` pages (and, for dual_map, the shared object and its
  /// second view), optionally within [lo, hi). All pages start `unused`.
  [[nodiscard]] Result<void> init(Pal& pal, Backend backend, std::size_t pages,
                                  std::uintptr_t lo, std::uintptr_t hi,
                                  bool name_mappings,
                                  SyscallCounts& n) noexcept;
  /// Unmaps everything (idempotent). Failures here cannot be reported.
  void destroy(SyscallCounts& n) noexcept;

  [[nodiscard]] bool dual() const noexcept {
    return backend_ == Backend::dual_map;
  }
  [[nodiscard]] Backend backend() const noexcept { return backend_; }
  [[nodiscard]] std::size_t pages() const noexcept { return pages_; }
  [[nodiscard]] std::size_t page_size() const noexcept { return page_size_; }
  [[nodiscard]] unsigned page_shift() const noexcept { return shift_; }
  [[nodiscard]] std::byte* rx_base() const noexcept { return rx_base_; }
  [[nodiscard]] std::byte* rw_base() const noexcept { return rw_base_; }
  [[nodiscard]] std::byte* rx_page(std::size_t i) const noexcept {
    return rx_base_ + (i << shift_);
  }
  [[nodiscard]] std::byte* rw_page(std::size_t i) const noexcept {
    return rw_base_ + (i << shift_);
  }

  /// Page index of an address in the rx view (or, if `either`, the rw
  /// view); -1 if outside.
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
  [[nodiscard]] Access access(PageState s, View v) const noexcept;
  /// Kernel VMAs the region occupies, from the state map.
  [[nodiscard]] std::size_t vmas() const noexcept { return vmas_; }
  /// Pages per state.
  [[nodiscard]] std::size_t count(PageState s) const noexcept {
    return counts_[static_cast<int>(s)];
  }

  /// Brings the kernel's view of [a, b) from the states `from(i)` to the
  /// states `to(i)`, never making a page writable and executable in any
  /// view at once: access is removed before it is added. One call per
  /// maximal sub-run that changes. On failure, what this call did is undone
  /// and the error is returned (an undo that fails is fatal). `calls` is
  /// incremented per protection call made.
  template <class From, class To>
  [[nodiscard]] Result<void> change(std::size_t a, std::size_t b, From from,
                                    To to, std::size_t& calls,
                                    SyscallCounts& n) noexcept;

  /// Frees the memory behind [a, b), which must be free (open or unused).
  [[nodiscard]] Result<void> decommit(std::size_t a, std::size_t b,
                                      SyscallCounts& n) noexcept;
  /// Fills [a, b) with trap instructions through the writable view.
  void trap_fill(std::size_t a, std::size_t b) noexcept;
  /// Flushes the instruction cache over [a, b) through the writable view.
  void flush(std::size_t a, std::size_t b) noexcept;

  [[nodiscard]] Pal& pal() const noexcept { return *pal_; }

 private:
  std::size_t boundaries(std::size_t a, std::size_t b) const noexcept;
  [[nodiscard]] Result<void> set_view(View v, std::size_t a, std::size_t b,
                                      Access access, SyscallCounts& n) noexcept;

  Pal* pal_ = nullptr;
  Backend backend_ = Backend::protect;
  std::size_t pages_ = 0, page_size_ = 0;
  unsigned shift_ = 0;
  std::byte* rx_base_ = nullptr;
  std::byte* rw_base_ = nullptr;
  SharedHandle shm_;
  PageState* state_ = nullptr;
  std::uint32_t* head_ = nullptr;
  std::uint32_t* length_ = nullptr;
  std::uint8_t* flags_ = nullptr;
  BarrierEpoch* revoked_ = nullptr;
  std::size_t vmas_ = 0;
  std::size_t counts_[kPageStates] = {};
};

// --- Region::change --------------------------------------------------------

template <class From, class To>
Result<void> Region::change(std::size_t a, std::size_t b, From from, To to,
                            std::size_t& calls, SyscallCounts& n) noexcept {
  // A step: view v over [sa, sb) was set to its `to` access.
  struct Step {
    std::size_t sa, sb;
    View v;
  };
  static constexpr int kMaxSteps = 64;
  Step done[kMaxSteps];
  int ndone = 0;
  const int nviews = dual() ? 2 : 1;

  auto undo = [&]() noexcept {
    for (int k = ndone - 1; k >= 0; --k) {
      const Step& s = done[k];
      std::size_t i = s.sa;
      while (i < s.sb) {
        Access want = access(from(i), s.v);
        std::size_t j = i + 1;
        while (j < s.sb && access(from(j), s.v) == want) ++j;
        ++calls;
        if (!set_view(s.v, i, j, want, n))
          fatal("cannot undo a protection change", rx_page(i), 0);
        i = j;
      }
    }
  };

  // Pass 0 removes access (to `none`), pass 1 adds or changes it.
  for (int pass = 0; pass < 2; ++pass) {
    for (int vi = 0; vi < nviews; ++vi) {
      const View v = static_cast<View>(vi);
      std::size_t i = a;
      while (i < b) {
        Access want = access(to(i), v);
        std::size_t j = i + 1;
        bool differs = access(from(i), v) != want;
        while (j < b && access(to(j), v) == want) {
          differs |= access(from(j), v) != want;
          ++j;
        }
        if (differs && ((want == Access::none) == (pass == 0))) {
          if (ndone == kMaxSteps) {
            undo();
            return Error(Errc::invalid_argument);
          }
          ++calls;
          Result<void> r = set_view(v, i, j, want, n);
          if (!r) {
            Error e(r.error().code(), r.error().sys_errno(), rx_page(i));
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
