// SPDX-License-Identifier: MIT
// Messages for error codes, states and backends, and make_error().
#include <cstdio>
#include <cstring>
#include <string>

#include "error.hpp"
#include "pal/pal.hpp"
#include "wxarena/arena.hpp"
#include "wxarena/result.hpp"

namespace wxa {

std::string_view to_string(Errc code) noexcept {
  switch (code) {
    case Errc::ok:
      return "ok";
    case Errc::invalid_argument:
      return "invalid argument";
    case Errc::null_pointer:
      return "null pointer";
    case Errc::foreign_pointer:
      return "address is not in this arena";
    case Errc::interior_pointer:
      return "address is inside a chunk, not its start";
    case Errc::not_allocated:
      return "address is in no live chunk";
    case Errc::double_release:
      return "chunk already released";
    case Errc::illegal_transition:
      return "transition not allowed in the chunk's state";
    case Errc::duplicate_in_batch:
      return "chunk appears twice in one batch";
    case Errc::zero_size:
      return "size of zero bytes";
    case Errc::size_too_large:
      return "size larger than the reservation";
    case Errc::bad_alignment:
      return "alignment is not a supported power of two";
    case Errc::exhausted:
      return "reservation exhausted (or, on kernel_write, the staging pool "
             "that holds writable chunks until they are sealed)";
    case Errc::vma_budget:
      return "VMA budget would be exceeded";
    case Errc::unreachable_anchor:
      return "no free range within reach of the anchor";
    case Errc::out_of_memory:
      return "out of memory";
    case Errc::permission_denied:
      return "refused by the OS's policy";
    case Errc::not_supported:
      return "not supported on this system";
    case Errc::os_error:
      return "system call failed";
    case Errc::wrong_process:
      return "arena made by another process: refused in a child process";
    case Errc::out_of_bounds:
      return "byte range not inside the chunk";
  }
  return "unknown error";
}

std::string Error::to_string() const {
  std::string s(wxa::to_string(code_));
  char buf[96];
  if (chunk_) {
    std::snprintf(buf, sizeof buf, " (chunk %p)", chunk_);
    s += buf;
  }
  if (sys_errno_) {
    char msg[160];
    detail::os_error_text(sys_errno_, msg, sizeof msg);
    s += " (";
    s += msg;
    s += ')';
  }
  return s;
}

std::string_view to_string(Backend backend) noexcept {
  switch (backend) {
    case Backend::automatic:
      return "automatic";
    case Backend::protect:
      return "protect";
    case Backend::dual_map:
      return "dual_map";
    case Backend::kernel_write:
      return "kernel_write";
  }
  return "unknown";
}

std::string_view to_string(State state) noexcept {
  switch (state) {
    case State::free:
      return "free";
    case State::writable:
      return "writable";
    case State::executable:
      return "executable";
    case State::read_only:
      return "read_only";
    case State::retired:
      return "retired";
  }
  return "unknown";
}

std::string_view to_string(Access access) noexcept {
  switch (access) {
    case Access::none:
      return "---";
    case Access::read:
      return "r--";
    case Access::read_write:
      return "rw-";
    case Access::read_execute:
      return "r-x";
  }
  return "???";
}

namespace detail {
Error make_error(const Error& cause, const void* chunk) noexcept {
  return Error(cause.code(), cause.sys_errno(), chunk);
}

void bad_result_access(const Error& error) noexcept {
  char what[160];
  std::snprintf(what, sizeof what, "value() of a Result holding an error: %.*s",
                static_cast<int>(wxa::to_string(error.code()).size()),
                wxa::to_string(error.code()).data());
  fatal(what, error.chunk(), error.sys_errno());
}
}  // namespace detail

}  // namespace wxa
