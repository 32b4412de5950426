// SPDX-License-Identifier: MIT
// The interface every benchmarked way of getting executable memory implements,
// so that each workload runs the same code against every strategy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wxb {

/// System calls that create, change or drop mappings, by kind.
struct SyscallCounts {
  std::uint64_t mmap = 0, munmap = 0, mprotect = 0, madvise = 0, memfd = 0,
                membarrier = 0, other = 0;  // other: mremap, pkey_mprotect,
                                            // ftruncate, fallocate
  std::uint64_t write = 0;  // pwrite64 / pwritev / pwritev2 (kernel_write)
  [[nodiscard]] std::uint64_t total() const noexcept {
    return mmap + munmap + mprotect + madvise + memfd + membarrier + other +
           write;
  }
  SyscallCounts& operator-=(const SyscallCounts& o) noexcept {
    mmap -= o.mmap, munmap -= o.munmap, mprotect -= o.mprotect;
    madvise -= o.madvise, memfd -= o.memfd, membarrier -= o.membarrier;
    other -= o.other, write -= o.write;
    return *this;
  }
};

/// Space for one function: written through rw, called at rx.
struct Slot {
  std::byte* rw = nullptr;
  const void* rx = nullptr;
  std::size_t size = 0;
  std::uintptr_t tag = 0;  // the strategy's own bookkeeping
};

/// What a strategy occupies right now; negative means "not known".
struct Footprint {
  long vmas = -1;                 // lines of /proc/self/maps it accounts for
  long tracked_vmas = -1;         // its own count, where it keeps one
  double committed_bytes = -1.0;  // memory it holds for code
  double reserved_bytes = -1.0;   // address space it reserved up front
};

/// One thread's handle on a strategy. Every call returns false on failure
/// and leaves a message in error(). Used by one thread at a time.
class Strategy {
 public:
  virtual ~Strategy() = default;

  /// Writable space for a function of `size` bytes.
  [[nodiscard]] virtual bool allocate(std::size_t size, Slot& slot) = 0;
  /// Makes `slots` (every slot allocated since the last publish) callable.
  [[nodiscard]] virtual bool publish(std::span<Slot> slots) = 0;
  /// Frees `slots`; strategies may defer the work to settle() or the next
  /// publish().
  [[nodiscard]] virtual bool release(std::span<const Slot> slots) = 0;
  /// Completes deferred releases (e.g. a CodeHeap commits them at publish).
  [[nodiscard]] virtual bool settle() { return true; }
  /// After settle(): gives memory it no longer needs back to the OS, where
  /// the strategy has a call for that (wxarena's Arena::trim()).
  [[nodiscard]] virtual bool trim() { return true; }
  [[nodiscard]] virtual Footprint footprint() = 0;
  /// The strategy's own count of system calls, if it keeps one (wxarena's
  /// stats, the hand-written baselines); false if it cannot see them.
  [[nodiscard]] virtual bool own_syscalls(SyscallCounts& out) {
    (void)out;
    return false;
  }

  [[nodiscard]] const std::string& error() const noexcept { return error_; }

 protected:
  bool fail(std::string message) {
    error_ = std::move(message);
    return false;
  }

 private:
  std::string error_;
};

/// State shared by the threads of one run (an arena, an allocator), if any.
class Shared {
 public:
  virtual ~Shared() = default;
};

/// How a workload asks for a strategy.
struct Request {
  /// Most bytes of code live at once in one thread (a buffer size hint).
  std::size_t capacity = 0;
};

/// Starts an error message (from make_shared(), make() or error()) when the
/// OS refused by policy or hit a kernel limit (no RWX allowed, no more VMAs),
/// or the library refused to exceed its own VMA budget: a result to report,
/// not a bug, so the benchmark is not counted as failed.
inline constexpr std::string_view kRefusedPrefix = "refused: ";

/// True if the OS lets this process map memory writable and executable at
/// once; else false with the reason. Lives in rwx_floor.cpp, the one file
/// allowed to ask for such a mapping (it is unmapped at once).
bool rwx_mapping_allowed(std::string& why);

/// `bytes` (a multiple of the page size) mapped readable, writable and
/// executable at once, for the benchmarks that measure what no protection
/// costs: populated up front if `populate`, else touched on first write like
/// any fresh memory. Null with a kRefusedPrefix message in `error` if the
/// OS refuses. The caller munmaps it. Lives in rwx_floor.cpp, like the above.
std::byte* map_rwx(std::size_t bytes, bool populate, std::string& error);

/// How far a strategy keeps write XOR execute.
enum class Wx {
  strict,  ///< executable code has no writable view anywhere in the process
  alias,   ///< each mapping is W^X, but a permanent writable alias of the
           ///< code exists (an arbitrary write changes code at any time)
  none,    ///< code is writable and executable at once (RWX)
};

/// "strict", "alias", "none": the summary's W^X column.
[[nodiscard]] const char* to_string(Wx wx) noexcept;

/// A named strategy: make_shared() once per run, then make() per thread.
/// Both return null and fill `error` when the strategy cannot run here.
struct Factory {
  std::string name;
  std::unique_ptr<Shared> (*make_shared)(const Request&, std::string& error);
  std::unique_ptr<Strategy> (*make)(Shared* shared, const Request&,
                                    std::string& error);
  /// False if it cannot free functions one by one (the RWX floor has no
  /// allocator), which rules out the churn workload.
  bool frees_single = true;
  /// How far it keeps W^X: shown in the summary next to its speed.
  Wx wx = Wx::strict;
  /// True if it only makes sense with several threads (it differs from
  /// another strategy only in what the threads share): `threads` only.
  bool threads_only = false;
};

/// Registration hooks, one per source file; each appends what it provides.
void add_baseline_strategies(std::vector<Factory>& out);
void add_rwx_floor_strategy(std::vector<Factory>& out);
void add_llvm_strategies(std::vector<Factory>& out);
void add_asmjit_strategies(std::vector<Factory>& out);
void add_wxarena_strategies(std::vector<Factory>& out);

/// A Shared for strategies that have nothing to share.
std::unique_ptr<Shared> no_shared(const Request&, std::string& error);

/// "mmap: Cannot allocate memory (errno 12)".
std::string errno_message(const char* what, int err);

}  // namespace wxb
