// SPDX-License-Identifier: MIT
// The Linux platform layer's process-wide side: what fork() children close,
// the process token that tells every child apart, the perf map, standard
// error and the metadata allocator's loading (the mappings are linux.cpp's).
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <mutex>

#include "pal/common.hpp"
#include "pal/pal.hpp"
#include "wxa_config.h"
#if WXA_HAVE_MIMALLOC
#include <mimalloc.h>  // option names only: mimalloc is loaded with dlopen
#endif

#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18  // Linux 4.14
#endif

namespace wxa::detail {
namespace {
std::atomic<std::uint64_t> g_fork_generation{0};

// Descriptors of shared objects that hold code, closed in every fork()
// child. Slots, not a locked list: the child handler runs in a process
// whose other threads are gone, possibly with a lock held by one of them.
constexpr int kForkSlots = 4096;
std::atomic<int> g_fork_fds[kForkSlots];
std::atomic<bool> g_fork_fds_ready{false};

void on_fork_child() noexcept {
  g_fork_generation.fetch_add(1, std::memory_order_relaxed);
  if (!g_fork_fds_ready.load(std::memory_order_acquire)) return;
  for (std::atomic<int>& slot : g_fork_fds) {
    const int fd = slot.exchange(-1, std::memory_order_relaxed);
    // The child has nothing to report to; a failure leaves it a descriptor
    // of the parent's code it still cannot map writable through the arena.
    if (fd >= 0) (void)::close(fd);
  }
}
}  // namespace

bool track_for_fork(int fd) noexcept {
  (void)fork_generation();  // the handler is registered
  static const bool ready = [] {
    for (std::atomic<int>& slot : g_fork_fds)
      slot.store(-1, std::memory_order_relaxed);
    g_fork_fds_ready.store(true, std::memory_order_release);
    return true;
  }();
  (void)ready;
  for (std::atomic<int>& slot : g_fork_fds) {
    int empty = -1;
    if (slot.compare_exchange_strong(empty, fd, std::memory_order_acq_rel))
      return true;
  }
  return false;
}

void untrack_for_fork(int fd) noexcept {
  if (!g_fork_fds_ready.load(std::memory_order_acquire)) return;
  for (std::atomic<int>& slot : g_fork_fds) {
    int mine = fd;
    if (slot.compare_exchange_strong(mine, -1, std::memory_order_acq_rel))
      return;
  }
}

std::uint64_t fork_generation() noexcept {
  static const bool registered = [] {
    // pthread_atfork(3): the child handler runs in the child of every fork().
    if (::pthread_atfork(nullptr, nullptr, on_fork_child) != 0)
      fatal("cannot register a fork handler", nullptr, 0);
    return true;
  }();
  (void)registered;
  return g_fork_generation.load(std::memory_order_relaxed);
}

namespace {
// The token page (see process_token()): mapped once per process, inherited
// by children as zeros (MADV_WIPEONFORK, madvise(2), Linux 4.14).
struct TokenPage {
  std::atomic<std::uint64_t> token;
};
std::atomic<TokenPage*> g_token_page{nullptr};
// The last token this process made or inherited the memory of: ordinary
// memory, so a child starts from its parent's and goes above it.
std::atomic<std::uint64_t> g_last_token{0};
}  // namespace

Result<std::uint64_t> process_token(SyscallCounts& n) noexcept {
  TokenPage* page = g_token_page.load(std::memory_order_acquire);
  if (!page) {
    const auto size = static_cast<std::size_t>(::getpagesize());
    ++n.mmap;
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return error_from_errno(errno);
    ++n.madvise;
    // EINVAL: a kernel before 4.14; children then keep this token and
    // fork_generation() alone tells glibc's fork() children apart.
    if (::madvise(p, size, MADV_WIPEONFORK) != 0 && errno != EINVAL) {
      const int err = errno;
      ++n.munmap;
      if (::munmap(p, size) != 0) return error_from_errno(errno);
      return error_from_errno(err);
    }
    auto* mine = static_cast<TokenPage*>(p);
    if (g_token_page.compare_exchange_strong(page, mine,
                                             std::memory_order_acq_rel)) {
      page = mine;
    } else {  // another thread made it first: `page` is theirs
      ++n.munmap;
      if (::munmap(p, size) != 0) return error_from_errno(errno);
    }
  }
  std::uint64_t token = page->token.load(std::memory_order_acquire);
  if (token == 0) {
    // A new process (or the first call): a token above every ancestor's.
    const std::uint64_t want = g_last_token.load(std::memory_order_relaxed) + 1;
    if (page->token.compare_exchange_strong(token, want,
                                            std::memory_order_acq_rel))
      token = want;
    g_last_token.store(token, std::memory_order_relaxed);
  }
  return token;
}

std::uint64_t current_process_token() noexcept {
  const TokenPage* page = g_token_page.load(std::memory_order_acquire);
  return page ? page->token.load(std::memory_order_relaxed) : 0;
}

// --- perf map ----------------------------------------------------------------

void perf_map_name(char* out, std::size_t cap) noexcept {
  std::snprintf(out, cap, "/tmp/perf-%d.map", static_cast<int>(::getpid()));
}

Result<void> append_perf_map(const char* text, std::size_t len) noexcept {
  static std::mutex m;
  static int fd = -1;
  static pid_t owner = 0;
  std::lock_guard lock(m);
  if (fd >= 0 && owner != ::getpid()) {
    // A fork() child writes its own file; drop the parent's descriptor.
    const int old = fd;
    fd = -1;
    if (::close(old) != 0) return error_from_errno(errno);
  }
  if (fd < 0) {
    char path[64];
    perf_map_name(path, sizeof path);
    fd = ::open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return error_from_errno(errno);
    owner = ::getpid();
  }
  while (len > 0) {
    const ssize_t w = ::write(fd, text, len);
    if (w < 0) {
      if (errno == EINTR) continue;
      return error_from_errno(errno);
    }
    text += w;
    len -= static_cast<std::size_t>(w);
  }
  return {};
}

// --- what pal/common.cpp builds on -------------------------------------------

const char* const kOsErrorName = "errno";

std::ptrdiff_t write_stderr_some(const char* s, std::size_t len) noexcept {
  const ssize_t w = ::write(2, s, len);
  if (w < 0 && errno == EINTR) return 0;
  return w > 0 ? w : -1;
}

#if WXA_HAVE_MIMALLOC
namespace {
// mimalloc's functions for giving memory back, from the same handle.
struct MiCollect {
  void (*collect)(bool) = nullptr;
  long (*option_get)(int) = nullptr;
  void (*option_set)(int, long) = nullptr;
};
MiCollect g_mi_collect;

// mimalloc gives free pages back only once they have been free for a while
// (its decommit delays), even when forced to collect: the delays are lifted
// for the collection.
void mi_collect_now() {
  const MiCollect& m = g_mi_collect;
  static constexpr int kDelays[] = {mi_option_decommit_delay,
                                    mi_option_segment_decommit_delay};
  long saved[2] = {};
  const bool options = m.option_get && m.option_set;
  if (options)
    for (int k = 0; k < 2; ++k) {
      saved[k] = m.option_get(kDelays[k]);
      m.option_set(kDelays[k], 0);
    }
  m.collect(true);
  if (options)
    for (int k = 0; k < 2; ++k) m.option_set(kDelays[k], saved[k]);
}
}  // namespace
#endif

const MetaFunctions& loaded_meta_functions() noexcept {
  static const MetaFunctions f = [] {
    MetaFunctions r;
#if WXA_HAVE_MIMALLOC
    // RTLD_LOCAL keeps the library's malloc/free out of the global symbol
    // scope, so the host's malloc is not replaced; only mi_* are used.
    void* h = ::dlopen(WXA_MIMALLOC_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (h) {
      r.malloc =
          reinterpret_cast<void* (*)(std::size_t)>(::dlsym(h, "mi_malloc"));
      r.calloc = reinterpret_cast<void* (*)(std::size_t, std::size_t)>(
          ::dlsym(h, "mi_calloc"));
      r.free = reinterpret_cast<void (*)(void*)>(::dlsym(h, "mi_free"));
      g_mi_collect.collect =
          reinterpret_cast<void (*)(bool)>(::dlsym(h, "mi_collect"));
      g_mi_collect.option_get =
          reinterpret_cast<long (*)(int)>(::dlsym(h, "mi_option_get"));
      g_mi_collect.option_set =
          reinterpret_cast<void (*)(int, long)>(::dlsym(h, "mi_option_set"));
      if (g_mi_collect.collect) r.collect = mi_collect_now;
      if (!r.malloc || !r.calloc || !r.free) r = MetaFunctions{};
    }
#endif
    return r;
  }();
  return f;
}

}  // namespace wxa::detail
