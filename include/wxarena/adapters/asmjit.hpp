// SPDX-License-Identifier: MIT
// asmjit on wxarena: a JitRuntime whose add() relocates code to its
// executable address in a CodeHeap, writes it through the writable view and
// seals it, and whose release() retires it.
//
// Layering: an adapter; uses only the public API (code_heap.hpp) and
// asmjit's headers (libasmjit-dev, the 2022 camelCase API). Header-only:
// link asmjit and wxarena. Inside namespace wxa, name asmjit's namespace as
// ::asmjit (wxa::asmjit is this adapter).
//
//   namespace x86 = asmjit::x86;
//   wxa::Arena arena = wxa::Arena::create().value();
//   wxa::CodeHeap heap = wxa::CodeHeap::create(arena).value();
//   wxa::asmjit::JitRuntime rt(heap);
//   asmjit::CodeHolder code;
//   code.init(rt.environment());
//   x86::Assembler a(&code);
//   a.lea(x86::eax, x86::ptr(x86::rdi, x86::rsi));
//   a.ret();
//   int (*add)(int, int) = nullptr;
//   if (rt.add(&add, &code) == asmjit::kErrorOk) add(2, 3);  // 5
//   rt.release(add);
//
// asmjit's own JitRuntime maps its blocks read-write-execute on Linux, or,
// where it finds RWX refused, keeps a writable alias of its code for good.
// This one does neither: the base class's JitAllocator is never used (it
// maps nothing until asked), each function is written while nothing on its
// page is executable, and becomes executable only once sealed, with no
// writable view left. Both backends work: asmjit resolves every
// address-dependent encoding (calls to absolute addresses, label addresses,
// the address table) for the executable address, and the bytes go through
// the writable view.
//
// All sections of a CodeHolder land in one function slot and are sealed
// executable together: a data section there is read-only constants. Code
// that needs writable data keeps it elsewhere.
#pragma once

#include <asmjit/core.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "wxarena/arena.hpp"
#include "wxarena/code_heap.hpp"
#include "wxarena/result.hpp"

namespace wxa::asmjit {

/// When add() makes the code executable.
enum class Publish : std::uint8_t {
  /// add() seals: the function is callable when add() returns, as asmjit's
  /// JitRuntime promises. Each add() is one commit (and, since a sealed
  /// page is never written again, starts a fresh page).
  on_add,
  /// add() only writes; publish() seals every function added since, packed
  /// into shared pages, in one commit. Nothing added is callable before.
  on_demand,
};

/// An asmjit JitRuntime placing code in a wxa::CodeHeap (see the top of this
/// file). Errors come back as asmjit Error codes: kErrorOutOfMemory (the
/// arena is exhausted, out of memory or at its VMA budget), kErrorTooLarge,
/// kErrorInvalidArgument (release() of a pointer add() did not return, or
/// released twice), kErrorInvalidState (the OS refused a protection change);
/// last_error() gives the wxarena Error behind the last one.
///
/// The heap must outlive the runtime, and the runtime's code every call
/// into it. The runtime leaves released and unpublished code in the heap,
/// which retires it when destroyed. Use the heap only through the runtime.
///
/// Thread safety: add(), release() and publish() may be called from any
/// thread (one mutex serialises them, as asmjit's JitRuntime does).
class JitRuntime : public ::asmjit::JitRuntime {
 public:
  explicit JitRuntime(CodeHeap& heap,
                      Publish publish = Publish::on_add) noexcept
      : heap_(heap), publish_(publish) {}

  /// Flattens `code`, takes space for it from the heap, relocates it to the
  /// executable address, copies it through the writable view, and (in
  /// Publish::on_add) seals it. `*dst` is the executable address, or null
  /// on error. A CodeHolder can be added once (asmjit's rule).
  ::asmjit::Error _add(void** dst,
                       ::asmjit::CodeHolder* code) noexcept override {
    *dst = nullptr;
    ASMJIT_PROPAGATE(code->flatten());
    ASMJIT_PROPAGATE(code->resolveUnresolvedLinks());
    // An upper bound: the address table may shrink in relocateToBase().
    const std::size_t size = code->codeSize();
    if (size == 0) return ::asmjit::kErrorNoCodeGenerated;
    // flatten() placed every section at an offset aligned for it, from a
    // base aligned for all of them; 0 asks for the heap's default.
    std::size_t alignment = 0;
    for (const ::asmjit::Section* section : code->sections())
      if (section->alignment() > 1)
        alignment = std::max<std::size_t>(alignment, section->alignment());

    std::lock_guard<std::mutex> lock(mutex_);
    Result<Function> fn = heap_.allocate(size, alignment);
    if (!fn) return fail(fn.error());
    const auto rx = reinterpret_cast<std::uintptr_t>(fn->rx);
    ::asmjit::Error err = code->relocateToBase(rx);
    if (err == ::asmjit::kErrorOk)
      err = code->copyFlattenedData(
          fn->rw.data(), fn->rw.size(),
          ::asmjit::CopySectionFlags::kPadSectionBuffer);
    if (err != ::asmjit::kErrorOk) {
      drop(fn->rx);
      return err;
    }
    if (publish_ == Publish::on_add) {
      if (Result<CommitReport> r = heap_.publish(); !r) {
        drop(fn->rx);
        return fail(r.error());
      }
    }
    *dst = const_cast<void*>(fn->rx);
    return ::asmjit::kErrorOk;
  }

  /// Releases a function add() returned. In Publish::on_add its page is
  /// retired at once if no other function lives there (a stale call
  /// faults); in Publish::on_demand, at the next publish().
  ::asmjit::Error _release(void* p) noexcept override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (Result<void> r = heap_.release(p); !r) return fail(r.error());
    if (publish_ == Publish::on_add) {
      if (Result<CommitReport> r = heap_.publish(); !r) return fail(r.error());
    }
    return ::asmjit::kErrorOk;
  }

  /// Seals everything added since the last publish (and retires emptied
  /// pages) in one commit. A no-op in effect for Publish::on_add.
  [[nodiscard]] Result<CommitReport> publish(
      CommitFlags flags = CommitFlags::none) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    Result<CommitReport> r = heap_.publish(flags);
    if (!r) last_error_ = r.error();
    return r;
  }

  /// The wxarena error behind the last failure, for diagnostics.
  [[nodiscard]] Error last_error() const noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_error_;
  }

  [[nodiscard]] CodeHeap& heap() const noexcept { return heap_; }

 private:
  /// Gives back the space of a function that failed before it was sealed.
  void drop(const void* rx) noexcept {
    (void)heap_.release(rx);
    // In on_add mode its page holds nothing else: retire it now.
    if (publish_ == Publish::on_add) (void)heap_.publish();
  }

  ::asmjit::Error fail(const Error& error) noexcept {
    last_error_ = error;
    switch (error.code()) {
      case Errc::zero_size:
        return ::asmjit::kErrorNoCodeGenerated;
      case Errc::size_too_large:
        return ::asmjit::kErrorTooLarge;
      case Errc::exhausted:
      case Errc::out_of_memory:
      case Errc::vma_budget:
        return ::asmjit::kErrorOutOfMemory;
      case Errc::null_pointer:
      case Errc::foreign_pointer:
      case Errc::interior_pointer:
      case Errc::not_allocated:
      case Errc::double_release:
      case Errc::bad_alignment:
      case Errc::invalid_argument:
        return ::asmjit::kErrorInvalidArgument;
      default:
        return ::asmjit::kErrorInvalidState;
    }
  }

  CodeHeap& heap_;
  const Publish publish_;
  mutable std::mutex mutex_;
  Error last_error_;
};

}  // namespace wxa::asmjit
