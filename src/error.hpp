// SPDX-License-Identifier: MIT
// The one way the library remakes an Error: a cause's code and error
// number, naming the chunk at fault. A debugger breakpoint on make_error()
// stops wherever a failure is passed on with a chunk attached.
//
// Layering: layer 1; includes only the public result type.
#pragma once

#include "wxarena/result.hpp"

namespace wxa::detail {

/// `cause`'s code and error number, naming `chunk` (nullptr: none).
[[nodiscard]] Error make_error(const Error& cause, const void* chunk) noexcept;

}  // namespace wxa::detail
