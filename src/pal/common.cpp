// SPDX-License-Identifier: MIT
// What every platform shares, written once over the few primitives each OS
// family's file provides (pal/common.hpp): the one fatal path, number
// formatting, the C runtime's errno translation, metadata allocation.
#include "pal/common.hpp"

#include <errno.h>
#include <stdlib.h>

#include "pal/pal.hpp"

namespace wxa::detail {

void write_stderr(const char* s, std::size_t len) noexcept {
  while (len > 0) {
    const std::ptrdiff_t w = write_stderr_some(s, len);
    if (w < 0) return;  // nothing more can be done on the way to abort()
    s += w;
    len -= static_cast<std::size_t>(w);
  }
}

std::size_t format_hex(char* out, std::uintptr_t v) noexcept {
  char tmp[2 + 16];
  std::size_t n = 0;
  do {
    tmp[n++] = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v);
  out[0] = '0';
  out[1] = 'x';
  for (std::size_t i = 0; i < n; ++i) out[2 + i] = tmp[n - 1 - i];
  return n + 2;
}

std::size_t format_decimal(char* out, int v) noexcept {
  char num[16];
  std::size_t k = 0;
  for (; v > 0 && k < 15; v /= 10) num[k++] = char('0' + v % 10);
  std::size_t len = 0;
  while (k > 0) out[len++] = num[--k];
  return len;
}

void fatal(const char* what, const void* address, int err) noexcept {
  char buf[512];
  std::size_t len = 0;
  auto put = [&](const char* s) {
    while (*s && len < sizeof buf - 1) buf[len++] = *s++;
  };
  put("wxarena: fatal: ");
  put(what);
  if (address) {
    put(" at ");
    if (len + 20 < sizeof buf)
      len += format_hex(buf + len, reinterpret_cast<std::uintptr_t>(address));
  }
  if (err) {
    put(" (");
    put(kOsErrorName);
    put(" ");
    if (len + 20 < sizeof buf) len += format_decimal(buf + len, err);
    put(")");
  }
  put("\n");
  write_stderr(buf, len);
  ::abort();
}

Error error_from_errno(int err, const void* chunk) noexcept {
  // The C runtime's errno values: the OS's own on Linux; on Windows, the
  // library's own errors and the fault injection tests' (the OS's errors
  // are translated in pal/windows.cpp).
  switch (err) {
    case ENOMEM:
      return Error(Errc::out_of_memory, err, chunk);
    case EACCES:
    case EPERM:
      return Error(Errc::permission_denied, err, chunk);
    case EINVAL:
      return Error(Errc::invalid_argument, err, chunk);
    case ENOSYS:
    case EOPNOTSUPP:
      return Error(Errc::not_supported, err, chunk);
    default:
      return Error(Errc::os_error, err, chunk);
  }
}

// --- metadata allocation -----------------------------------------------------

void* meta_alloc(std::size_t bytes) noexcept {
  const MetaFunctions& f = loaded_meta_functions();
  return f.malloc ? f.malloc(bytes) : ::malloc(bytes);
}

void* meta_calloc(std::size_t count, std::size_t size) noexcept {
  const MetaFunctions& f = loaded_meta_functions();
  return f.calloc ? f.calloc(count, size) : ::calloc(count, size);
}

void meta_free(void* p) noexcept {
  const MetaFunctions& f = loaded_meta_functions();
  if (f.free)
    f.free(p);
  else
    ::free(p);
}

void meta_collect() noexcept {
  const MetaFunctions& f = loaded_meta_functions();
  if (f.collect) f.collect();
}

bool meta_uses_mimalloc() noexcept {
  return loaded_meta_functions().malloc != nullptr;
}

}  // namespace wxa::detail
