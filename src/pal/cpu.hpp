// SPDX-License-Identifier: MIT
// What depends on the processor rather than the OS, in one place: the
// spin-wait hint and the trap instruction that fills code nobody may run.
//
// Layering: layer 2 (with the platform layer); includes nothing of
// wxarena's. The only processor #if outside src/pal/*.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace wxa::detail {

/// A hint to the core that this is a spin-wait loop.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

/// Whether another core may run stale instructions from an address that
/// was executable when new code was written there, until it takes a
/// context synchronisation event (an ISB, which the cross-thread barrier
/// makes every core of the process take). x86-64 keeps instruction fetch
/// coherent with stores, prefetched instructions included; AArch64 (and,
/// to be safe, any other architecture) does not.
#if defined(__x86_64__) || defined(__i386__)
inline constexpr bool kStaleFetchAcrossCores = false;
#else
inline constexpr bool kStaleFetchAcrossCores = true;
#endif

/// Fills `bytes` at p with this machine's trap instruction (x86-64 int3,
/// AArch64 brk #0).
inline void fill_traps(std::byte* p, std::size_t bytes) noexcept {
#if defined(__x86_64__) || defined(__i386__)
  std::memset(p, 0xCC, bytes);  // int3
#elif defined(__aarch64__)
  const std::uint32_t brk = 0xD4200000;  // brk #0
  for (std::size_t off = 0; off + 4 <= bytes; off += 4)
    std::memcpy(p + off, &brk, 4);
#else
  std::memset(p, 0, bytes);
#endif
}

}  // namespace wxa::detail
