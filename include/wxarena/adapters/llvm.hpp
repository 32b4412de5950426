// SPDX-License-Identifier: MIT
// A SectionMemoryManager::MemoryMapper that places LLVM 14's JIT sections
// (ORC RTDyldObjectLinkingLayer, MCJIT) in a wxa::Arena under strict W^X.
//
// Layering: an adapter; uses only the public API (arena.hpp) and LLVM's
// headers. Header-only: link LLVM (llvm-config --libs orcjit native) and
// wxarena. Inside namespace wxa, name LLVM's namespace as ::llvm (wxa::llvm
// is this adapter).
//
// How SectionMemoryManager uses its mapper: it asks for one block per
// allocation purpose (code, read-only data, read-write data), always
// read-write, carves sections out of it, and at finalizeMemory() protects
// the used, page-unaligned sub-ranges of each block: read+execute for code,
// read-only for read-only data; read-write data is left as it is. wxarena's
// protection is per chunk, so each block is one arena chunk and a request
// on any part of a block applies to the whole chunk:
//
//   protect(block, R|X) -> Arena::seal(chunk, Seal::execute)  (code only)
//   protect(block, R)   -> Arena::seal(chunk, Seal::read_only)
//   protect(block, RW)  -> Arena::unseal(chunk) if it was sealed
//   anything W|X, X on a data block, or no access at all -> refused
//
// Only Backend::protect fits: SectionMemoryManager writes sections at the
// address they later run at, and a dual_map arena's writable view, like a
// kernel_write arena's staging memory, lies elsewhere (code relocated for
// one address would run at another). On those arenas every allocation is
// refused with not_supported; there, and where the OS refuses executable
// anonymous memory (SELinux deny_execmem), use LLVM's JITLink with
// wxa::llvm::JitLinkMemoryManager (llvm_jitlink.hpp), which links code for
// the address it runs at while writing it anywhere.
//
// Limitation: a SectionMemoryManager that is used again after
// finalizeMemory() (MCJIT with several modules) may carve new sections from
// the unused tail pages of a block that is sealed by then; those pages are
// not writable here, unlike with LLVM's default mapper. ORC's
// RTDyldObjectLinkingLayer makes one SectionMemoryManager per object, which
// finalizes once, so it never does.
#pragma once

#include <llvm/ExecutionEngine/SectionMemoryManager.h>
#include <llvm/Support/Memory.h>

#include <cerrno>
#include <cstddef>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <system_error>

#include "wxarena/arena.hpp"
#include "wxarena/result.hpp"

namespace wxa::llvm {

/// The std::error_category of wxarena's Errc, so that LLVM prints
/// wxarena's own message ("vma budget exceeded", ...) for a refusal.
/// Conditions compare equal to the nearest std::errc (out_of_memory and
/// exhausted to not_enough_memory, permission_denied to permission_denied).
class ErrcCategory final : public std::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "wxarena"; }
  [[nodiscard]] std::string message(int code) const override {
    return std::string(to_string(static_cast<Errc>(code)));
  }
  [[nodiscard]] std::error_condition default_error_condition(
      int code) const noexcept override {
    switch (static_cast<Errc>(code)) {
      case Errc::ok:
        return {};
      case Errc::out_of_memory:
      case Errc::exhausted:
      case Errc::vma_budget:
        return std::errc::not_enough_memory;
      case Errc::permission_denied:
        return std::errc::permission_denied;
      case Errc::not_supported:
        return std::errc::operation_not_supported;
      case Errc::illegal_transition:
      case Errc::double_release:
        return std::errc::operation_not_permitted;
      default:
        return std::errc::invalid_argument;
    }
  }
};

/// The one ErrcCategory object.
[[nodiscard]] inline const std::error_category& errc_category() noexcept {
  static const ErrcCategory category;
  return category;
}

/// An Errc as a std::error_code in errc_category().
[[nodiscard]] inline std::error_code make_error_code(Errc code) noexcept {
  return {static_cast<int>(code), errc_category()};
}

/// Gives LLVM's SectionMemoryManager its memory from an Arena:
///
///   wxa::llvm::MemoryMapper mapper(arena);  // Backend::protect
///   auto jit = llvm::orc::LLJITBuilder()
///     .setObjectLinkingLayerCreator([&](llvm::orc::ExecutionSession& es,
///                                       const llvm::Triple&) {
///       return std::make_unique<llvm::orc::RTDyldObjectLinkingLayer>(
///           es, [&] {
///             return std::make_unique<llvm::SectionMemoryManager>(&mapper);
///           });
///     })
///     .create();
///
/// Code blocks end executable and never writable at the same time,
/// read-only data ends Seal::read_only, read-write data stays writable and
/// can never become executable. Refusals are returned as std::error_codes in
/// errc_category() (SectionMemoryManager passes them on as its own errors;
/// LLVM's allocateSection turns a failed allocation into a null section).
///
/// The arena must outlive the mapper, and the mapper every
/// SectionMemoryManager using it (in ORC: the LLJIT). Blocks are
/// released to the arena by releaseMappedMemory() and, for those LLVM never
/// released, by the mapper's destructor. The reservation should stay below
/// 2 GiB (the default 1 GiB does) so that RuntimeDyld's 32-bit PC-relative
/// relocations between sections always reach.
///
/// Thread safety: every member may be called from any thread at any time
/// (one mutex guards the block table; the arena has its own).
class MemoryMapper final : public ::llvm::SectionMemoryManager::MemoryMapper {
 public:
  using Purpose = ::llvm::SectionMemoryManager::AllocationPurpose;

  explicit MemoryMapper(Arena& arena) noexcept : arena_(arena) {}
  MemoryMapper(const MemoryMapper&) = delete;
  MemoryMapper& operator=(const MemoryMapper&) = delete;

  /// Whether `arena` can hold what RuntimeDyld links: only on
  /// Backend::protect (not_supported otherwise). Call it before building a
  /// JIT on an arena made with wxa::Options{}, whose automatic backend is
  /// kernel_write wherever memfds may be mapped executable: RuntimeDyld
  /// ends the process (LLVM ERROR: Unable to allocate section memory!)
  /// when its memory manager refuses a section; it has no way to return
  /// the error. Use JitLinkMemoryManager (llvm_jitlink.hpp) on any backend.
  [[nodiscard]] static Result<void> check(const Arena& arena) noexcept {
    if (arena.backend() != Backend::protect) return Errc::not_supported;
    return {};
  }

  /// Releases every block LLVM has not released.
  ~MemoryMapper() override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [rx, purpose] : blocks_) (void)arena_.release(rx);
  }

  /// A writable, page-aligned block of at least `bytes` bytes (a whole
  /// number of pages, which SectionMemoryManager relies on), for `purpose`.
  /// `near` is ignored: every chunk lies in the arena's one reservation.
  /// Errors: not_supported (arena not Backend::protect), permission_denied
  /// (flags ask for write and execute, or execute for data), zero_size, and
  /// the arena's allocation errors.
  ::llvm::sys::MemoryBlock allocateMappedMemory(
      Purpose purpose, std::size_t bytes,
      const ::llvm::sys::MemoryBlock* const /*near*/, unsigned flags,
      std::error_code& ec) noexcept override {
    ec = {};
    if (Result<void> usable = check(arena_); !usable)
      return fail(ec, usable.error());
    if (const Errc refused = check_access(purpose, flags); refused != Errc::ok)
      return fail(ec, Error(refused));
    Result<Chunk> chunk = arena_.allocate(bytes);
    if (!chunk) return fail(ec, chunk.error());
    try {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks_.emplace(chunk->rx(), purpose);
    } catch (const std::bad_alloc&) {
      (void)arena_.release(*chunk);
      return fail(ec, Error(Errc::out_of_memory, ENOMEM));
    }
    ::llvm::sys::MemoryBlock block(chunk->rw().data(), chunk->size());
    // A block asked for with an access other than read-write gets it now
    // (SectionMemoryManager itself only ever asks for read-write).
    if ((flags & kRwe) != (kRead | kWrite) && (flags & kRwe) != kWrite) {
      ec = protectMappedMemory(block, flags);
      if (ec) {
        releaseMappedMemory(block);
        return {};
      }
    }
    return block;
  }

  /// Gives the block holding [base, base + size) the access `flags` asks
  /// for, by sealing or unsealing its whole chunk. A zero-sized range is a
  /// no-op. Errors: permission_denied (write and execute, or execute on a
  /// data block), not_supported (no access at all: use release),
  /// invalid_argument (not a block of this mapper, or crossing its end), and
  /// the arena's seal / unseal errors.
  std::error_code protectMappedMemory(const ::llvm::sys::MemoryBlock& range,
                                      unsigned flags) noexcept override {
    if (range.allocatedSize() == 0) return {};
    Result<ChunkInfo> info = arena_.find(range.base());
    if (!info) return record(Error(Errc::invalid_argument));
    const Chunk& chunk = info->chunk;
    const std::optional<Purpose> purpose = purpose_of(chunk.rx());
    if (!purpose) return record(Error(Errc::invalid_argument));
    if (range.allocatedSize() > chunk.size() - info->offset)
      return record(Error(Errc::invalid_argument, 0, chunk.rx()));
    if (const Errc refused = check_access(*purpose, flags); refused != Errc::ok)
      return record(Error(refused, 0, chunk.rx()));

    const unsigned rwe = flags & kRwe;
    const State want = (rwe & kExec)    ? State::executable
                       : (rwe & kWrite) ? State::writable
                       : (rwe & kRead)  ? State::read_only
                                        : State::free;
    if (want == State::free)
      return record(Error(Errc::not_supported, 0, chunk.rx()));
    if (info->state == want) return {};
    // From one sealed state to the other: through writable.
    if (info->state != State::writable) {
      if (Result<Chunk> r = arena_.unseal(chunk.rx()); !r)
        return record(r.error());
      if (want == State::writable) return {};
    }
    const Seal to = want == State::executable ? Seal::execute : Seal::read_only;
    if (Result<void> r = arena_.seal(chunk.rx(), to); !r)
      return record(r.error());
    return {};
  }

  /// Retires the block's chunk. Errors: invalid_argument (not the start of
  /// a block of this mapper) and the arena's release errors.
  std::error_code releaseMappedMemory(
      ::llvm::sys::MemoryBlock& block) noexcept override {
    const void* rx = block.base();
    if (!purpose_of(rx)) return record(Error(Errc::invalid_argument));
    if (Result<void> r = arena_.release(rx); !r) return record(r.error());
    forget(rx);
    block = ::llvm::sys::MemoryBlock();
    return {};
  }

  /// The wxarena error behind the last refusal (its chunk, its errno), for
  /// diagnostics; LLVM sees only the std::error_code.
  [[nodiscard]] Error last_error() const noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_error_;
  }

  /// Blocks currently held (allocated and not yet released).
  [[nodiscard]] std::size_t blocks() const noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    return blocks_.size();
  }

  [[nodiscard]] Arena& arena() const noexcept { return arena_; }

 private:
  static constexpr unsigned kRead = ::llvm::sys::Memory::MF_READ;
  static constexpr unsigned kWrite = ::llvm::sys::Memory::MF_WRITE;
  static constexpr unsigned kExec = ::llvm::sys::Memory::MF_EXEC;
  static constexpr unsigned kRwe = ::llvm::sys::Memory::MF_RWE_MASK;

  /// Why `flags` may not be given to a block for `purpose` (Errc::ok if
  /// they may): never write and execute; execute only for code.
  static Errc check_access(Purpose purpose, unsigned flags) noexcept {
    if ((flags & kWrite) && (flags & kExec)) return Errc::permission_denied;
    if ((flags & kExec) && purpose != Purpose::Code)
      return Errc::permission_denied;
    return Errc::ok;
  }

  /// The purpose `rx` was allocated for, if it is a block of this mapper.
  std::optional<Purpose> purpose_of(const void* rx) const noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = blocks_.find(rx);
    if (it == blocks_.end()) return std::nullopt;
    return it->second;
  }

  void forget(const void* rx) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    blocks_.erase(rx);
  }

  // Takes the mutex: never call with it held.
  std::error_code record(const Error& error) const noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    last_error_ = error;
    return make_error_code(error.code());
  }

  ::llvm::sys::MemoryBlock fail(std::error_code& ec,
                                const Error& error) const noexcept {
    ec = record(error);
    return {};
  }

  Arena& arena_;
  mutable std::mutex mutex_;
  std::map<const void*, Purpose> blocks_;  // chunk rx -> purpose
  mutable Error last_error_;
};

}  // namespace wxa::llvm
