// SPDX-License-Identifier: MIT
// Xbyak on wxarena: an Xbyak::Allocator whose buffers are arena chunks (so
// Xbyak never maps or mprotects anything itself, least of all RWX), and
// sealing of a generator's buffer through the arena.
//
// Header-only; needs Xbyak (libxbyak-dev, 6.x) and links against wxarena.
//
//   wxa::Arena arena = wxa::Arena::create().value();
//   struct Add : wxa::xbyak::CodeGenerator {
//     explicit Add(wxa::Arena& a) : CodeGenerator(a) {
//       lea(eax, ptr[rdi + rsi]);
//       ret();
//     }
//   } gen(arena);
//   auto add = gen.seal<int(int, int)>().value();  // writable -> executable
//   add(2, 3);                                     // 5
//
// Where the code runs. Xbyak computes every address-dependent encoding from
// the address it writes at (getCode()): call/jmp to an absolute address
// (rel32 from the buffer), mov(reg, label) and putL (absolute label
// addresses), ptr[rip + absolute address]. Such code is only right at the
// address it was written at, so it needs Backend::protect, where the writable
// and the executable view are the same address. Under Backend::dual_map and
// Backend::kernel_write (what wxa::Options{} picks wherever memfds may be
// executable) the code is written through one address and runs at another:
// the adapter refuses that (Errc::not_supported) unless the caller promises
// Code::position_independent (only jumps to labels, [rip + label], calls
// through a register). Never call getCode() there: it is the writable view;
// call what seal() returns.
//
// On kernel_write the writable view is staging memory that the arena gives
// to the next chunk once this one is sealed, while Xbyak goes on naming its
// buffer by that pointer until the generator dies. So the Allocator keeps
// which chunk each buffer it handed out is (free() releases that one, never
// a chunk staged there later), sealing goes through the Allocator
// (CodeGenerator::seal(), or seal(gen, allocator)), and unseal() is refused
// there: the unsealed chunk would be staged at another address than the one
// Xbyak writes at.
//
// Calling the host with call(fn) needs a rel32 displacement: create the arena
// with Options::anchor = a host function, so the reservation is within reach.
#pragma once

#include <xbyak/xbyak.h>

#include <cstddef>
#include <cstdint>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "wxarena/arena.hpp"
#include "wxarena/result.hpp"

namespace wxa::xbyak {

/// What the caller promises about the code a generator emits.
enum class Code : std::uint8_t {
  /// May depend on its own address (see the top of this file): it must run
  /// where Xbyak wrote it, so only Backend::protect can hold it.
  address_dependent,
  /// Runs correctly at any address: only relative jumps and [rip + label]
  /// inside the buffer, other code reached through registers. Allowed in
  /// both backends.
  position_independent,
};

/// Whether code of kind `code` may be generated in `arena`: Errc::not_supported
/// for address-dependent code in a dual_map or kernel_write arena (written
/// at one address, run at another), success otherwise.
[[nodiscard]] inline Result<void> check(const Arena& arena,
                                        Code code) noexcept {
  if (code == Code::address_dependent && arena.backend() != Backend::protect)
    return Errc::not_supported;
  return {};
}

class Allocator;
[[nodiscard]] inline Result<const void*> seal(Xbyak::CodeGenerator& gen,
                                              Allocator& allocator) noexcept;
[[nodiscard]] inline Result<void> unseal(const Xbyak::CodeGenerator& gen,
                                         Allocator& allocator) noexcept;

/// An Xbyak::Allocator backed by an Arena. Each buffer Xbyak asks for (at
/// construction, and each time an AutoGrow generator grows) is one writable
/// chunk; the allocator keeps which chunk each buffer it handed out is, and
/// free() releases that chunk (whatever its state). useProtect() is false:
/// Xbyak never calls mprotect; the buffer becomes executable only through
/// seal().
///
/// Not thread-safe (like the generator using it); the arena may be shared.
/// The allocator must outlive every generator using it, and the arena the
/// allocator.
class Allocator : public Xbyak::Allocator {
 public:
  explicit Allocator(Arena& arena, Code code = Code::address_dependent)
      : arena_(&arena), code_(code) {}
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  /// A writable chunk of at least `size` bytes, at its writable view (which
  /// is where Xbyak writes). On failure nullptr (Xbyak then throws
  /// ERR_CANT_ALLOC) and last_error() says why: not_supported (see check()),
  /// out_of_memory, or the arena's allocation error.
  std::uint8_t* alloc(std::size_t size) override {
    if (Result<void> ok = check(*arena_, code_); !ok) {
      last_error_ = ok.error();
      return nullptr;
    }
    try {
      buffers_.reserve(buffers_.size() + 1);
    } catch (const std::bad_alloc&) {
      last_error_ = Error(Errc::out_of_memory);
      return nullptr;
    }
    // On kernel_write a sealed buffer's address may be staging the arena
    // hands to a new chunk; that chunk is set aside (and released) so that
    // every buffer this allocator knows has an address of its own.
    Chunk aside[kAsideLimit];
    std::size_t asides = 0;
    Result<Chunk> c = Error(Errc::exhausted);
    for (;;) {
      c = arena_->allocate(size == 0 ? 1 : size);
      if (!c || !holds(c->rw().data()) || asides == kAsideLimit) break;
      aside[asides++] = *c;
    }
    for (std::size_t i = 0; i < asides; ++i)
      (void)arena_->release(aside[i]);  // never used: nothing to report
    if (c && holds(c->rw().data())) {
      (void)arena_->release(*c);
      c = Error(Errc::exhausted);
    }
    if (!c) {
      last_error_ = c.error();
      return nullptr;
    }
    auto* rw = reinterpret_cast<std::uint8_t*>(c->rw().data());
    buffers_.push_back(Buffer{rw, c->rx(), false});
    return rw;
  }

  /// Releases the chunk of the buffer at `p` (executable or not: a
  /// generator is destroyed after its code was sealed). Errors are kept in
  /// last_error() (foreign_pointer: not a buffer of this allocator); Xbyak
  /// has no way to receive them.
  void free(std::uint8_t* p) override {
    if (!p) return;
    Buffer* b = find(p);
    if (!b) {
      last_error_ = Error(Errc::foreign_pointer, 0, p);
      return;
    }
    const void* rx = b->rx;
    *b = buffers_.back();
    buffers_.pop_back();
    if (Result<void> r = arena_->release(rx); !r) last_error_ = r.error();
  }

  /// The executable address of the buffer at `p` (a pointer Xbyak got from
  /// alloc()), or nullptr.
  [[nodiscard]] const void* rx_of(const std::uint8_t* p) const noexcept {
    for (const Buffer& b : buffers_)
      if (b.rw == p) return b.rx;
    return nullptr;
  }

  /// Always false: Xbyak must not change protections (its default asks the
  /// kernel for RWX).
  [[nodiscard]] bool useProtect() const override { return false; }

  /// The most recent error of alloc() or free() (Errc::ok if none).
  [[nodiscard]] const Error& last_error() const noexcept { return last_error_; }
  [[nodiscard]] Arena& arena() const noexcept { return *arena_; }
  [[nodiscard]] Code code() const noexcept { return code_; }

 private:
  friend Result<const void*> seal(Xbyak::CodeGenerator&, Allocator&) noexcept;
  friend Result<void> unseal(const Xbyak::CodeGenerator&, Allocator&) noexcept;
  static constexpr std::size_t kAsideLimit = 8;

  struct Buffer {
    std::uint8_t* rw;  // where Xbyak writes (and names the buffer)
    const void* rx;    // the chunk
    bool sealed;       // rw may be another chunk's staging by now
  };

  Buffer* find(const std::uint8_t* p) noexcept {
    for (Buffer& b : buffers_)
      if (b.rw == p) return &b;
    return nullptr;
  }
  bool holds(const void* p) const noexcept {
    return rx_of(static_cast<const std::uint8_t*>(p)) != nullptr;
  }

  Arena* arena_;
  Code code_;
  Error last_error_;
  std::vector<Buffer> buffers_;
};

/// Finishes `gen` and makes its buffer executable: ready() (which resolves
/// an AutoGrow generator's address fixups and, with an arena Allocator,
/// changes no protection), then Arena::seal() of the buffer's chunk. Returns
/// the executable address of the buffer's first byte: the entry to call.
///
/// Errors: invalid_argument (an undefined label, or Xbyak failed resolving
/// an address; call gen.ready() yourself for Xbyak's message),
/// foreign_pointer (the buffer is not this arena's), interior_pointer (it is
/// not the start of a chunk), not_supported (address-dependent code in a
/// dual_map arena, see Code; any kernel_write arena: seal through the
/// Allocator below), and Arena::seal()'s errors.
[[nodiscard]] inline Result<const void*> seal(
    Xbyak::CodeGenerator& gen, Arena& arena,
    Code code = Code::address_dependent) noexcept {
  if (gen.hasUndefinedLabel()) return Errc::invalid_argument;
  // The buffer's address names its chunk only until the seal there; the
  // Allocator knows which chunk it is (see the top of this file).
  if (arena.backend() == Backend::kernel_write) return Errc::not_supported;
  Result<ChunkInfo> info = arena.find(gen.getCode());
  if (!info) return info.error();
  if (info->offset != 0)
    return Error(Errc::interior_pointer, 0, info->chunk.rx());
  if (info->state != State::writable)
    return Error(Errc::illegal_transition, 0, info->chunk.rx());
  const bool moved =
      static_cast<const void*>(gen.getCode()) != info->chunk.rx();
  if (moved && code == Code::address_dependent)
    return Error(Errc::not_supported, 0, info->chunk.rx());
#ifndef XBYAK_NO_EXCEPTION
  try {
    gen.ready();
  } catch (...) {
    return Error(Errc::invalid_argument, 0, info->chunk.rx());
  }
#else
  gen.ready();
  if (Xbyak::GetError() != 0) {
    Xbyak::ClearError();
    return Error(Errc::invalid_argument, 0, info->chunk.rx());
  }
#endif
  if (Result<void> r = arena.seal(info->chunk.rx()); !r) return r.error();
  return info->chunk.rx();
}

/// seal() above for a generator whose buffer `allocator` handed out, on
/// every backend: the chunk is the one the allocator gave, even where the
/// buffer's address has been given to another chunk since (kernel_write).
/// Errors: foreign_pointer (not a buffer of this allocator),
/// illegal_transition (sealed already), and those of seal() above.
[[nodiscard]] inline Result<const void*> seal(Xbyak::CodeGenerator& gen,
                                              Allocator& allocator) noexcept {
  Allocator::Buffer* b = allocator.find(gen.getCode());
  if (!b) return Error(Errc::foreign_pointer, 0, gen.getCode());
  if (b->sealed) return Error(Errc::illegal_transition, 0, b->rx);
  if (gen.hasUndefinedLabel()) return Errc::invalid_argument;
  Arena& arena = allocator.arena();
  Result<ChunkInfo> info = arena.find(b->rx);
  if (!info) return info.error();
  if (info->state != State::writable)
    return Error(Errc::illegal_transition, 0, b->rx);
  if (static_cast<const void*>(gen.getCode()) != b->rx &&
      allocator.code() == Code::address_dependent)
    return Error(Errc::not_supported, 0, b->rx);
#ifndef XBYAK_NO_EXCEPTION
  try {
    gen.ready();
  } catch (...) {
    return Error(Errc::invalid_argument, 0, b->rx);
  }
#else
  gen.ready();
  if (Xbyak::GetError() != 0) {
    Xbyak::ClearError();
    return Error(Errc::invalid_argument, 0, b->rx);
  }
#endif
  if (Result<void> r = arena.seal(b->rx); !r) return r.error();
  b->sealed = true;
  return b->rx;
}

/// Makes a sealed generator's buffer writable again (at the same writable
/// address Xbyak holds), e.g. to reset() and generate into it anew. The
/// caller guarantees that no thread runs the code meanwhile.
/// Errors: not_supported (a kernel_write arena), those of Arena::find() and
/// Arena::unseal().
[[nodiscard]] inline Result<void> unseal(const Xbyak::CodeGenerator& gen,
                                         Arena& arena) noexcept {
  // kernel_write would stage the chunk at another address than Xbyak's.
  if (arena.backend() == Backend::kernel_write) return Errc::not_supported;
  Result<ChunkInfo> info = arena.find(gen.getCode());
  if (!info) return info.error();
  if (info->offset != 0)
    return Error(Errc::interior_pointer, 0, info->chunk.rx());
  Result<Chunk> c = arena.unseal(info->chunk.rx());
  if (!c) return c.error();
  // The arena keeps a chunk's writable view at a fixed address, which is
  // what Xbyak goes on writing through.
  if (static_cast<const void*>(c->rw().data()) != gen.getCode())
    return Error(Errc::os_error, 0, info->chunk.rx());
  return {};
}

/// unseal() above for a generator whose buffer `allocator` handed out.
[[nodiscard]] inline Result<void> unseal(const Xbyak::CodeGenerator& gen,
                                         Allocator& allocator) noexcept {
  Allocator::Buffer* b = allocator.find(gen.getCode());
  if (!b) return Error(Errc::foreign_pointer, 0, gen.getCode());
  if (!b->sealed) return Error(Errc::illegal_transition, 0, b->rx);
  if (Result<void> r = unseal(gen, allocator.arena()); !r) return r;
  b->sealed = false;
  return {};
}

/// Thrown by CodeGenerator's constructor when address-dependent code is
/// asked for in a dual_map or kernel_write arena (see Code). Xbyak reports its
/// own failures (e.g. ERR_CANT_ALLOC when the arena is exhausted) as
/// Xbyak::Error.
class Refused : public std::runtime_error {
 public:
  explicit Refused(const Error& error)
      : std::runtime_error(
            "wxa::xbyak: " + error.to_string() +
            ": Xbyak encodes addresses for where it writes, and a dual_map "
            "or kernel_write arena (what wxa::Options{} picks where memfds "
            "may be executable) runs code at another address; use "
            "Backend::protect, or promise Code::position_independent"),
        error_(error) {}
  [[nodiscard]] const Error& error() const noexcept { return error_; }

 private:
  Error error_;
};

namespace detail {
// Base-from-member: the allocator is built before Xbyak's CodeArray (whose
// constructor allocates through it) and destroyed after it (whose
// destructor frees through it).
struct AllocatorMember {
  AllocatorMember(Arena& arena, Code code) : wxa_allocator_(arena, code) {
#ifndef XBYAK_NO_EXCEPTION
    if (Result<void> ok = check(arena, code); !ok) throw Refused(ok.error());
#endif
  }
  Allocator wxa_allocator_;
};
}  // namespace detail

/// How a CodeGenerator's buffer is sized.
enum class Growth : std::uint8_t {
  fixed,      ///< max_size bytes; more throws ERR_CODE_IS_TOO_BIG
  auto_grow,  ///< Xbyak::AutoGrow: moves to a larger chunk when full
};

/// An Xbyak::CodeGenerator whose buffer lives in an Arena. Derive from it
/// as from Xbyak::CodeGenerator, emit, then seal() and call. The buffer is
/// released when the generator is destroyed (the code with it).
class CodeGenerator : private detail::AllocatorMember,
                      public Xbyak::CodeGenerator {
 public:
  /// Throws Refused for address-dependent code in a dual_map or
  /// kernel_write arena, and
  /// Xbyak::Error(ERR_CANT_ALLOC) if the arena cannot allocate
  /// (allocator().last_error() is lost with the object; call
  /// Arena::allocate() to see why).
  explicit CodeGenerator(Arena& arena,
                         std::size_t max_size = Xbyak::DEFAULT_MAX_CODE_SIZE,
                         Growth growth = Growth::fixed,
                         Code code = Code::address_dependent)
      : AllocatorMember(arena, code),
        Xbyak::CodeGenerator(
            max_size, growth == Growth::auto_grow ? Xbyak::AutoGrow : nullptr,
            &wxa_allocator_) {}

  /// seal() above, for this generator: returns the entry as Fn*.
  template <class Fn = void()>
  [[nodiscard]] Result<Fn*> seal() noexcept {
    Result<const void*> r = xbyak::seal(*this, wxa_allocator_);
    if (!r) return r.error();
    rx_ = *r;
    return reinterpret_cast<Fn*>(const_cast<void*>(rx_));
  }
  /// unseal() above, for this generator.
  [[nodiscard]] Result<void> unseal() noexcept {
    Result<void> r = xbyak::unseal(*this, wxa_allocator_);
    if (r) rx_ = nullptr;
    return r;
  }
  /// The entry of the sealed code (nullptr before seal() or after unseal()).
  template <class Fn = void()>
  [[nodiscard]] Fn* entry() const noexcept {
    return reinterpret_cast<Fn*>(const_cast<void*>(rx_));
  }
  [[nodiscard]] const Allocator& allocator() const noexcept {
    return wxa_allocator_;
  }
  [[nodiscard]] Arena& arena() const noexcept { return wxa_allocator_.arena(); }

 private:
  const void* rx_ = nullptr;
};

}  // namespace wxa::xbyak
