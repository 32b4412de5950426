// SPDX-License-Identifier: MIT
// A JITLinkMemoryManager that places what LLVM 14's JITLink links (ORC
// ObjectLinkingLayer) in a wxa::Arena under strict W^X, on every backend.
//
// Layering: an adapter; uses only the public API (arena.hpp), llvm.hpp's
// error category and LLVM's headers. Header-only: link LLVM (llvm-config
// --libs orcjit native) and wxarena. Inside namespace wxa, name LLVM's
// namespace as ::llvm (wxa::llvm is this adapter).
//
// How JITLink uses its memory manager: allocate() gets the link graph, lays
// its sections out in segments, one per allocation group (protection and
// deallocation policy), and gives each segment working memory (where
// JITLink copies the section contents and applies its fixups) and a target
// address (what the fixups compute with, where the code runs).
// InFlightAlloc::finalize() then makes the target memory live, and the
// FinalizedAlloc it returns is given back to deallocate() when ORC removes
// the code. Unlike RuntimeDyld (llvm.hpp), JITLink never assumes the two
// addresses are the same, so this manager works on every backend:
//
//   segment      chunk per allocation   working memory   target address
//   R-X          sealed Seal::execute   rw()             rx()
//   R--          sealed Seal::read_only rw()             rx()
//   RW-          left writable          rw()             rw()
//   RWX          refused: permission_denied
//
// LLVM 14's ELF reader asks R-- only for the GOT JITLink builds: string
// literals, constants, jump tables, .data.rel.ro and unwind tables come as
// RW- unless ReadOnlySectionsPlugin (at the end of this file) marks them
// R-- before the layout.
//
// Read-write data runs at its writable view: on dual_map and kernel_write a
// writable chunk's rx() is not writable (on protect rw() == rx()). Segments
// of one class and deallocation policy share one chunk, each aligned as it
// asks (at most a page), so an allocation is at most six chunks and its
// finalize() one Batch commit. Zero-fill is zeroed at allocation.
// finalize() seals, then runs the graph's finalize actions, keeps their
// dealloc actions, and retires the segments JITLink marked
// MemDeallocPolicy::Finalize; deallocate() runs the dealloc actions and
// retires the rest in one commit. abandon() retires everything.
//
// Reach: x86-64 code addresses its data with 32-bit PC-relative fixups
// (the small code model LLJIT uses), so every segment of one allocation
// must lie within 2 GiB of the others; AArch64's ADRP reaches +-4 GiB (its
// branches +-128 MiB, within the one code chunk). Code and read-only data
// are chunks of the reservation on every backend; read-write data runs at
// its writable view: on protect the same reservation, on dual_map the
// writable-view range, placed right beside the executable one, on
// kernel_write the staging pool, placed right above the code (an eighth of
// the reservation, all of it up to 64 MiB). An
// allocation's chunks are taken one after another, so they lie about one
// reservation apart at most: the default 1 GiB keeps them in reach. Where
// they are not (a reservation near or above 2 GiB, a full or fragmented
// arena), allocate() refuses the allocation with Errc::unreachable_anchor
// and a message naming the reach and the fix, before JITLink would fail a
// fixup.
//
// Working memory of sealed segments is gone once finalize() returns (on
// dual_map its view is unmapped, on kernel_write it is staging memory that
// is recycled): plugins must not read block contents after finalization,
// which ORC's own (EH frame registration, debug support) do not.
#pragma once

#include <llvm/ExecutionEngine/JITLink/JITLink.h>
#include <llvm/ExecutionEngine/JITLink/JITLinkMemoryManager.h>
#include <llvm/ExecutionEngine/Orc/ObjectLinkingLayer.h>
#include <llvm/ExecutionEngine/Orc/Shared/AllocationActions.h>
#include <llvm/Support/Error.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "wxarena/adapters/llvm.hpp"
#include "wxarena/arena.hpp"
#include "wxarena/result.hpp"

namespace wxa::llvm {

/// A wxarena Error as an llvm::Error: wxarena's text ("vma budget exceeded
/// (chunk 0x..., errno 12: ...)"), with the code in errc_category().
[[nodiscard]] inline ::llvm::Error to_llvm_error(const Error& error) {
  return ::llvm::make_error<::llvm::StringError>(
      "wxarena: " + error.to_string(), make_error_code(error.code()));
}

/// Gives JITLink its memory from an Arena, on any backend:
///
///   wxa::llvm::JitLinkMemoryManager memory(arena);
///   auto jit = llvm::orc::LLJITBuilder()
///     .setObjectLinkingLayerCreator([&](llvm::orc::ExecutionSession& es,
///                                       const llvm::Triple&) {
///       return std::make_unique<llvm::orc::ObjectLinkingLayer>(es, memory);
///     })
///     .create();
///
/// Code ends executable and never writable, read-only data sealed
/// read-only, read-write data writable and never executable (see the top of
/// this file). Refusals come back as llvm::Errors carrying wxarena's text
/// (to_llvm_error()); a failed allocation or finalization leaves nothing
/// allocated.
///
/// The arena must outlive the manager, and the manager everything linked
/// through it (in ORC: the LLJIT, whose destruction deallocates all).
/// Finalized allocations that were never deallocated are retired by the
/// manager's destructor, without running their dealloc actions.
///
/// Thread safety: every member may be called from any thread at any time
/// (one mutex guards the list of finalized allocations; the arena has its
/// own). Callbacks run on the calling thread before the call returns.
class JitLinkMemoryManager final
    : public ::llvm::jitlink::JITLinkMemoryManager {
 public:
  using Base = ::llvm::jitlink::JITLinkMemoryManager;
  using Base::allocate;
  using Base::deallocate;

  explicit JitLinkMemoryManager(Arena& arena) noexcept : arena_(arena) {}
  JitLinkMemoryManager(const JitLinkMemoryManager&) = delete;
  JitLinkMemoryManager& operator=(const JitLinkMemoryManager&) = delete;

  /// Retires the chunks of every allocation not deallocated, in one
  /// commit.
  ~JitLinkMemoryManager() override {
    std::lock_guard<std::mutex> lock(mutex_);
    Batch batch(arena_);
    for (const Record* r = live_.next; r; r = r->next)
      for (std::size_t i = 0; i < r->count; ++i) batch.release(r->chunks[i]);
    if (!batch.empty()) (void)batch.commit();  // nobody to tell
    while (Record* r = live_.next) {
      unlink(r);
      delete r;
    }
  }

  /// Lays `graph`'s segments out in chunks of the arena and calls
  /// `on_allocated` with an InFlightAlloc, or with an error: RWX segments
  /// (permission_denied), alignment above a page (bad_alignment), the
  /// arena's allocation errors. `dylib` is not used.
  void allocate(const ::llvm::jitlink::JITLinkDylib* /*dylib*/,
                ::llvm::jitlink::LinkGraph& graph,
                OnAllocatedFunction on_allocated) override {
    ::llvm::jitlink::BasicLayout layout(graph);
    Chunks chunks;
    if (Result<void> r = lay_out(layout, chunks); !r)
      return on_allocated(to_llvm_error(r.error()));
    if (::llvm::Error e = check_reach(graph, layout)) {
      (void)release(arena_, chunks.rx, kGroups);
      return on_allocated(std::move(e));
    }
    if (::llvm::Error e = layout.apply()) {
      (void)release(arena_, chunks.rx, kGroups);
      return on_allocated(std::move(e));
    }
    on_allocated(std::make_unique<InFlight>(*this, graph, chunks));
  }

  /// Runs each allocation's dealloc actions (last allocation first) and
  /// retires all their chunks in one commit. Errors: an allocation this
  /// manager does not hold (invalid_argument), the actions' errors, the
  /// arena's release errors (the chunks then stay held, and are retired by
  /// the destructor).
  void deallocate(std::vector<FinalizedAlloc> allocs,
                  OnDeallocatedFunction on_deallocated) override {
    ::llvm::Error errors = ::llvm::Error::success();
    Batch batch(arena_);
    std::vector<Record*> records;
    records.reserve(allocs.size());
    for (auto it = allocs.rbegin(); it != allocs.rend(); ++it) {
      if (!*it) continue;
      auto* r = it->release().toPtr<Record*>();
      if (!holds(r)) {
        errors = ::llvm::joinErrors(
            std::move(errors), to_llvm_error(Error(Errc::invalid_argument)));
        continue;
      }
      errors = ::llvm::joinErrors(
          std::move(errors),
          ::llvm::orc::shared::runDeallocActions(r->dealloc));
      for (std::size_t i = 0; i < r->count; ++i) batch.release(r->chunks[i]);
      records.push_back(r);
    }
    if (!batch.empty()) {
      if (Result<CommitReport> c = batch.commit(); !c) {
        // Nothing was retired: the records stay for the destructor.
        on_deallocated(
            ::llvm::joinErrors(std::move(errors), to_llvm_error(c.error())));
        return;
      }
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (Record* r : records) {
        unlink(r);
        delete r;
      }
    }
    on_deallocated(std::move(errors));
  }

  /// Finalized allocations not yet deallocated.
  [[nodiscard]] std::size_t live_allocations() const noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    return live_count_;
  }

  [[nodiscard]] Arena& arena() const noexcept { return arena_; }

 private:
  // Chunk groups: {code, read-only, read-write} x {standard, finalize}.
  static constexpr std::size_t kGroups = 6;
  enum Class : std::size_t { kCode = 0, kReadOnly = 1, kData = 2 };

  struct Chunks {
    const void* rx[kGroups] = {};  // null: no such chunk
    std::byte* rw[kGroups] = {};
  };

  // A finalized allocation: what deallocate() gives back. Records form a
  // doubly linked list (no allocation besides the record itself).
  struct Record {
    Record* prev = nullptr;
    Record* next = nullptr;
    const void* chunks[kGroups] = {};
    std::size_t count = 0;
    std::vector<::llvm::orc::shared::WrapperFunctionCall> dealloc;
  };

  static bool has(::llvm::jitlink::MemProt prot,
                  ::llvm::jitlink::MemProt flag) noexcept {
    return (static_cast<unsigned>(prot) & static_cast<unsigned>(flag)) != 0;
  }

  static std::size_t group_of(::llvm::jitlink::AllocGroup group) noexcept {
    using ::llvm::jitlink::MemProt;
    const MemProt prot = group.getMemProt();
    const std::size_t cls = has(prot, MemProt::Exec)    ? kCode
                            : has(prot, MemProt::Write) ? kData
                                                        : kReadOnly;
    const bool finalize = group.getMemDeallocPolicy() ==
                          ::llvm::jitlink::MemDeallocPolicy::Finalize;
    return cls * 2 + (finalize ? 1 : 0);
  }

  /// Retires `count` chunks (null entries skipped) in one commit.
  static Result<void> release(Arena& arena, const void* const* rx,
                              std::size_t count) noexcept {
    Batch batch(arena);
    for (std::size_t i = 0; i < count; ++i)
      if (rx[i]) batch.release(rx[i]);
    if (batch.empty()) return {};
    Result<CommitReport> r = batch.commit();
    if (!r) return r.error();
    return {};
  }

  /// How far apart the segments of one allocation may lie for `triple`'s
  /// PC-relative fixups, or 0 where this manager does not check.
  static std::uint64_t reach_of(const ::llvm::Triple& triple) noexcept {
    switch (triple.getArch()) {
      case ::llvm::Triple::x86_64:
        return std::uint64_t{1} << 31;  // rel32: +-2 GiB
      case ::llvm::Triple::aarch64:
        return std::uint64_t{1} << 32;  // ADRP: +-4 GiB
      default:
        return 0;
    }
  }

  /// An error naming the reach and the fix if the laid-out segments span
  /// more than the target's PC-relative fixups reach.
  ::llvm::Error check_reach(const ::llvm::jitlink::LinkGraph& graph,
                            ::llvm::jitlink::BasicLayout& layout) const {
    const std::uint64_t reach = reach_of(graph.getTargetTriple());
    if (reach == 0) return ::llvm::Error::success();
    std::uint64_t lo = ~std::uint64_t{0}, hi = 0;
    for (auto& [group, segment] : layout.segments()) {
      const std::uint64_t at = segment.Addr.getValue();
      lo = std::min(lo, at);
      hi = std::max(hi, at + segment.ContentSize + segment.ZeroFillSize);
    }
    if (hi <= lo || hi - lo <= reach) return ::llvm::Error::success();
    return ::llvm::make_error<::llvm::StringError>(
        "wxarena: the segments of " + graph.getName() + " span " +
            std::to_string((hi - lo + (1 << 20) - 1) >> 20) +
            " MiB, beyond the +-" + std::to_string(reach >> 30) +
            " GiB its PC-relative fixups reach (" +
            graph.getTargetTriple().getArchName().str() +
            ", small code model): code and read-only data lie in the arena's "
            "reservation, read-write data in its writable view (" +
            std::string(to_string(arena_.backend())) +
            "), about one reservation apart. Fix: a smaller "
            "wxa::Options::reserve_bytes (the default 1 GiB keeps them in "
            "reach) or an arena with free room",
        make_error_code(Errc::unreachable_anchor));
  }

  /// Sizes a chunk per group, allocates them and gives every segment its
  /// working memory and target address.
  Result<void> lay_out(::llvm::jitlink::BasicLayout& layout,
                       Chunks& chunks) noexcept {
    using ::llvm::jitlink::MemProt;
    const std::size_t page = arena_.page_size();
    std::size_t size[kGroups] = {};
    for (auto& [group, segment] : layout.segments()) {
      const MemProt prot = group.getMemProt();
      if (has(prot, MemProt::Exec) && has(prot, MemProt::Write))
        return Errc::permission_denied;
      const std::uint64_t align = segment.Alignment.value();
      if (align > page) return Errc::bad_alignment;
      const std::uint64_t bytes = segment.ContentSize + segment.ZeroFillSize;
      std::size_t& end = size[group_of(group)];
      const std::uint64_t at = (end + align - 1) & ~(align - 1);
      if (bytes > arena_.range().size() || at + bytes > arena_.range().size())
        return Errc::size_too_large;
      end = static_cast<std::size_t>(at + bytes);
    }
    for (auto& [group, segment] : layout.segments()) {
      const std::size_t g = group_of(group);
      if (chunks.rx[g]) continue;
      // An empty segment still gets an address: a page of its own.
      Result<Chunk> c = arena_.allocate(size[g] ? size[g] : 1);
      if (!c) {
        const Error e = c.error();
        (void)release(arena_, chunks.rx, kGroups);
        chunks = {};
        return e;
      }
      chunks.rx[g] = c->rx();
      chunks.rw[g] = c->rw().data();
      size[g] = 0;  // from here: the next segment's offset
    }
    for (auto& [group, segment] : layout.segments()) {
      const std::size_t g = group_of(group);
      const std::size_t align = segment.Alignment.value();
      const std::size_t at = (size[g] + align - 1) & ~(align - 1);
      const std::size_t bytes =
          segment.ContentSize + static_cast<std::size_t>(segment.ZeroFillSize);
      std::byte* working = chunks.rw[g] + at;
      std::memset(working + segment.ContentSize, 0,
                  static_cast<std::size_t>(segment.ZeroFillSize));
      segment.WorkingMem = reinterpret_cast<char*>(working);
      const void* target =
          g / 2 == kData ? static_cast<const void*>(working)
                         : static_cast<const std::byte*>(chunks.rx[g]) + at;
      segment.Addr = ::llvm::orc::ExecutorAddr::fromPtr(target);
      size[g] = at + bytes;
    }
    return {};
  }

  class InFlight final : public InFlightAlloc {
   public:
    InFlight(JitLinkMemoryManager& owner, ::llvm::jitlink::LinkGraph& graph,
             const Chunks& chunks) noexcept
        : owner_(owner), graph_(graph), chunks_(chunks) {}

    /// Whatever was neither finalized nor abandoned (JITLink drops an
    /// allocation whose finalization failed) is retired here.
    ~InFlight() override { (void)release(owner_.arena_, chunks_.rx, kGroups); }

    void abandon(OnAbandonedFunction on_abandoned) override {
      Result<void> r = release(owner_.arena_, chunks_.rx, kGroups);
      chunks_ = {};
      on_abandoned(r ? ::llvm::Error::success() : to_llvm_error(r.error()));
    }

    /// Seals code and read-only data in one commit, runs the graph's
    /// finalize actions, retires the finalize-policy segments. On any
    /// error every chunk is retired.
    void finalize(OnFinalizedFunction on_finalized) override {
      Arena& arena = owner_.arena_;
      Batch batch(arena);
      for (std::size_t g = 0; g < kGroups; ++g) {
        if (!chunks_.rx[g] || g / 2 == kData) continue;
        batch.seal(chunks_.rx[g],
                   g / 2 == kCode ? Seal::execute : Seal::read_only);
      }
      if (!batch.empty()) {
        if (Result<CommitReport> r = batch.commit(); !r)
          return fail(std::move(on_finalized), to_llvm_error(r.error()));
      }
      auto dealloc =
          ::llvm::orc::shared::runFinalizeActions(graph_.allocActions());
      if (!dealloc) return fail(std::move(on_finalized), dealloc.takeError());

      std::unique_ptr<Record> record(new (std::nothrow) Record);
      if (!record)
        return fail(std::move(on_finalized),
                    to_llvm_error(Error(Errc::out_of_memory)));
      record->dealloc = std::move(*dealloc);
      const void* finalize_only[kGroups] = {};
      for (std::size_t g = 0; g < kGroups; ++g) {
        if (!chunks_.rx[g]) continue;
        if (g % 2)
          finalize_only[g] = chunks_.rx[g];
        else
          record->chunks[record->count++] = chunks_.rx[g];
      }
      if (Result<void> r = release(arena, finalize_only, kGroups); !r) {
        (void)::llvm::orc::shared::runDeallocActions(record->dealloc);
        return fail(std::move(on_finalized), to_llvm_error(r.error()));
      }
      chunks_ = {};
      Record* r = record.release();
      owner_.link(r);
      on_finalized(FinalizedAlloc(::llvm::orc::ExecutorAddr::fromPtr(r)));
    }

   private:
    void fail(OnFinalizedFunction on_finalized, ::llvm::Error error) {
      Result<void> r = release(owner_.arena_, chunks_.rx, kGroups);
      chunks_ = {};
      if (!r)
        error = ::llvm::joinErrors(std::move(error), to_llvm_error(r.error()));
      on_finalized(std::move(error));
    }

    JitLinkMemoryManager& owner_;
    ::llvm::jitlink::LinkGraph& graph_;
    Chunks chunks_;
  };

  void link(Record* r) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    r->prev = &live_;
    r->next = live_.next;
    if (live_.next) live_.next->prev = r;
    live_.next = r;
    ++live_count_;
  }

  // With the mutex held.
  void unlink(Record* r) noexcept {
    r->prev->next = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = nullptr;
    --live_count_;
  }

  bool holds(const Record* r) const noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const Record* p = live_.next; p; p = p->next)
      if (p == r) return true;
    return false;
  }

  Arena& arena_;
  mutable std::mutex mutex_;
  Record live_;  // list head: live_.next is the newest
  std::size_t live_count_ = 0;
};

/// An ObjectLinkingLayer plugin that gives read-only data the protection
/// its ELF section has. LLVM 14's ELF JITLink makes every section that is
/// not executable Read|Write, whatever its flags: string literals and
/// constants (.rodata*), relocated constant tables (.data.rel.ro*), unwind
/// tables (.eh_frame) and exception tables (.gcc_except_table*) would stay
/// writable for the life of the code (only the GOT JITLink builds is read-
/// only). Before the layout, this marks those sections Read: JITLink still
/// writes and fixes them up in working memory, and the memory manager seals
/// them read-only with the code (JitLinkMemoryManager: Seal::read_only, in
/// the arena's reservation beside the code; LLVM's InProcessMemoryManager:
/// mprotect). Sections are matched by name, as the linker's default
/// script does; a name a compiler uses for writable data never matches.
///
///   layer->addPlugin(std::make_unique<wxa::llvm::ReadOnlySectionsPlugin>());
class ReadOnlySectionsPlugin final
    : public ::llvm::orc::ObjectLinkingLayer::Plugin {
 public:
  /// Whether an ELF section of this name holds data that is only read once
  /// linked.
  [[nodiscard]] static bool read_only(::llvm::StringRef name) noexcept {
    auto is = [&name](::llvm::StringRef prefix) {
      return name == prefix ||
             (name.startswith(prefix) && name[prefix.size()] == '.');
    };
    return is(".rodata") || is(".data.rel.ro") || is(".eh_frame") ||
           is(".gcc_except_table");
  }

  void modifyPassConfig(::llvm::orc::MaterializationResponsibility&,
                        ::llvm::jitlink::LinkGraph& graph,
                        ::llvm::jitlink::PassConfiguration& config) override {
    if (!graph.getTargetTriple().isOSBinFormatELF()) return;
    config.PrePrunePasses.push_back([](::llvm::jitlink::LinkGraph& g) {
      using ::llvm::operator|;  // MemProt's (LLVM_MARK_AS_BITMASK_ENUM)
      using ::llvm::jitlink::MemProt;
      for (::llvm::jitlink::Section& section : g.sections())
        if (section.getMemProt() == (MemProt::Read | MemProt::Write) &&
            read_only(section.getName()))
          section.setMemProt(MemProt::Read);
      return ::llvm::Error::success();
    });
  }
  ::llvm::Error notifyFailed(
      ::llvm::orc::MaterializationResponsibility&) override {
    return ::llvm::Error::success();
  }
  ::llvm::Error notifyRemovingResources(::llvm::orc::ResourceKey) override {
    return ::llvm::Error::success();
  }
  void notifyTransferringResources(::llvm::orc::ResourceKey,
                                   ::llvm::orc::ResourceKey) override {}
};

}  // namespace wxa::llvm
