// SPDX-License-Identifier: MIT
// Error codes and the Result<T> type every fallible wxarena operation returns.
//
// Layering: this header depends on nothing else in wxarena; every other public
// header includes it.
#pragma once

#include <cstdint>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace wxa {

/// What went wrong. Every code has a fixed, readable message (see to_string).
/// Caller mistakes and OS refusals are errors, never crashes; only a failed
/// re-seal of code or a detected W^X violation is fatal (see DESIGN.md).
enum class Errc : std::uint8_t {
  ok = 0,
  invalid_argument,    ///< an option or flag is out of its domain
  null_pointer,        ///< a null pointer where a chunk was expected
  foreign_pointer,     ///< the address is not inside this arena
  interior_pointer,    ///< the address is inside a chunk but not its start
  not_allocated,       ///< the address is in the arena but in no live chunk
  double_release,      ///< the chunk was already released
  illegal_transition,  ///< the chunk's state does not allow this operation
  duplicate_in_batch,  ///< the same chunk appears twice in one batch
  zero_size,           ///< a size of zero bytes was asked for
  size_too_large,      ///< larger than the whole reservation (or overflows)
  bad_alignment,       ///< alignment is zero, not a power of two, or too large
  exhausted,           ///< the reservation has no free run large enough
                       ///< (kernel_write: or its staging pool, which holds
                       ///< writable chunks until they are sealed, has none)
  vma_budget,          ///< the change would exceed the arena's VMA budget
  unreachable_anchor,  ///< no free range within reach of the anchor
  out_of_memory,       ///< the OS refused for lack of memory (ENOMEM)
  permission_denied,   ///< the OS refused by policy (EACCES, EPERM)
  not_supported,       ///< the OS or this build lacks the facility
  os_error,            ///< any other OS failure; see Error::sys_errno()
  wrong_process,       ///< an arena (or heap) used in a child process made
                       ///< by any kind of fork: only the process that made
                       ///< it may use it (its memory may be shared with the
                       ///< parent, its lock held by a thread that is gone);
                       ///< the code it inherited stays callable
  out_of_bounds,       ///< the byte range does not lie inside the chunk
};

/// A short, fixed, human-readable message for a code ("double release", ...).
[[nodiscard]] std::string_view to_string(Errc code) noexcept;

/// An error: the code, the errno behind it (0 if none) and, where the error
/// is about one chunk, that chunk's executable address.
class Error {
 public:
  constexpr Error() noexcept = default;
  constexpr Error(Errc code, int sys_errno = 0,
                  const void* chunk = nullptr) noexcept
      : code_(code), sys_errno_(sys_errno), chunk_(chunk) {}

  [[nodiscard]] constexpr Errc code() const noexcept { return code_; }
  [[nodiscard]] constexpr int sys_errno() const noexcept { return sys_errno_; }
  [[nodiscard]] constexpr const void* chunk() const noexcept { return chunk_; }

  /// "double release (chunk 0x7f..., errno 12: Cannot allocate memory)".
  [[nodiscard]] std::string to_string() const;

  friend constexpr bool operator==(const Error& e, Errc c) noexcept {
    return e.code_ == c;
  }

 private:
  Errc code_ = Errc::ok;
  int sys_errno_ = 0;
  const void* chunk_ = nullptr;
};

namespace detail {
/// Reached by Result::value() on an error: a caller bug, reported and fatal.
[[noreturn]] void bad_result_access(const Error& error) noexcept;
}  // namespace detail

/// A value or an Error, shaped like std::expected<T, Error> (C++23): the same
/// member names, so code moves to std::expected without edits. Never throws;
/// value() on an error is a fatal caller bug.
template <class T>
class [[nodiscard]] Result {
  static_assert(!std::is_reference_v<T>);

 public:
  using value_type = T;
  using error_type = Error;

  template <class U = T>
  requires std::is_constructible_v<T, U&&> Result(U&& value)
  noexcept : has_(true) {  // NOLINT: implicit like expected
    ::new (static_cast<void*>(&value_)) T(std::forward<U>(value));
  }
  Result(Error error) noexcept : error_(error), has_(false) {}  // NOLINT
  Result(Errc code) noexcept : Result(Error(code)) {}           // NOLINT

  Result(Result&& other) noexcept : has_(other.has_) {
    if (has_)
      ::new (static_cast<void*>(&value_)) T(std::move(other.value_));
    else
      error_ = other.error_;
  }
  Result& operator=(Result&& other) noexcept {
    if (this != &other) {
      this->~Result();
      ::new (static_cast<void*>(this)) Result(std::move(other));
    }
    return *this;
  }
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;
  ~Result() {
    if (has_) value_.~T();
  }

  [[nodiscard]] bool has_value() const noexcept { return has_; }
  explicit operator bool() const noexcept { return has_; }

  [[nodiscard]] T& value() & noexcept {
    if (!has_) detail::bad_result_access(error_);
    return value_;
  }
  [[nodiscard]] const T& value() const& noexcept {
    if (!has_) detail::bad_result_access(error_);
    return value_;
  }
  [[nodiscard]] T&& value() && noexcept {
    if (!has_) detail::bad_result_access(error_);
    return std::move(value_);
  }
  [[nodiscard]] const Error& error() const noexcept { return error_; }

  T& operator*() & noexcept { return value(); }
  const T& operator*() const& noexcept { return value(); }
  T&& operator*() && noexcept { return std::move(*this).value(); }
  T* operator->() noexcept { return &value(); }
  const T* operator->() const noexcept { return &value(); }

  template <class U>
  [[nodiscard]] T value_or(U&& fallback) const& noexcept {
    return has_ ? value_ : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  union {
    T value_;
  };
  Error error_;
  bool has_;
};

/// Result<void>: success, or an Error.
template <>
class [[nodiscard]] Result<void> {
 public:
  using value_type = void;
  using error_type = Error;

  Result() noexcept = default;
  Result(Error error) noexcept : error_(error), has_(false) {}  // NOLINT
  Result(Errc code) noexcept : Result(Error(code)) {}           // NOLINT

  [[nodiscard]] bool has_value() const noexcept { return has_; }
  explicit operator bool() const noexcept { return has_; }
  void value() const noexcept {
    if (!has_) detail::bad_result_access(error_);
  }
  [[nodiscard]] const Error& error() const noexcept { return error_; }

 private:
  Error error_;
  bool has_ = true;
};

}  // namespace wxa
