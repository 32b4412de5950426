// SPDX-License-Identifier: MIT
// FaultPal: the real Linux platform layer with call counting and an injected
// failure at the k-th call, for proving that every failure rolls back.
//
// Every virtual of wxa::detail::Pal is overridden: the call is counted (and
// logged), and unless it is the armed one it is forwarded to the inner
// platform layer: the real one, or another (a SimPal) handed to the
// constructor. The armed call does not reach the kernel; it returns the
// Error that error_from_errno() makes of the configured errno, so the arena
// sees exactly what a kernel refusal would give it. flush_icache() is logged
// too (it is not a system call and cannot fail) so tests can check its order.
//
// Thread safety: calls may come from several threads at once (a commit
// writes, maps fresh pages in and flushes without the arena's lock); the log
// and the counts are kept under a mutex of its own. Configure it and read
// the log while no call is in progress. Outlive every arena created on it.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string_view>
#include <vector>

#include "pal/pal.hpp"

namespace wxa::test {

/// The platform operations a FaultPal intercepts.
enum class PalCall : std::uint8_t {
  reserve,
  unmap,
  protect,
  reset,
  decommit,
  create_shared,
  close_shared,
  map_shared,
  discard_shared,
  name,
  register_barrier,
  barrier,
  write_shared,
  populate,
  flush_icache,  // logged only: not a system call, never fails
};
inline constexpr int kPalCalls = 15;

[[nodiscard]] std::string_view to_string(PalCall call) noexcept;

/// A bit per PalCall, for choosing which calls count as "failable".
[[nodiscard]] constexpr unsigned bit(PalCall c) noexcept {
  return 1u << static_cast<unsigned>(c);
}
/// Every call that reaches the kernel.
inline constexpr unsigned kAllSyscalls =
    (1u << static_cast<unsigned>(PalCall::flush_icache)) - 1;
/// The calls a Batch::commit() can make: protection changes, the kernel's
/// copy into the code (kernel_write), populating, and the barrier.
inline constexpr unsigned kCommitCalls =
    bit(PalCall::protect) | bit(PalCall::reset) | bit(PalCall::map_shared) |
    bit(PalCall::barrier) | bit(PalCall::write_shared) | bit(PalCall::populate);

/// One intercepted call.
struct PalEvent {
  PalCall call;
  const void* p = nullptr;
  std::size_t bytes = 0;
  Access access = Access::none;  // protect / map_shared
  bool failed = false;           // injected or real failure
  bool injected = false;         // the failure this FaultPal was armed for
};

class FaultPal final : public detail::Pal {
 public:
  /// Forwards to `inner` (the process's real platform layer by default),
  /// which must outlive this FaultPal.
  explicit FaultPal(detail::Pal& inner = detail::system_pal()) noexcept
      : inner_(&inner) {}

  /// The `k`-th (1-based) failable call from now fails with `err`, once.
  /// A call is failable when its bit is in `mask`.
  void arm(std::size_t k, int err = ENOMEM,
           unsigned mask = kCommitCalls) noexcept;
  /// Every failable call from the `k`-th on fails (the fatal-path tests).
  void arm_persistent(std::size_t k, int err = ENOMEM,
                      unsigned mask = kCommitCalls) noexcept;
  void disarm() noexcept;
  /// True once the armed failure has been injected.
  [[nodiscard]] bool fired() const noexcept { return fired_; }

  /// Failable calls (under the last mask) since the last reset_counts().
  [[nodiscard]] std::size_t failable_calls() const noexcept {
    return failable_;
  }
  /// Calls of one kind since the last reset_counts().
  [[nodiscard]] std::size_t calls(PalCall c) const noexcept {
    return per_call_[static_cast<int>(c)];
  }
  /// Every intercepted call since the last reset_counts().
  [[nodiscard]] const std::vector<PalEvent>& log() const noexcept {
    return log_;
  }
  void reset_counts() noexcept;
  /// Counts calls failable under `mask` without failing any.
  void count_only(unsigned mask = kCommitCalls) noexcept;
  /// Runs `hook` at the start of every intercepted call, in the calling
  /// thread (to hold a call back at a chosen moment); empty for none. Set
  /// it while no other thread uses this FaultPal.
  void before_each(std::function<void(PalCall)> hook) {
    before_ = std::move(hook);
  }

  // --- detail::Pal ---------------------------------------------------------
  const detail::Capabilities& capabilities() noexcept override;
  Result<std::byte*> reserve(std::size_t bytes, std::uintptr_t lo,
                             std::uintptr_t hi,
                             SyscallCounts& n) noexcept override;
  Result<std::byte*> reserve_view(detail::SharedHandle h, std::size_t bytes,
                                  std::uintptr_t lo, std::uintptr_t hi,
                                  Access max,
                                  SyscallCounts& n) noexcept override;
  Result<void> unmap_view(void* p, std::size_t bytes,
                          SyscallCounts& n) noexcept override;
  Result<void> unmap(void* p, std::size_t bytes,
                     SyscallCounts& n) noexcept override;
  Result<void> protect(void* p, std::size_t bytes, Access access,
                       SyscallCounts& n) noexcept override;
  Result<void> reset(void* p, std::size_t bytes,
                     SyscallCounts& n) noexcept override;
  Result<void> decommit(void* p, std::size_t bytes,
                        SyscallCounts& n) noexcept override;
  Result<detail::SharedHandle> create_shared(
      std::size_t bytes, const char* name, SyscallCounts& n) noexcept override;
  Result<void> close_shared(detail::SharedHandle h,
                            SyscallCounts& n) noexcept override;
  Result<void> map_shared(void* p, std::size_t bytes, detail::SharedHandle h,
                          std::size_t offset, Access access,
                          SyscallCounts& n) noexcept override;
  Result<void> discard_shared(detail::SharedHandle h, std::size_t offset,
                              std::size_t bytes, void* view,
                              SyscallCounts& n) noexcept override;
  Result<void> small_pages(void* p, std::size_t bytes,
                           SyscallCounts& n) noexcept override;
  Result<void> name(void* p, std::size_t bytes, const char* label,
                    SyscallCounts& n) noexcept override;
  Result<void> write_shared(detail::SharedHandle h, std::size_t offset,
                            const detail::WritePiece* pieces, std::size_t count,
                            SyscallCounts& n) noexcept override;
  Result<void> populate(void* p, std::size_t bytes,
                        SyscallCounts& n) noexcept override;
  Result<void> register_barrier(SyscallCounts& n) noexcept override;
  Result<void> barrier(SyscallCounts& n) noexcept override;
  void flush_icache(void* p, std::size_t bytes) noexcept override;

 private:
  // Records the call; returns the Error to inject, or an ok Result.
  Result<void> intercept(PalCall c, const void* p, std::size_t bytes,
                         Access access = Access::none) noexcept;
  void note_failure(const Result<void>& r) noexcept;

  detail::Pal* inner_;
  std::function<void(PalCall)> before_;
  std::mutex mutex_;  // intercept() may run in several threads at once
  unsigned mask_ = kCommitCalls;
  std::size_t fail_at_ = 0;  // 0: not armed
  bool persistent_ = false;
  bool fired_ = false;
  int errno_ = ENOMEM;
  std::size_t failable_ = 0;
  std::size_t per_call_[kPalCalls] = {};
  std::vector<PalEvent> log_;
};

}  // namespace wxa::test
