// SPDX-License-Identifier: MIT
// The two textbook baselines: mmap + mprotect + munmap per function, and a
// heap allocation rounded to pages flipped with mprotect (the common
// anti-pattern), with mimalloc loaded privately so it never replaces malloc.
#include <dlfcn.h>
#include <mimalloc.h>  // option names only: never linked
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "bench_config.h"
#include "maps.hpp"
#include "strategy.hpp"

namespace wxb {

std::string errno_message(const char* what, int err) {
  return std::string(what) + ": " + std::strerror(err) + " (errno " +
         std::to_string(err) + ")";
}

const char* to_string(Wx wx) noexcept {
  switch (wx) {
    case Wx::strict:
      return "strict";
    case Wx::alias:
      return "alias";
    case Wx::none:
      break;
  }
  return "no";
}

std::unique_ptr<Shared> no_shared(const Request&, std::string&) {
  return std::make_unique<Shared>();
}

namespace {

std::size_t page_size() {
  static const std::size_t size = [] {
    const long n = ::sysconf(_SC_PAGESIZE);
    return n > 0 ? static_cast<std::size_t>(n) : std::size_t{4096};
  }();
  return size;
}

std::size_t round_to_pages(std::size_t n) {
  const std::size_t p = page_size();
  return (n + p - 1) / p * p;
}

// A mapping call failed. ENOMEM from mmap / mprotect with thousands of
// functions live is the kernel's VMA limit, a result worth reporting (the
// textbook recipes cannot hold that many functions), not a benchmark bug;
// EACCES / EPERM is a policy refusing executable memory.
std::string map_error(const char* what, int err, std::size_t live) {
  std::string message = errno_message(what, err);
  if (err == EACCES || err == EPERM)
    return std::string(kRefusedPrefix) + message + " (a W^X policy)";
  if (err != ENOMEM) return message;
  long limit = -1;
  if (std::FILE* f = std::fopen("/proc/sys/vm/max_map_count", "r")) {
    if (std::fscanf(f, "%ld", &limit) != 1) limit = -1;
    (void)std::fclose(f);  // read-only: nothing to lose
  }
  return std::string(kRefusedPrefix) + message + " with " +
         std::to_string(live) +
         " functions live: the VMA limit (vm.max_map_count = " +
         std::to_string(limit) + ")";
}

// naive_mmap: one private mapping per function.
class NaiveMmap final : public Strategy {
 public:
  NaiveMmap() : baseline_(maps::count_all()) {}

  bool allocate(std::size_t size, Slot& slot) override {
    const std::size_t len = round_to_pages(size);
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ++own_.mmap;
    if (p == MAP_FAILED) return fail(map_error("mmap", errno, live_));
    slot = {static_cast<std::byte*>(p), p, size, len};
    committed_ += len;
    ++live_;
    return true;
  }
  bool publish(std::span<Slot> slots) override {
    for (Slot& s : slots) {
      ++own_.mprotect;
      if (::mprotect(s.rw, s.tag, PROT_READ | PROT_EXEC) != 0)
        return fail(map_error("mprotect RX", errno, live_));
    }
    return true;
  }
  bool release(std::span<const Slot> slots) override {
    for (const Slot& s : slots) {
      ++own_.munmap;
      if (::munmap(s.rw, s.tag) != 0)
        return fail(errno_message("munmap", errno));
      committed_ -= s.tag;
      --live_;
    }
    return true;
  }
  Footprint footprint() override {
    // Every mapping this strategy makes is its own line, so the growth of
    // /proc/self/maps since it was created is exactly its VMAs.
    Footprint f;
    const long now = maps::count_all();
    if (now >= 0 && baseline_ >= 0) f.vmas = now - baseline_;
    f.committed_bytes = static_cast<double>(committed_);
    return f;
  }
  bool own_syscalls(SyscallCounts& out) override {
    out = own_;
    return true;
  }

 private:
  long baseline_;
  std::size_t committed_ = 0, live_ = 0;
  SyscallCounts own_;
};

// mimalloc, loaded once without linking it: Debian's libmimalloc exports
// malloc/free, and linking it would replace the process's allocator.
//
// It is loaded into a namespace of its own (dlmopen LM_ID_NEWLM), apart from
// the copy wxarena keeps its metadata in, and told to commit segments eagerly
// and never decommit. Without that, mimalloc commits a range by mprotect'ing
// the whole range read-write (mi_os_commitx in mimalloc 2.0), including
// pages already handed out and since made executable: live code becomes
// non-executable and the next call faults. This benchmark crashed that way.
// It is the hazard of this anti-pattern: the allocator owns the protection
// of its memory too.
struct Mimalloc {
  void* (*malloc_aligned)(std::size_t, std::size_t) = nullptr;
  void (*free)(void*) = nullptr;
  std::string error;

  static const Mimalloc& get() {
    static const Mimalloc m = [] {
      Mimalloc r;
      // Never dlclose'd: blocks it handed out may outlive any one strategy.
      void* h =
          ::dlmopen(LM_ID_NEWLM, WXB_MIMALLOC_SONAME, RTLD_NOW | RTLD_LOCAL);
      if (h == nullptr) {
        const char* e = ::dlerror();
        r.error = std::string("dlmopen " WXB_MIMALLOC_SONAME ": ") +
                  (e ? e : "unknown error");
        return r;
      }
      auto set = reinterpret_cast<void (*)(mi_option_t, long)>(
          ::dlsym(h, "mi_option_set"));
      r.malloc_aligned = reinterpret_cast<void* (*)(std::size_t, std::size_t)>(
          ::dlsym(h, "mi_malloc_aligned"));
      r.free = reinterpret_cast<void (*)(void*)>(::dlsym(h, "mi_free"));
      if (set == nullptr || r.malloc_aligned == nullptr || r.free == nullptr) {
        r.error = "dlsym mi_option_set / mi_malloc_aligned / mi_free failed";
        return r;
      }
      set(mi_option_eager_commit, 1);
      set(mi_option_eager_commit_delay, 0);
      set(mi_option_allow_decommit, 0);
      set(mi_option_page_reset, 0);
      return r;
    }();
    return m;
  }
};

// malloc_mprotect: page-aligned, page-rounded heap blocks, so that no other
// allocation shares a page that is flipped to RX.
class MallocMprotect final : public Strategy {
 public:
  explicit MallocMprotect(const Mimalloc& mi)
      : mi_(mi), baseline_(maps::count_all()) {}

  bool allocate(std::size_t size, Slot& slot) override {
    const std::size_t len = round_to_pages(size);
    void* p = mi_.malloc_aligned(len, page_size());
    if (p == nullptr) return fail("mi_malloc_aligned returned null");
    slot = {static_cast<std::byte*>(p), p, size, len};
    committed_ += len;
    ++live_;
    return true;
  }
  bool publish(std::span<Slot> slots) override {
    for (Slot& s : slots) {
      if (::mprotect(s.rw, s.tag, PROT_READ | PROT_EXEC) != 0)
        return fail(map_error("mprotect RX", errno, live_));
    }
    return true;
  }
  bool release(std::span<const Slot> slots) override {
    for (const Slot& s : slots) {
      if (::mprotect(s.rw, s.tag, PROT_READ | PROT_WRITE) != 0)
        return fail(map_error("mprotect RW", errno, live_));
      mi_.free(s.rw);
      committed_ -= s.tag;
      --live_;
    }
    return true;
  }
  Footprint footprint() override {
    // The pieces mprotect splits off mimalloc's segments are not all
    // covered by live blocks, so count the growth of /proc/self/maps since
    // the strategy was created (mimalloc's own segments included).
    Footprint f;
    const long now = maps::count_all();
    if (now >= 0 && baseline_ >= 0) f.vmas = now - baseline_;
    f.committed_bytes = static_cast<double>(committed_);  // pages asked for
    return f;
  }
  // No own_syscalls(): mimalloc's own mmap / madvise calls are not seen
  // from here, so only the system-wide counter can count this strategy.

 private:
  const Mimalloc& mi_;
  long baseline_;
  std::size_t committed_ = 0, live_ = 0;
};

}  // namespace

void add_baseline_strategies(std::vector<Factory>& out) {
  out.push_back(
      {"naive_mmap", no_shared,
       [](Shared*, const Request&, std::string&) -> std::unique_ptr<Strategy> {
         return std::make_unique<NaiveMmap>();
       }});
#if WXB_HAVE_MIMALLOC
  out.push_back({"malloc_mprotect", no_shared,
                 [](Shared*, const Request&,
                    std::string& error) -> std::unique_ptr<Strategy> {
                   const Mimalloc& mi = Mimalloc::get();
                   if (!mi.error.empty()) {
                     error = mi.error;
                     return nullptr;
                   }
                   return std::make_unique<MallocMprotect>(mi);
                 }});
#endif
}

}  // namespace wxb
