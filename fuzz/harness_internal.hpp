// SPDX-License-Identifier: MIT
// What the transition fuzzers' harness files share: the input, the reference
// model's types, and the Harness class whose parts they define.
//
// The files, one per part of the harness:
//   input.cpp      picking addresses and sizes from the input
//   model.cpp      the model's verdicts, and the injected faults
//   checks.cpp     the kernel's view, and the model compared with the arena
//   arena_ops.cpp  operations on arenas and batches
//   heap_ops.cpp   operations on CodeHeaps
//   harness.cpp    failure reporting and the run loop (harness.hpp)
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "harness.hpp"
#include "pal/pal.hpp"
#include "support/fault_pal.hpp"
#include "support/native_code.hpp"
#include "wxarena/arena.hpp"
#include "wxarena/code_heap.hpp"

namespace wxa::fuzz::harness {

using wxa::Access;
using wxa::Arena;
using wxa::Backend;
using wxa::Batch;
using wxa::Chunk;
using wxa::CodeHeap;
using wxa::CommitFlags;
using wxa::Errc;
using wxa::Error;
using wxa::Options;
using wxa::Result;
using wxa::State;
using wxa::test::FaultPal;
using wxa::test::PalCall;

// --- Failure reporting (harness.cpp) ---------------------------------------

extern std::string
    g_trace;  // the current input's operations, printed on failure
extern Platform* g_platform;  // the platform of the current input
extern bool g_record;
extern bool g_unmap_failed;  // an injected failure hit an unmap
extern std::vector<std::string> g_transcript;

// Adds a line to the transcript (when one is recorded).
__attribute__((format(printf, 1, 2))) void record(const char* fmt, ...);
// Adds a line to the trace (when the platform keeps one).
__attribute__((format(printf, 1, 2))) void note(const char* fmt, ...);

// --- Names in the trace and the transcript --------------------------------

inline const char* id(Errc e) {
  static const char* const k[] = {"ok",
                                  "invalid_argument",
                                  "null_pointer",
                                  "foreign_pointer",
                                  "interior_pointer",
                                  "not_allocated",
                                  "double_release",
                                  "illegal_transition",
                                  "duplicate_in_batch",
                                  "zero_size",
                                  "size_too_large",
                                  "bad_alignment",
                                  "exhausted",
                                  "vma_budget",
                                  "unreachable_anchor",
                                  "out_of_memory",
                                  "permission_denied",
                                  "not_supported",
                                  "os_error",
                                  "wrong_process",
                                  "out_of_bounds"};
  const auto i = static_cast<std::size_t>(e);
  return i < std::size(k) ? k[i] : "?";
}

inline const char* id(State s) {
  static const char* const k[] = {"free", "writable", "executable", "read_only",
                                  "retired"};
  const auto i = static_cast<std::size_t>(s);
  return i < std::size(k) ? k[i] : "?";
}

inline const char* id(Access a) {
  static const char* const k[] = {"---", "r--", "rw-", "r-x"};
  const auto i = static_cast<std::size_t>(a);
  return i < std::size(k) ? k[i] : "???";
}

inline unsigned long ul(std::uintptr_t v) {
  return static_cast<unsigned long>(v);
}
inline std::uintptr_t addr(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p);
}
inline const void* ptr(std::uintptr_t a) {
  return reinterpret_cast<const void*>(a);
}

// --- Input -----------------------------------------------------------------

// Bytes taken from the front; zeros once the input is used up.
class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size)
      : p_(data), end_(data + size) {}
  [[nodiscard]] bool empty() const { return p_ == end_; }
  std::uint8_t u8() { return p_ < end_ ? *p_++ : 0; }
  std::uint16_t u16() {
    const unsigned lo = u8();
    return static_cast<std::uint16_t>(lo | (unsigned{u8()} << 8));
  }
  std::uint32_t u32() {
    const std::uint32_t lo = u16();
    return lo | (std::uint32_t{u16()} << 16);
  }
  // A number below n (0 if n is 0), from one byte if n fits, else two.
  std::size_t below(std::size_t n) {
    if (n == 0) return 0;
    return (n <= 256 ? u8() : u16()) % n;
  }

 private:
  const std::uint8_t* p_;
  const std::uint8_t* end_;
};

// --- The kernel's view and fresh memory (checks.cpp) -----------------------

// The process's mappings, from the platform (one buffer reused).
const std::vector<Vma>& read_maps();
// Descriptors open in the process.
std::size_t count_fds();
// The first byte of fresh memory (page-aligned) that is neither zero nor the
// trap fill; out.size() if none. Eight bytes at a time: a byte loop cost a
// third of the simulated target's time.
std::size_t first_stale(std::span<const std::byte> out);

// --- The reference model ---------------------------------------------------

enum class Kind : std::uint8_t {
  seal_execute,
  seal_read_only,
  unseal,
  release
};

inline const char* id(Kind k) {
  static const char* const n[] = {"seal_execute", "seal_read_only", "unseal",
                                  "release"};
  return n[static_cast<int>(k)];
}

inline State target(Kind k) {
  switch (k) {
    case Kind::seal_execute:
      return State::executable;
    case Kind::seal_read_only:
      return State::read_only;
    case Kind::unseal:
      return State::writable;
    case Kind::release:
      return State::retired;
  }
  return State::free;
}

// A chunk the model knows of: live, or retired and not yet seen recycled.
struct ChunkM {
  std::size_t pages = 0;
  std::byte* rw = nullptr;  // the writable view, while writable
  State state = State::writable;
  bool heap = false;     // a CodeHeap's page: arena operations leave it be
  bool written = false;  // holds `mov eax, value; ret` at offset 0
  std::uint32_t value = 0;
  std::uint64_t seq = 0;        // release order, while retired
  std::uint64_t alloc_seq = 0;  // the arena's allocations when released
};

// One CodeHeap function, by offset in its page.
struct FnM {
  std::size_t size = 0;
  std::uint32_t value = 0;
  bool callable = false;  // big enough to hold the function
  bool dead = false;
  // kernel_write: appended to the sealed tail page and not yet published;
  // written at `rw` (the heap's shadow page), traps in the code view.
  bool appended = false;
  const std::byte* rw = nullptr;
};

// One chunk the CodeHeap holds.
struct HeapPageM {
  std::size_t pages = 0;
  std::uint64_t made = 0;  // the heap's pages in the order it made them
  bool sealed = false;
  std::size_t live = 0;
  std::map<std::size_t, FnM> fns;
};

struct Slot {
  std::unique_ptr<FaultPal> pal = std::make_unique<FaultPal>(g_platform->pal());
  std::optional<Arena> arena;
  std::optional<CodeHeap> heap;
  Options options;
  std::size_t heap_alignment = 16;
  // The model: chunks by rx address, the heap's chunks, the release count.
  std::map<std::uintptr_t, ChunkM> chunks;
  std::map<std::uintptr_t, HeapPageM> heap_pages;
  // Single-page chunks the heap took ahead of need (its reserve); in
  // `chunks` too, as writable heap chunks.
  std::set<std::uintptr_t> heap_reserve;
  // The page small functions go to (the heap's last): on kernel_write it
  // takes new functions after its seal too.
  std::uintptr_t heap_tail = 0;
  std::uint64_t heap_pages_made = 0;
  std::uint64_t released = 0;
  std::uintptr_t rx_base = 0, rw_base = 0;
  std::size_t rw_bytes = 0;  // kernel_write: the staging pool's size
  std::size_t pages = 0;
  bool dual = false;     // two views: dual_map, kernel_write (rw() staging)
  bool kw = false;       // kernel_write
  bool barrier = false;  // CommitFlags::barrier can be honoured
  // kernel_write's lanes (Options::lanes): pages per lane, 0 for one lane.
  // A lane is a memfd of its own: mapped pages on both sides of a lane
  // edge are two VMAs.
  std::size_t lane_pages = 0;
  // The arena's runs() since its last change (the harness reads them
  // several times an operation; each call walks every page).
  std::vector<wxa::RunInfo> runs;
  bool runs_fresh = false;
  // An injected failure for the next operation on this slot.
  std::size_t fault_k = 0;
  int fault_errno = 0;
};

// What an armed FaultPal did during one operation.
struct Fault {
  bool fired = false;
  PalCall call = PalCall::reserve;
  Errc code = Errc::ok;
};

// The outcome the model predicts for one transition.
struct Verdict {
  Errc code = Errc::ok;
  const void* chunk = nullptr;  // what Error::chunk() must name
  std::uintptr_t head = 0;      // the chunk, when code is ok
};

// Where an address falls in a slot.
struct Where {
  bool inside = false;
  bool in_rx = false;
  std::size_t page = 0;
};

class Harness {
 public:
  Harness(const std::uint8_t* data, std::size_t size) : in_(data, size) {}
  void run();

 private:
  // --- model queries (model.cpp)
  [[nodiscard]] Where locate(const Slot& s, const void* p, bool either) const;
  [[nodiscard]] std::map<std::uintptr_t, ChunkM>::iterator chunk_at_page(
      Slot& s, std::size_t page);
  // Where the bytes at `rx` are written: the same address (protect), the
  // writable view at the same offset (dual_map), or the staging memory the
  // arena gave the chunk (kernel_write: as the model recorded it; 0 if the
  // chunk has none).
  [[nodiscard]] std::uintptr_t view(const Slot& s, std::uintptr_t rx) const {
    if (s.kw) {
      auto it = s.chunks.upper_bound(rx);
      if (it == s.chunks.begin()) return 0;
      --it;
      return it->second.rw ? addr(it->second.rw) + (rx - it->first) : 0;
    }
    return s.dual ? s.rw_base + (rx - s.rx_base) : rx;
  }
  // kernel_write: after a commit, free staging pages go back with one
  // MADV_DONTNEED, best effort (refused, they stay counted as resident):
  // a commit that succeeded may have seen that call fail.
  [[nodiscard]] static bool settling(const Slot& s, const Fault& f) {
    return s.kw && f.fired && f.call == PalCall::decommit;
  }
  // kernel_write: `p` lies in the staging pool.
  [[nodiscard]] bool in_staging(const Slot& s, const void* p) const {
    return s.kw && addr(p) >= s.rw_base && addr(p) - s.rw_base < s.rw_bytes;
  }
  // kernel_write: the longest run of staging pages no writable chunk holds
  // (a chunk is staged in one piece of the bounded pool).
  [[nodiscard]] std::size_t staging_room(const Slot& s) const {
    std::vector<bool> held(s.rw_bytes / ps_, false);
    for (const auto& [rx, c] : s.chunks)
      if (c.state == State::writable && c.rw)
        for (std::size_t i = 0; i < c.pages; ++i)
          held[(addr(c.rw) - s.rw_base) / ps_ + i] = true;
    std::size_t best = 0, run = 0;
    for (const bool h : held) {
      run = h ? 0 : run + 1;
      best = std::max(best, run);
    }
    return best;
  }
  // Past the quarantine: `quarantine` later releases, or allocations (the
  // arena's own count; `allocations` is taken when the question arises).
  [[nodiscard]] static bool eligible(const Slot& s, const ChunkM& c,
                                     std::uint64_t allocations) {
    return c.state == State::retired &&
           (s.released - c.seq >= s.options.quarantine ||
            allocations - c.alloc_seq >= s.options.quarantine);
  }
  [[nodiscard]] static std::uint64_t allocations(const Slot& s) {
    return s.arena->stats().allocations;
  }
  [[nodiscard]] Verdict validate(Slot& s, const void* p, Kind kind);
  // runs(), read again after any call that may change the arena: every
  // such call is made between arm() and disarm(), or creates or destroys
  // the arena or its heap, which call stale().
  static const std::vector<wxa::RunInfo>& runs_of(Slot& s) {
    if (!s.runs_fresh) {
      s.runs = s.arena->runs();
      s.runs_fresh = true;
    }
    return s.runs;
  }
  static void stale(Slot& s) { s.runs_fresh = false; }
  [[nodiscard]] Access want_rx(const Slot& s, State st, bool open) const;
  [[nodiscard]] Access want_rw(const Slot& s, State st, bool open) const;

  // --- faults (model.cpp)
  void arm(Slot& s);
  Fault disarm(Slot& s);
  bool judge(const char* what, const Error& got, const Verdict& want,
             bool may_exhaust, bool may_vma, const Fault& f, bool swallow_ok);

  // --- picking (input.cpp)
  const void* pick_address(Slot& s);
  const void* pick_heap_address(Slot& s);
  std::size_t pick_size(const Slot& s);
  void remember(std::uintptr_t a);

  // --- checks (checks.cpp)
  void verify(Slot& s);
  void kernel_check();
  // Forgets retired chunks the arena made free: those past the quarantine,
  // or, after trim(), any.
  void sync_recycled(Slot& s, bool trimmed = false);
  void retire(Slot& s, const std::vector<std::uintptr_t>& heads);
  void take_pages(Slot& s, std::uintptr_t rx, std::size_t pages);

  // --- operations on arenas (arena_ops.cpp)
  Slot& need_arena(Slot& s);
  bool create(Slot& s, const Options& o, bool use_fault);
  void op_create(Slot& s);
  void op_allocate(Slot& s);
  void op_write(Slot& s);
  void op_single(Slot& s, Kind kind);
  void op_batch(Slot& s);
  void op_find(Slot& s);
  void op_patch(Slot& s);
  void record_final(Slot& s);
  void op_trim(Slot& s);
  void op_arm(Slot& s);
  void op_destroy(Slot& s);
  void destroy_arena(Slot& s);

  // --- operations on CodeHeaps (heap_ops.cpp)
  CodeHeap& need_heap(Slot& s);
  void op_heap_create(Slot& s);
  void op_heap_allocate(Slot& s);
  void op_heap_publish(Slot& s);
  void op_heap_release(Slot& s);
  void destroy_heap(Slot& s);
  void sync_reserve(Slot& s);

  Input in_;
  Slot slots_[2];
  std::size_t ps_ = g_platform->pal().capabilities().page_size;
  std::vector<std::uintptr_t> stale_;
  std::vector<State> scratch_lib_, scratch_want_;  // verify()'s page maps
  std::size_t stale_next_ = 0;
};

}  // namespace wxa::fuzz::harness
