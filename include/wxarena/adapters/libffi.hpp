// SPDX-License-Identifier: MIT
// libffi closures whose trampolines live in wxarena memory: each closure is
// written through the writable view, runs at the executable address, and is
// published with the rest of a CodeHeap in one batch commit.
//
// Header-only; needs libffi (libffi-dev, 3.x) and links against wxarena.
//
//   wxa::CodeHeap heap = wxa::CodeHeap::create(arena).value();
//   auto add = wxa::ffi::Callback<int(int, int)>::create(
//       heap, [k](int a, int b) { return k * (a + b); }).value();
//   if (!heap.publish()) ...       // writable -> executable, all at once
//   int (*fn)(int, int) = add.entry();
//   fn(2, 3);                      // 5 * k, through the trampoline
//
// How: ffi_prep_closure_loc(closure, cif, fun, user_data, codeloc) writes
// the trampoline into the closure struct and takes the address it will run
// at separately, so the struct is prepared at the writable view and codeloc
// is the executable address. On x86-64 the trampoline finds its closure
// RIP-relatively, so this holds in both backends (dual_map included). Such
// closures must never be given to ffi_closure_free(): the arena owns them.
//
// libffi 3.4 built with static trampolines decides whether a closure uses
// one by asking if the closure lies in its own allocator's segments; arena
// memory never does, so the (dynamic) trampoline is written into the struct.
// The struct is zeroed first all the same, so no stale bytes (arena memory
// comes filled with trap instructions) can pass for a static trampoline.
#pragma once

#include <ffi.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>

#include "wxarena/arena.hpp"
#include "wxarena/code_heap.hpp"
#include "wxarena/result.hpp"

namespace wxa::ffi {

/// libffi's closure handler: (cif, return slot, argument pointers, user data).
using Handler = void (*)(ffi_cif*, void*, void**, void*);

/// Bytes and alignment a closure needs in arena memory.
inline constexpr std::size_t kClosureSize = sizeof(ffi_closure);
inline constexpr std::size_t kClosureAlign =
    alignof(ffi_closure) < 16 ? 16 : alignof(ffi_closure);

/// Prepares a closure in memory the caller holds writable: it is written at
/// `rw` (at least kClosureSize bytes, aligned to alignof(ffi_closure)) and
/// will run at `rx` once sealed / published. `cif` must outlive the closure.
/// Errors: null_pointer, size_too_large (rw too small), bad_alignment,
/// invalid_argument (libffi refused: FFI_BAD_ABI, FFI_BAD_TYPEDEF, ...).
[[nodiscard]] inline Result<void> prepare(std::span<std::byte> rw,
                                          const void* rx, ffi_cif* cif,
                                          Handler fun,
                                          void* user_data) noexcept {
  if (!rw.data() || !rx || !cif || !fun) return Errc::null_pointer;
  if (rw.size() < kClosureSize) return Errc::size_too_large;
  if (reinterpret_cast<std::uintptr_t>(rw.data()) % alignof(ffi_closure) ||
      reinterpret_cast<std::uintptr_t>(rx) % alignof(ffi_closure))
    return Errc::bad_alignment;
  std::memset(rw.data(), 0, kClosureSize);
  auto* closure = reinterpret_cast<ffi_closure*>(rw.data());
  if (ffi_prep_closure_loc(closure, cif, fun, user_data,
                           const_cast<void*>(rx)) != FFI_OK)
    return Errc::invalid_argument;
  return {};
}

/// One closure in a CodeHeap: callable at code() once the heap is
/// published, released with the object. Move-only; the heap must outlive
/// it, and the cif and user data must outlive it too.
class Closure {
 public:
  Closure() noexcept = default;

  /// Allocates kClosureSize bytes in `heap` and prepares the closure there
  /// (writable until heap.publish()). Errors: the heap's allocation errors
  /// and prepare()'s.
  [[nodiscard]] static Result<Closure> create(CodeHeap& heap, ffi_cif* cif,
                                              Handler fun,
                                              void* user_data) noexcept {
    Result<Function> f = heap.allocate(kClosureSize, kClosureAlign);
    if (!f) return f.error();
    if (Result<void> r = prepare(f->rw, f->rx, cif, fun, user_data); !r) {
      (void)heap.release(f->rx);
      return r.error();
    }
    return Closure(heap, f->rx);
  }

  Closure(Closure&& other) noexcept
      : heap_(std::exchange(other.heap_, nullptr)),
        rx_(std::exchange(other.rx_, nullptr)) {}
  Closure& operator=(Closure&& other) noexcept {
    if (this != &other) {
      (void)reset();
      heap_ = std::exchange(other.heap_, nullptr);
      rx_ = std::exchange(other.rx_, nullptr);
    }
    return *this;
  }
  Closure(const Closure&) = delete;
  Closure& operator=(const Closure&) = delete;
  ~Closure() { (void)reset(); }

  /// Releases the closure's space in the heap now (a no-op when empty).
  [[nodiscard]] Result<void> reset() noexcept {
    if (!heap_) return {};
    Result<void> r = heap_->release(rx_);
    heap_ = nullptr;
    rx_ = nullptr;
    return r;
  }

  /// The executable address: what C code calls, after heap.publish().
  [[nodiscard]] const void* code() const noexcept { return rx_; }
  template <class Fn>
  [[nodiscard]] Fn* entry() const noexcept {
    return reinterpret_cast<Fn*>(const_cast<void*>(rx_));
  }
  [[nodiscard]] explicit operator bool() const noexcept {
    return rx_ != nullptr;
  }

 private:
  Closure(CodeHeap& heap, const void* rx) noexcept : heap_(&heap), rx_(rx) {}
  CodeHeap* heap_ = nullptr;
  const void* rx_ = nullptr;
};

namespace detail {
// The ffi_type of a C++ argument or return type.
template <class T>
ffi_type* type_of() noexcept {
  if constexpr (std::is_void_v<T>) {
    return &ffi_type_void;
  } else if constexpr (std::is_pointer_v<T>) {
    return &ffi_type_pointer;
  } else if constexpr (std::is_same_v<T, float>) {
    return &ffi_type_float;
  } else if constexpr (std::is_same_v<T, double>) {
    return &ffi_type_double;
  } else if constexpr (std::is_integral_v<T>) {
    constexpr bool s = std::is_signed_v<T>;
    switch (sizeof(T)) {
      case 1:
        return s ? &ffi_type_sint8 : &ffi_type_uint8;
      case 2:
        return s ? &ffi_type_sint16 : &ffi_type_uint16;
      case 4:
        return s ? &ffi_type_sint32 : &ffi_type_uint32;
      default:
        return s ? &ffi_type_sint64 : &ffi_type_uint64;
    }
  } else {
    static_assert(sizeof(T) == 0,
                  "wxa::ffi::Callback supports void, pointers, float, double "
                  "and integral types");
  }
}
}  // namespace detail

template <class Signature>
class Callback;

/// A C function pointer of type R(*)(Args...) that calls a C++ callable:
/// the cif, the callable and a Closure in one move-only object. Only scalar
/// types (see detail::type_of); the callable must not throw (it is called
/// from C through libffi).
template <class R, class... Args>
class Callback<R(Args...)> {
 public:
  using Pointer = R (*)(Args...);

  Callback() noexcept = default;

  /// Prepares the closure in `heap`; callable through entry() after
  /// heap.publish(). Errors: as Closure::create(), and out_of_memory.
  template <class F>
  [[nodiscard]] static Result<Callback> create(CodeHeap& heap,
                                               F&& callable) noexcept {
    std::unique_ptr<State> state(new (std::nothrow) State);
    if (!state) return Errc::out_of_memory;
    try {
      state->fn = std::function<R(Args...)>(std::forward<F>(callable));
    } catch (...) {
      return Errc::out_of_memory;
    }
    state->types = {detail::type_of<Args>()...};
    if (ffi_prep_cif(&state->cif, FFI_DEFAULT_ABI,
                     static_cast<unsigned>(sizeof...(Args)),
                     detail::type_of<R>(),
                     sizeof...(Args) ? state->types.data() : nullptr) != FFI_OK)
      return Errc::invalid_argument;
    Result<Closure> c =
        Closure::create(heap, &state->cif, &Callback::trampoline, state.get());
    if (!c) return c.error();
    Callback cb;
    cb.state_ = std::move(state);
    cb.closure_ = std::move(*c);
    return cb;
  }

  /// The C function pointer (the closure's executable address).
  [[nodiscard]] Pointer entry() const noexcept {
    return closure_.template entry<R(Args...)>();
  }
  [[nodiscard]] const Closure& closure() const noexcept { return closure_; }
  [[nodiscard]] explicit operator bool() const noexcept {
    return static_cast<bool>(closure_);
  }
  /// Releases the closure now; its state goes with the object.
  [[nodiscard]] Result<void> reset() noexcept { return closure_.reset(); }

 private:
  struct State {
    ffi_cif cif{};
    std::array<ffi_type*, sizeof...(Args) ? sizeof...(Args) : 1> types{};
    std::function<R(Args...)> fn;
  };

  static void trampoline(ffi_cif*, void* ret, void** args, void* user) {
    State& s = *static_cast<State*>(user);
    call(s, ret, args, std::index_sequence_for<Args...>{});
  }
  template <std::size_t... I>
  static void call(State& s, void* ret, void** args,
                   std::index_sequence<I...>) {
    if constexpr (std::is_void_v<R>) {
      s.fn(*static_cast<std::remove_reference_t<Args>*>(args[I])...);
    } else {
      R r = s.fn(*static_cast<std::remove_reference_t<Args>*>(args[I])...);
      // libffi's return slot for integers narrower than a register is a
      // whole ffi_arg, filled sign- or zero-extended.
      if constexpr (std::is_integral_v<R> && sizeof(R) < sizeof(ffi_arg)) {
        if constexpr (std::is_signed_v<R>)
          *static_cast<ffi_sarg*>(ret) = static_cast<ffi_sarg>(r);
        else
          *static_cast<ffi_arg*>(ret) = static_cast<ffi_arg>(r);
      } else {
        std::memcpy(ret, &r, sizeof r);
      }
    }
  }

  // closure_ is declared last so that it is released before the state its
  // trampoline points at is freed.
  std::unique_ptr<State> state_;
  Closure closure_;
};

}  // namespace wxa::ffi
