// SPDX-License-Identifier: MIT
// Fuzzes the permission transitions of arenas, batches and code heaps against
// a reference model of what every operation must do: the decoder and the
// model, shared by both transition fuzzers.
//
// The input is decoded into operations (create an arena, allocate, write,
// seal, unseal, release, a batch, CodeHeap allocate / publish / release, find,
// trim, arm an injected platform failure, destroy) on up to two arenas, each
// on its own FaultPal. After every operation the harness checks the result
// (success, or the exact Errc and the chunk it names) against the model, the
// arena's state map and stats against the model, and every live chunk's
// contents: executable code is called and must return the value written into
// it. Every few operations it checks the kernel too: no writable+executable
// mapping anywhere in the process, and every page of every arena view has
// exactly the protection the arena's runs() claims. Where the model cannot
// predict the answer (exhausted, vma_budget, an injected fault) it accepts
// the library's error and then requires that nothing changed.
//
// The kernel's view (mappings, descriptors, running code) comes from a
// Platform (harness.hpp): the real one in fuzz_transitions.cpp, a simulated
// one in fuzz_transitions_sim.cpp.
#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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

namespace wxa::fuzz {
namespace {

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

constexpr std::size_t kMaxOps = 200;   // operations decoded per input
constexpr std::size_t kMaxStale = 64;  // remembered old addresses

// API declared on main but not implemented yet. The model expects what the
// library does today; flip each flag when its implementation lands (and
// check the model's guesses marked "kernel_write:").
// false: Arena::create refuses Backend::kernel_write with invalid_argument,
// and Backend::automatic never picks it.
constexpr bool kKernelWriteLanded = true;
// false: Arena::patch returns not_supported (no chunk) for every input.
constexpr bool kPatchLanded = true;

// --- Failure reporting -----------------------------------------------------

std::string g_trace;  // the current input's operations, printed on failure
Platform* g_platform = nullptr;  // the platform of the current input
bool g_record = false;
bool g_unmap_failed = false;  // an injected failure hit an unmap
std::vector<std::string> g_transcript;

// Adds a line to the transcript (when one is recorded).
__attribute__((format(printf, 1, 2))) void record(const char* fmt, ...) {
  if (!g_record) return;
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  g_transcript.emplace_back(buf);
}

__attribute__((format(printf, 1, 2))) void note(const char* fmt, ...) {
  if (!g_platform->notes()) return;
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  g_trace += buf;
  g_trace += '\n';
}

}  // namespace

// A mismatch is a finding: print the operations that led to it and abort, so
// that libFuzzer keeps the input and the replay test fails.
void mismatch(const char* fmt, ...) {
  if (g_platform && !g_platform->notes())
    std::fprintf(stderr,
                 "wxa-fuzz: replay this input with WXA_FUZZ_TRACE=1 for its "
                 "operations\n");
  else
    std::fprintf(stderr, "wxa-fuzz: operations of this input:\n%s",
                 g_trace.c_str());
  std::fprintf(stderr, "wxa-fuzz: MISMATCH: ");
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
  std::abort();
}

namespace {

const char* id(Errc e) {
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

const char* id(State s) {
  static const char* const k[] = {"free", "writable", "executable", "read_only",
                                  "retired"};
  const auto i = static_cast<std::size_t>(s);
  return i < std::size(k) ? k[i] : "?";
}

const char* id(Access a) {
  static const char* const k[] = {"---", "r--", "rw-", "r-x"};
  const auto i = static_cast<std::size_t>(a);
  return i < std::size(k) ? k[i] : "???";
}

unsigned long ul(std::uintptr_t v) { return static_cast<unsigned long>(v); }
std::uintptr_t addr(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p);
}
const void* ptr(std::uintptr_t a) { return reinterpret_cast<const void*>(a); }

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

// --- The kernel's view -----------------------------------------------------

// One buffer reused: a simulated platform is audited often.
const std::vector<Vma>& read_maps() {
  static std::vector<Vma> out;
  g_platform->maps(out);
  return out;
}

bool maps_exact() { return g_platform->maps_exact(); }

std::size_t count_fds() { return g_platform->handles(); }

// `perms` shows `want`; where maps_exact() is false, r-- and r-x are one
// class (readable, not writable: the W^X check stays exact).
bool shows(const char* perms, Access want) {
  if (std::strncmp(perms, id(want), 3) == 0) return true;
  const bool readonly = want == Access::read || want == Access::read_execute;
  return !maps_exact() && readonly && perms[0] == 'r' && perms[1] != 'w';
}

// Every byte of [b, e) is mapped with exactly `want`.
void expect_protection(const std::vector<Vma>& maps, std::uintptr_t b,
                       std::uintptr_t e, Access want, const char* view) {
  auto it = std::lower_bound(
      maps.begin(), maps.end(), b,
      [](const Vma& v, std::uintptr_t x) { return v.end <= x; });
  std::uintptr_t at = b;
  while (at < e) {
    expect(it != maps.end() && it->begin <= at,
           "kernel: %s page %#lx is unmapped; runs() says %s", view, ul(at),
           id(want));
    expect(shows(it->perms, want),
           "kernel: %s page %#lx is %.3s; runs() says %s", view, ul(at),
           it->perms, id(want));
    at = it->end;
    ++it;
  }
}

// Mappings intersecting [b, e), counting neighbours with the same
// protection once. The kernel does not always merge those: a placeholder
// merged with another reservation's neighbouring placeholder brings that
// one's anon_vma along, and later mprotect()s cannot merge across the
// difference. The arena's count assumes merging, so only merged runs are
// compared with it.
std::size_t count_vmas(const std::vector<Vma>& maps, std::uintptr_t b,
                       std::uintptr_t e) {
  std::size_t n = 0;
  const Vma* prev = nullptr;
  for (const Vma& v : maps) {
    if (!(v.begin < e && b < v.end)) continue;
    n += !(prev && prev->end == v.begin &&
           std::strncmp(prev->perms, v.perms, 4) == 0);
    prev = &v;
  }
  return n;
}

// --- The reference model ---------------------------------------------------

enum class Kind : std::uint8_t {
  seal_execute,
  seal_read_only,
  unseal,
  release
};

const char* id(Kind k) {
  static const char* const n[] = {"seal_execute", "seal_read_only", "unseal",
                                  "release"};
  return n[static_cast<int>(k)];
}

State target(Kind k) {
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
};

// One chunk the CodeHeap holds.
struct HeapPageM {
  std::size_t pages = 0;
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
  std::uint64_t released = 0;
  std::uintptr_t rx_base = 0, rw_base = 0;
  std::size_t pages = 0;
  bool dual = false;  // two views: dual_map, kernel_write (rw() staging)
  bool kw = false;    // kernel_write
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
  // --- model queries
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
  // kernel_write: `p` lies in the staging reservation.
  [[nodiscard]] bool in_staging(const Slot& s, const void* p) const {
    return s.kw && addr(p) >= s.rw_base &&
           addr(p) - s.rw_base < 2 * s.pages * ps_;  // pool and mirror
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

  // --- faults
  void arm(Slot& s);
  Fault disarm(Slot& s);
  bool judge(const char* what, const Error& got, const Verdict& want,
             bool may_exhaust, bool may_vma, const Fault& f, bool swallow_ok);

  // --- picking
  const void* pick_address(Slot& s);
  const void* pick_heap_address(Slot& s);
  std::size_t pick_size(const Slot& s);
  void remember(std::uintptr_t a);

  // --- checks
  void verify(Slot& s);
  void kernel_check();
  void sync_recycled(Slot& s);
  void retire(Slot& s, const std::vector<std::uintptr_t>& heads);
  void take_pages(Slot& s, std::uintptr_t rx, std::size_t pages);

  // --- operations
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
  CodeHeap& need_heap(Slot& s);
  void op_heap_create(Slot& s);
  void op_heap_allocate(Slot& s);
  void op_heap_publish(Slot& s);
  void op_heap_release(Slot& s);
  void destroy_heap(Slot& s);
  void sync_reserve(Slot& s);
  void destroy_arena(Slot& s);

  Input in_;
  Slot slots_[2];
  std::size_t ps_ = g_platform->pal().capabilities().page_size;
  std::vector<std::uintptr_t> stale_;
  std::vector<State> scratch_lib_, scratch_want_;  // verify()'s page maps
  std::size_t stale_next_ = 0;
};

Where Harness::locate(const Slot& s, const void* p, bool either) const {
  const std::uintptr_t u = addr(p), bytes = s.pages * ps_;
  if (u >= s.rx_base && u - s.rx_base < bytes)
    return {true, true, (u - s.rx_base) / ps_};
  if (either && s.kw && u >= s.rw_base && u - s.rw_base < 2 * bytes) {
    // Staging memory: the page of the writable chunk staged there, or no
    // chunk (inside the arena all the same: not_allocated).
    for (const auto& [rx, c] : s.chunks)
      if (c.rw && u >= addr(c.rw) && u - addr(c.rw) < c.pages * ps_)
        return {true, false, (rx - s.rx_base) / ps_ + (u - addr(c.rw)) / ps_};
    return {true, false, s.pages};  // no page: no chunk
  }
  if (either && s.dual && u >= s.rw_base && u - s.rw_base < bytes)
    return {true, false, (u - s.rw_base) / ps_};
  return {};
}

std::map<std::uintptr_t, ChunkM>::iterator Harness::chunk_at_page(
    Slot& s, std::size_t page) {
  const std::uintptr_t a = s.rx_base + page * ps_;
  auto it = s.chunks.upper_bound(a);
  if (it == s.chunks.begin()) return s.chunks.end();
  --it;
  return a < it->first + it->second.pages * ps_ ? it : s.chunks.end();
}

// The rules of src/batch.cpp's validate(), from the header's contract.
Verdict Harness::validate(Slot& s, const void* p, Kind kind) {
  if (!p) return {Errc::null_pointer, nullptr, 0};
  const Where w = locate(s, p, false);
  if (!w.inside) return {Errc::foreign_pointer, p, 0};
  auto it = chunk_at_page(s, w.page);
  if (it == s.chunks.end()) return {Errc::not_allocated, p, 0};
  if (addr(p) != it->first) return {Errc::interior_pointer, p, 0};
  const State st = it->second.state;
  switch (kind) {
    case Kind::seal_execute:
    case Kind::seal_read_only:
      if (st != State::writable) return {Errc::illegal_transition, p, 0};
      break;
    case Kind::unseal:
      if (st != State::executable && st != State::read_only)
        return {Errc::illegal_transition, p, 0};
      break;
    case Kind::release:
      if (st == State::retired) return {Errc::double_release, p, 0};
      break;
  }
  return {Errc::ok, nullptr, it->first};
}

Access Harness::want_rx(const Slot& s, State st, bool open) const {
  // kernel_write: the code's memfd is mapped read+execute once and never
  // changes; retired code is overwritten with traps, not unmapped.
  if (s.kw)
    return st == State::read_only       ? Access::read
           : st == State::free && !open ? Access::none
                                        : Access::read_execute;
  switch (st) {
    case State::executable:
      return Access::read_execute;
    case State::read_only:
      return Access::read;
    case State::writable:
      return s.dual ? Access::none : Access::read_write;
    case State::free:
      return !s.dual && open ? Access::read_write : Access::none;
    case State::retired:
      return Access::none;
  }
  return Access::none;
}

Access Harness::want_rw(const Slot& s, State st, bool open) const {
  if (s.kw) return Access::none;  // no writable view of the code at all
  if (!s.dual) return want_rx(s, st, open);
  return st == State::writable || (st == State::free && open)
             ? Access::read_write
             : Access::none;
}

// --- Faults ----------------------------------------------------------------

void Harness::arm(Slot& s) {
  stale(s);
  s.pal->reset_counts();
  if (s.fault_k)
    s.pal->arm(s.fault_k, s.fault_errno, wxa::test::kAllSyscalls);
  else
    s.pal->count_only(wxa::test::kAllSyscalls);
}

Fault Harness::disarm(Slot& s) {
  stale(s);
  Fault f;
  if (s.fault_k && s.pal->fired()) {
    f.fired = true;
    f.code = wxa::detail::error_from_errno(s.fault_errno).code();
    for (const wxa::test::PalEvent& e : s.pal->log())
      if (e.failed) {
        f.call = e.call;
        break;
      }
    g_unmap_failed |= f.call == PalCall::unmap;
    note("  (injected errno %d into %.*s)", s.fault_errno,
         static_cast<int>(wxa::test::to_string(f.call).size()),
         wxa::test::to_string(f.call).data());
  }
  s.fault_k = 0;
  s.pal->disarm();
  s.pal->reset_counts();
  return f;
}

// Compares one result with the model's verdict; true if the operation is to
// be applied to the model (it succeeded).
bool Harness::judge(const char* what, const Error& got, const Verdict& want,
                    bool may_exhaust, bool may_vma, const Fault& f,
                    bool swallow_ok) {
  const bool ok = got.code() == Errc::ok;
  if (!ok) note("  -> %s", id(got.code()));
  record("%s -> %s%s%.*s", what, id(got.code()),
         f.fired ? ", injected in " : "",
         f.fired ? static_cast<int>(wxa::test::to_string(f.call).size()) : 0,
         f.fired ? wxa::test::to_string(f.call).data() : "");
  if (want.code != Errc::ok) {
    expect(!ok && got.code() == want.code, "%s: got %s, model says %s", what,
           id(got.code()), id(want.code));
    expect(got.chunk() == want.chunk, "%s: error names chunk %p, not %p", what,
           got.chunk(), want.chunk);
    expect(!f.fired, "%s: a platform call was made before validation", what);
    return false;
  }
  if (ok) {
    expect(!f.fired || swallow_ok,
           "%s: succeeded although a platform call failed", what);
    return true;
  }
  const Errc c = got.code();
  expect((f.fired && c == f.code) || (may_exhaust && c == Errc::exhausted) ||
             (may_vma && c == Errc::vma_budget),
         "%s: got %s, model says ok%s", what, id(c),
         f.fired ? " or the injected error" : "");
  return false;
}

// --- Picking ---------------------------------------------------------------

void Harness::remember(std::uintptr_t a) {
  if (stale_.size() < kMaxStale) {
    stale_.push_back(a);
  } else {
    stale_[stale_next_] = a;
    stale_next_ = (stale_next_ + 1) % kMaxStale;
  }
}

const void* Harness::pick_address(Slot& s) {
  static const char kForeign[16] = {};
  const std::uint8_t sel = in_.u8();
  const std::size_t bytes = s.pages * ps_;
  auto nth = [&](std::size_t i) {
    auto it = s.chunks.begin();
    std::advance(it, static_cast<std::ptrdiff_t>(i));
    return it;
  };
  switch (sel % 8) {
    case 3:  // inside a chunk, not its start
      if (!s.chunks.empty()) {
        auto it = nth(in_.below(s.chunks.size()));
        return ptr(it->first + 1 + in_.below(it->second.pages * ps_ - 1));
      }
      break;
    case 4:  // a chunk's writable view (dual_map), or its start (protect)
      if (!s.chunks.empty()) {
        auto it = nth(in_.below(s.chunks.size()));
        return ptr(view(s, it->first) + (in_.u8() & 1 ? 0 : in_.below(ps_)));
      }
      break;
    case 5:  // any page of the reservation, perhaps not at its start
      return ptr(s.rx_base + in_.below(s.pages) * ps_ +
                 (in_.u8() & 1 ? in_.below(ps_) : 0));
    case 6: {  // outside
      const Slot& other = slots_[&s == &slots_[0] ? 1 : 0];
      switch (in_.u8() % 7) {
        case 0:
          return nullptr;
        case 1:
          return kForeign;
        case 2:
          return this;
        case 3:
          if (other.arena)
            return ptr(other.rx_base + in_.below(other.pages) * ps_);
          return nullptr;
        case 4:
          return ptr(s.rx_base + bytes);
        case 5:
          return ptr(s.rx_base - 1);
        default:
          return ptr(s.rw_base + bytes);
      }
    }
    case 7:  // an address handed out before
      if (!stale_.empty()) return ptr(stale_[in_.below(stale_.size())]);
      break;
    default:
      break;
  }
  if (s.chunks.empty()) return ptr(s.rx_base + in_.below(s.pages) * ps_);
  return ptr(nth(in_.below(s.chunks.size()))->first);
}

std::size_t Harness::pick_size(const Slot& s) {
  const std::uint8_t sel = in_.u8();
  switch (sel % 8) {
    case 0:
      return 1 + in_.below(64);
    case 1:
      return 1 + in_.below(ps_);
    case 2:
      return ps_;
    case 3:
      return ps_ * (1 + in_.below(4)) + in_.below(2);
    case 4:
      return 1 + in_.below(8 * ps_);
    case 5:
      return (sel & 0x80) ? 0 : 1 + in_.below(16) * ps_;
    case 6:
      return s.pages * ps_ + ((sel & 0x80) ? 1 : 0);
    default:
      return (1 + in_.below(16)) * ps_;
  }
}

// --- Checks ----------------------------------------------------------------

// The first byte of fresh memory (page-aligned) that is neither zero nor the
// trap fill; out.size() if none. Eight bytes at a time: a byte loop cost a
// third of the simulated target's time.
std::size_t first_stale(std::span<const std::byte> out) {
  std::byte trap_bytes[8];
  for (std::size_t i = 0; i < 8; ++i)
    trap_bytes[i] = wxa::test::trap_byte_at(i);
  std::uint64_t trap = 0;
  std::memcpy(&trap, trap_bytes, 8);
  std::size_t i = 0;
  for (; i + 8 <= out.size(); i += 8) {
    std::uint64_t w = 0;
    std::memcpy(&w, out.data() + i, 8);
    if (w == 0 || w == trap) continue;
    break;  // mixed or stale: byte by byte from here
  }
  for (; i < out.size(); ++i)
    if (out[i] != std::byte{0} && out[i] != wxa::test::trap_byte_at(i))
      return i;
  return out.size();
}

// Retired chunks past their quarantine may have been recycled by the library
// (allocate, trim): they are then free, which the model accepts.
void Harness::sync_recycled(Slot& s) {
  const std::vector<wxa::RunInfo>& runs = runs_of(s);
  const std::uint64_t allocs = allocations(s);
  for (auto it = s.chunks.begin(); it != s.chunks.end();) {
    if (!eligible(s, it->second, allocs)) {
      ++it;
      continue;
    }
    auto r = std::upper_bound(runs.begin(), runs.end(), it->first,
                              [](std::uintptr_t a, const wxa::RunInfo& run) {
                                return a < addr(run.rx);
                              });
    --r;
    if (r->state != State::retired)
      it = s.chunks.erase(it);
    else
      ++it;
  }
}

// Chunks released by one commit pass the quarantine together (the header's
// Options::quarantine): each counts as a release, and all of them wait until
// `quarantine` releases after the last one, or `quarantine` allocations.
void Harness::retire(Slot& s, const std::vector<std::uintptr_t>& heads) {
  s.released += heads.size();
  const std::uint64_t allocs = allocations(s);
  for (std::uintptr_t h : heads) {
    ChunkM& c = s.chunks.at(h);
    c.state = State::retired;
    c.rw = nullptr;
    c.seq = s.released;
    c.alloc_seq = allocs;
    remember(h);
  }
}

// A new chunk at rx: its pages must have been free or recyclable quarantine.
void Harness::take_pages(Slot& s, std::uintptr_t rx, std::size_t pages) {
  const std::size_t first = (rx - s.rx_base) / ps_;
  // The arena decided before counting the allocation that made this chunk.
  const std::uint64_t allocs = allocations(s) - 1;
  for (std::size_t i = first; i < first + pages; ++i) {
    auto it = chunk_at_page(s, i);
    if (it == s.chunks.end()) continue;
    expect(eligible(s, it->second, allocs),
           "new chunk %#lx+%zu pages overlaps a %s chunk at %#lx (seq %llu, "
           "released %llu, quarantine %zu)",
           ul(rx), pages, id(it->second.state), ul(it->first),
           static_cast<unsigned long long>(it->second.seq),
           static_cast<unsigned long long>(s.released), s.options.quarantine);
    s.chunks.erase(it);
  }
}

void Harness::verify(Slot& s) {
  if (!s.arena) return;
  Arena& a = *s.arena;
  const std::vector<wxa::RunInfo>& runs = runs_of(s);

  // runs() tiles the reservation with maximal runs.
  std::vector<State>& lib = scratch_lib_;
  lib.assign(s.pages, State::free);
  std::uintptr_t at = s.rx_base;
  std::size_t vmas = s.dual ? 2 : 1, open_pages = 0, unused_pages = 0;
  // kernel_write: one view whose boundaries the runs make, and the staging
  // reservation, one VMA.
  for (std::size_t k = 0; k < runs.size(); ++k) {
    const wxa::RunInfo& r = runs[k];
    expect(addr(r.rx) == at && r.bytes > 0 && r.bytes % ps_ == 0,
           "runs(): run %zu at %p+%zu does not continue at %#lx", k, r.rx,
           r.bytes, ul(at));
    expect(s.kw ? r.rw == nullptr : addr(r.rw) == view(s, at),
           "runs(): run %zu rw %p, expected %#lx", k, r.rw, ul(view(s, at)));
    expect(!r.open || r.state == State::free, "runs(): an open %s run",
           id(r.state));
    expect(r.rx_access == want_rx(s, r.state, r.open) &&
               r.rw_access == want_rw(s, r.state, r.open),
           "runs(): %s%s run at %p has rx %s rw %s", id(r.state),
           r.open ? "(open)" : "", r.rx, id(r.rx_access), id(r.rw_access));
    if (k > 0) {
      const wxa::RunInfo& q = runs[k - 1];
      expect(q.state != r.state || q.open != r.open,
             "runs(): two adjacent %s runs at %p", id(r.state), r.rx);
      vmas += q.rx_access != r.rx_access;
      if (s.dual && !s.kw) vmas += q.rw_access != r.rw_access;
    }
    const std::size_t first = (at - s.rx_base) / ps_, n = r.bytes / ps_;
    if (first < s.pages)
      std::fill_n(lib.begin() + static_cast<std::ptrdiff_t>(first),
                  std::min(n, s.pages - first), r.state);
    if (r.state == State::free) (r.open ? open_pages : unused_pages) += n;
    if (s.lane_pages) {
      // Lane edges inside this run, or where it starts, between two mapped
      // pages of one protection (a change of protection counted already).
      const Access before = k > 0 ? runs[k - 1].rx_access : Access::none;
      for (std::size_t e =
               (first + s.lane_pages - 1) / s.lane_pages * s.lane_pages;
           e < first + n && e < s.pages; e += s.lane_pages) {
        if (e == 0) continue;
        const Access left = e == first ? before : r.rx_access;
        vmas += left == r.rx_access && left != Access::none;
      }
    }
    at += r.bytes;
  }
  expect(at == s.rx_base + s.pages * ps_, "runs() ends at %#lx, not %#lx",
         ul(at), ul(s.rx_base + s.pages * ps_));

  // Page by page, the model's states.
  std::vector<State>& want = scratch_want_;
  want.assign(s.pages, State::free);
  std::size_t chunks[5] = {}, pages[5] = {};
  for (const auto& [rx, c] : s.chunks) {
    const std::size_t first = (rx - s.rx_base) / ps_;
    for (std::size_t i = first; i < first + c.pages; ++i) want[i] = c.state;
    ++chunks[static_cast<int>(c.state)];
    pages[static_cast<int>(c.state)] += c.pages;
  }
  // One comparison first: the loop is slow under coverage instrumentation.
  if (std::memcmp(lib.data(), want.data(), s.pages * sizeof(State)) != 0)
    for (std::size_t i = 0; i < s.pages; ++i)
      expect(lib[i] == want[i], "page %zu (%#lx): library says %s, model %s", i,
             ul(s.rx_base + i * ps_), id(lib[i]), id(want[i]));

  // Stats agree with the model and with runs().
  const wxa::Stats st = a.stats();
  pages[0] = s.pages - pages[1] - pages[2] - pages[3] - pages[4];
  for (int k = 0; k < 5; ++k) {
    expect(k == 0 || st.chunks[k] == chunks[k],
           "stats: %zu %s chunks, model %zu", st.chunks[k], id(State(k)),
           chunks[k]);
    expect(st.bytes[k] == pages[k] * ps_, "stats: %zu bytes %s, model %zu",
           st.bytes[k], id(State(k)), pages[k] * ps_);
  }
  expect(st.vmas == vmas, "stats: %zu VMAs, runs() make %zu", st.vmas, vmas);
  expect(st.vmas <= st.vma_budget, "stats: %zu VMAs over the budget of %zu",
         st.vmas, st.vma_budget);
  expect(st.open_bytes == open_pages * ps_, "stats: %zu open bytes, runs() %zu",
         st.open_bytes, open_pages * ps_);
  expect(st.committed_bytes == (s.pages - unused_pages) * ps_,
         "stats: %zu committed bytes, runs() say %zu", st.committed_bytes,
         (s.pages - unused_pages) * ps_);
  expect(st.reserved_bytes == s.pages * ps_, "stats: reserved %zu",
         st.reserved_bytes);

  // find() on every chunk the model knows; contents of the live ones.
  for (const auto& [rx, c] : s.chunks) {
    Result<wxa::ChunkInfo> f = a.find(ptr(rx));
    if (c.state == State::retired) {
      expect(!f && f.error().code() == Errc::not_allocated,
             "find(retired %#lx): %s", ul(rx),
             f ? "found" : id(f.error().code()));
      continue;
    }
    expect(bool(f), "find(%#lx): %s", ul(rx), f ? "" : id(f.error().code()));
    expect(f->state == c.state && addr(f->chunk.rx()) == rx &&
               f->chunk.size() == c.pages * ps_ && f->offset == 0,
           "find(%#lx): %s %p+%zu offset %zu; model %s +%zu", ul(rx),
           id(f->state), f->chunk.rx(), f->chunk.size(), f->offset, id(c.state),
           c.pages * ps_);
    const bool writable = c.state == State::writable;
    expect(writable ? addr(f->chunk.rw().data()) == view(s, rx)
                    : f->chunk.rw().empty(),
           "find(%#lx): writable view %p in state %s", ul(rx),
           static_cast<void*>(f->chunk.rw().data()), id(c.state));
    if (c.heap || !c.written) continue;
    std::byte code[wxa::test::return_imm_size];
    (void)wxa::test::write_return_imm(code, c.value);
    switch (c.state) {
      case State::executable: {
        unsigned got = 0;
        expect(g_platform->returns(rx, c.value, got),
               "chunk %#lx returned %#x, not %#x", ul(rx), got, c.value);
        break;
      }
      case State::read_only:
        expect(std::memcmp(ptr(rx), code, sizeof code) == 0,
               "read-only chunk %#lx lost its contents", ul(rx));
        break;
      case State::writable:
        expect(std::memcmp(c.rw, code, sizeof code) == 0,
               "writable chunk %#lx lost its contents", ul(rx));
        break;
      default:
        break;
    }
  }

  // The heap's functions: published ones are called, pending ones read.
  if (s.heap) {
    std::size_t live = 0, pending = 0, live_bytes = 0, heap_pages = 0;
    for (const auto& [rx, page] : s.heap_pages) {
      heap_pages += page.pages;
      for (const auto& [off, fn] : page.fns) {
        if (fn.dead) continue;
        ++live;
        live_bytes += fn.size;
        pending += !page.sealed;
        if (!fn.callable) continue;
        if (page.sealed) {
          unsigned got = 0;
          expect(g_platform->returns(rx + off, fn.value, got),
                 "heap function %#lx returned %#x, not %#x", ul(rx + off), got,
                 fn.value);
        } else {
          std::byte code[wxa::test::return_imm_size];
          (void)wxa::test::write_return_imm(code, fn.value);
          expect(std::memcmp(ptr(view(s, rx) + off), code, sizeof code) == 0,
                 "pending heap function %#lx lost its contents", ul(rx + off));
        }
      }
    }
    const wxa::HeapStats hs = s.heap->stats();
    expect(hs.live_functions == live && hs.pending_functions == pending &&
               hs.live_bytes == live_bytes && hs.pages == heap_pages &&
               hs.reserve_pages == s.heap_reserve.size() &&
               hs.committed_bytes == (heap_pages + hs.reserve_pages) * ps_,
           "heap stats: live %zu pending %zu bytes %zu pages %zu; model %zu "
           "%zu %zu %zu",
           hs.live_functions, hs.pending_functions, hs.live_bytes, hs.pages,
           live, pending, live_bytes, heap_pages);
  }
}

void Harness::kernel_check() {
  const std::vector<Vma>& maps = read_maps();
  for (const Vma& v : maps)
    expect(!(v.perms[1] == 'w' && v.perms[2] == 'x'),
           "kernel: %#lx-%#lx is writable and executable (%s)", ul(v.begin),
           ul(v.end), v.perms);
  for (Slot& s : slots_) {
    if (!s.arena) continue;
    for (const wxa::RunInfo& r : runs_of(s)) {
      expect_protection(maps, addr(r.rx), addr(r.rx) + r.bytes, r.rx_access,
                        "rx view");
      if (s.dual && !s.kw)
        expect_protection(maps, addr(r.rw), addr(r.rw) + r.bytes, r.rw_access,
                          "rw view");
    }
    const std::uintptr_t bytes = s.pages * ps_;
    std::size_t k = count_vmas(maps, s.rx_base, s.rx_base + bytes);
    if (s.dual) k += count_vmas(maps, s.rw_base, s.rw_base + bytes);
    const std::size_t tracked = s.arena->stats().vmas;
    if (k > tracked) {
      for (const Vma& v : maps)
        if ((v.begin < s.rx_base + bytes && s.rx_base < v.end) ||
            (s.dual && v.begin < s.rw_base + bytes && s.rw_base < v.end))
          std::fprintf(stderr, "wxa-fuzz: kernel: %#lx-%#lx %s\n", ul(v.begin),
                       ul(v.end), v.perms);
      for (const wxa::RunInfo& r : runs_of(s))
        std::fprintf(stderr, "wxa-fuzz: runs(): %p+%#zx %s%s\n", r.rx, r.bytes,
                     id(r.state), r.open ? " (open)" : "");
    }
    expect(k <= tracked, "kernel: %zu VMAs in the arena, it counts %zu", k,
           tracked);
  }
}

// --- Arena operations --------------------------------------------------------

bool Harness::create(Slot& s, const Options& o, bool use_fault) {
  destroy_arena(s);
  stale(s);
  const wxa::detail::Capabilities& caps = g_platform->pal().capabilities();
  const std::size_t pages = (o.reserve_bytes + ps_ - 1) / ps_;
  // kernel_write: usable where the kernel may copy into a memfd mapped
  // executable; the first choice of automatic.
  const bool kw_ok = kKernelWriteLanded && caps.shared_memory &&
                     caps.shared_exec && caps.shared_write;
  Backend resolved = o.backend;
  // automatic: the first backend the host allows whose own mappings fit the
  // VMA budget (protect takes one, the memfd backends two).
  const bool two_fit = o.vma_budget == 0 || o.vma_budget >= 2;
  if (resolved == Backend::automatic)
    resolved = kw_ok && two_fit ? Backend::kernel_write
               : caps.anon_exec ? Backend::protect
                                : Backend::dual_map;

  // The order of ArenaImpl::init()'s checks, from the header's contract.
  Errc want = Errc::ok;
  bool may_anchor = false;
  if (o.reserve_bytes == 0) {
    want = Errc::invalid_argument;
  } else if (o.backend == Backend::automatic && !caps.anon_exec &&
             !(caps.shared_memory && caps.shared_exec)) {
    want = Errc::not_supported;
  } else if (o.backend == Backend::protect && !caps.anon_exec) {
    want = Errc::permission_denied;
  } else if (o.backend == Backend::dual_map &&
             !(caps.shared_memory && caps.shared_exec)) {
    want = Errc::not_supported;
  } else if (o.backend == Backend::kernel_write && !kKernelWriteLanded) {
    want = Errc::invalid_argument;
  } else if (o.backend == Backend::kernel_write && !kw_ok) {
    want = Errc::not_supported;
  } else if (o.anchor &&
             (o.reach ? o.reach : (std::size_t{1} << 31) - ps_) < pages * ps_) {
    want = Errc::unreachable_anchor;
  } else {
    may_anchor = o.anchor != nullptr;  // no gap near it: not predictable
    if (o.vma_budget && o.vma_budget < (resolved == Backend::protect ? 1u : 2u))
      want = Errc::invalid_argument;
  }
  note(
      "create backend %d pages %zu quarantine %zu budget %zu open %zu "
      "anchor %p reach %zu -> expect %s",
      static_cast<int>(o.backend), pages, o.quarantine, o.vma_budget,
      o.open_pages, o.anchor, o.reach, id(want));

  if (use_fault) arm(s);
  const std::size_t fds = count_fds();
  Result<Arena> r = wxa::detail::create_arena(o, *s.pal);
  const Fault f = use_fault ? disarm(s) : Fault{};
  if (!r) {
    const Errc c = r.error().code();
    const bool allowed = c == want ||
                         (may_anchor && c == Errc::unreachable_anchor) ||
                         (f.fired && c == f.code);
    record("create -> %s", id(c));
    expect(allowed, "create: got %s, model says %s", id(c), id(want));
    expect(count_fds() == fds, "create failed and leaked a descriptor");
    return false;
  }
  // Best-effort calls (naming, barrier registration) may fail unnoticed.
  record("create -> ok");
  expect(want == Errc::ok, "create: succeeded, model says %s", id(want));
  // automatic tries the next backend the host allows when its first choice
  // fails to be created (not for lack of memory or of an anchored range).
  const bool fell_back =
      o.backend == Backend::automatic && f.fired && r->backend() != resolved &&
      f.code != Errc::out_of_memory &&
      (resolved == Backend::kernel_write ? r->backend() != Backend::automatic
                                         : r->backend() == Backend::dual_map);
  expect(!f.fired || f.call == PalCall::name ||
             f.call == PalCall::register_barrier || fell_back,
         "create: succeeded although a required platform call failed");
  if (fell_back) resolved = r->backend();
  s.arena.emplace(std::move(*r));
  s.options = o;
  s.pages = pages;
  s.rx_base = addr(s.arena->range().data());
  s.rw_base = addr(s.arena->rw_range().data());
  s.dual = s.arena->backend() != Backend::protect;
  s.kw = s.arena->backend() == Backend::kernel_write;
  s.lane_pages = 0;
  if (s.kw) {
    std::size_t lanes = o.lanes ? o.lanes
                                : std::min<std::size_t>(
                                      g_platform->pal().capabilities().cpus, 8);
    lanes = std::min(lanes, std::max<std::size_t>(1, pages / 64));
    const std::size_t per_lane = std::bit_ceil((pages + lanes - 1) / lanes);
    if (per_lane < pages) s.lane_pages = per_lane;
  }
  s.released = 0;
  expect(s.arena->backend() == resolved, "create: backend %d, expected %d",
         static_cast<int>(s.arena->backend()), static_cast<int>(resolved));
  expect(s.arena->range().size() == pages * ps_ &&
             s.arena->rw_range().size() == (s.kw ? 2 : 1) * pages * ps_ &&
             s.rx_base % ps_ == 0 && s.rw_base % ps_ == 0,
         "create: ranges %#lx %#lx of %zu bytes", ul(s.rx_base), ul(s.rw_base),
         s.arena->range().size());
  expect(s.dual == (s.rx_base != s.rw_base), "create: views %#lx %#lx",
         ul(s.rx_base), ul(s.rw_base));
  const wxa::Stats st = s.arena->stats();
  const std::size_t budget =
      o.vma_budget ? o.vma_budget
                   : std::max<std::size_t>(caps.max_map_count / 4, 16);
  expect(st.vma_budget == budget, "create: budget %zu, expected %zu",
         st.vma_budget, budget);
  if (o.anchor) {
    const std::uintptr_t reach =
        o.reach ? o.reach : (std::size_t{1} << 31) - ps_;
    const std::uintptr_t a = addr(o.anchor), last = s.rx_base + pages * ps_ - 1;
    expect(
        a - std::min(a, s.rx_base) < reach && last - std::min(last, a) < reach,
        "create: %#lx-%#lx not within %#lx of the anchor %#lx", ul(s.rx_base),
        ul(last), ul(reach), ul(a));
  }
  return true;
}

Slot& Harness::need_arena(Slot& s) {
  if (s.arena) return s;
  Options o;
  o.reserve_bytes = 64 * ps_;
  o.quarantine = 2;
  o.open_pages = 8;
  o.lanes = 1;
  expect(create(s, o, false), "the default arena cannot be created");
  return s;
}

void Harness::op_create(Slot& s) {
  const std::uint8_t f = in_.u8();
  static const Backend kBackends[] = {Backend::automatic, Backend::protect,
                                      Backend::dual_map, Backend::kernel_write};
  Options o;
  o.backend = kBackends[f & 3];
  o.reserve_bytes = (16 + in_.below(241)) * ps_;
  // 1 to 3 lanes (kernel_write), from the size rather than a byte of its
  // own, so that the seeds decode as before; never 0 (one per CPU), so that
  // the kernel and SimPal runs agree whatever the machine.
  o.lanes = 1 + (o.reserve_bytes / ps_) % 3;
  o.quarantine = in_.below(5);
  o.vma_budget = (f & 4) ? 1 + in_.below(16) : 0;
  o.open_pages = (f & 8) ? 1 + in_.below(16) : 64;
  o.name_mappings = (f & 16) != 0;
  if (f & 32) {
    static const char anchor = 0;
    o.anchor = &anchor;
    o.reach = (f & 64) ? in_.below(1024) * ps_ : 0;
  }
  if ((f & 0xC0) == 0xC0 && in_.below(4) == 0) o.reserve_bytes = 0;
  (void)create(s, o, true);
}

void Harness::op_allocate(Slot& s) {
  need_arena(s);
  const std::size_t bytes = pick_size(s);
  const std::size_t need = (bytes + ps_ - 1) / ps_;
  Verdict want;
  if (bytes == 0)
    want.code = Errc::zero_size;
  else if (bytes > s.pages * ps_)
    want.code = Errc::size_too_large;
  note("allocate %zu -> expect %s", bytes, id(want.code));

  // Where the library's allocator could find room: a run of free pages,
  // open or unused, counting recyclable quarantine (which recycle() opens).
  // If none is long enough, exhausted is honest.
  std::size_t best_free = 0;
  {
    const std::vector<wxa::RunInfo>& runs = runs_of(s);
    std::vector<int> kind(s.pages, 0);  // 1 open, 2 unused
    for (const wxa::RunInfo& r : runs) {
      const std::size_t first = (addr(r.rx) - s.rx_base) / ps_;
      for (std::size_t i = first; i < first + r.bytes / ps_; ++i)
        kind[i] = r.state == State::free ? (r.open ? 1 : 2) : 0;
    }
    const std::uint64_t allocs = allocations(s);
    for (const auto& [rx, c] : s.chunks)
      if (eligible(s, c, allocs))
        for (std::size_t i = 0; i < c.pages; ++i)
          kind[(rx - s.rx_base) / ps_ + i] = 1;
    std::size_t run = 0;
    for (std::size_t i = 0; i < s.pages; ++i) {
      run = kind[i] != 0 ? run + 1 : 0;
      best_free = std::max(best_free, run);
    }
  }

  arm(s);
  Result<Chunk> r = s.arena->allocate(bytes);
  const Fault f = disarm(s);
  const Error err = r ? Error() : r.error();
  const bool may_vma = s.options.vma_budget != 0;
  if (judge("allocate", err, want, true, may_vma, f, true)) {
    const Chunk& c = *r;
    const std::uintptr_t rx = addr(c.rx());
    expect(rx >= s.rx_base && rx + c.size() <= s.rx_base + s.pages * ps_ &&
               rx % ps_ == 0 && c.size() == need * ps_,
           "allocate(%zu): chunk %#lx+%zu", bytes, ul(rx), c.size());
    expect((s.kw ? in_staging(s, c.rw().data())
                 : addr(c.rw().data()) == view(s, rx)) &&
               c.rw().size() == c.size(),
           "allocate(%zu): writable view %p+%zu for %#lx", bytes,
           static_cast<void*>(c.rw().data()), c.rw().size(), ul(rx));
    const std::size_t bad = first_stale(c.rw());
    expect(bad == c.size(),
           "allocate(%zu): byte %zu of the new chunk is %#x (stale?)", bytes,
           bad, bad < c.size() ? static_cast<unsigned>(c.rw()[bad]) : 0u);
    take_pages(s, rx, need);
    ChunkM m;
    m.pages = need;
    m.rw = c.rw().data();
    s.chunks.emplace(rx, m);
    remember(rx);
    note("  -> %#lx", ul(rx));
  } else if (err.code() == Errc::exhausted && !f.fired) {
    expect(best_free < need,
           "allocate(%zu): exhausted, but %zu pages in a row were free", bytes,
           best_free);
  }
  sync_recycled(s);
}

void Harness::op_write(Slot& s) {
  need_arena(s);
  std::vector<std::uintptr_t> writable;
  for (const auto& [rx, c] : s.chunks)
    if (c.state == State::writable && !c.heap) writable.push_back(rx);
  const std::size_t pick = in_.u8();
  const std::uint32_t value = in_.u32();
  if (writable.empty()) return;
  ChunkM& c = s.chunks.at(writable[pick % writable.size()]);
  c.value = value;
  c.written = true;
  note("write %#x", c.value);
  expect(
      wxa::test::write_return_imm(std::span(c.rw, c.pages * ps_), c.value) != 0,
      "write failed");
}

void Harness::op_single(Slot& s, Kind kind) {
  need_arena(s);
  const void* p = pick_address(s);
  const Verdict want = validate(s, p, kind);
  if (want.code == Errc::ok && s.chunks.at(want.head).heap) return;
  note("%s %p -> expect %s", id(kind), p, id(want.code));
  arm(s);
  Error err;
  Chunk unsealed;
  switch (kind) {
    case Kind::seal_execute:
    case Kind::seal_read_only:
      if (Result<void> r = s.arena->seal(p, kind == Kind::seal_execute
                                                ? wxa::Seal::execute
                                                : wxa::Seal::read_only);
          !r)
        err = r.error();
      break;
    case Kind::unseal:
      if (Result<Chunk> r = s.arena->unseal(p); r)
        unsealed = *r;
      else
        err = r.error();
      break;
    case Kind::release:
      if (Result<void> r = s.arena->release(p); !r) err = r.error();
      break;
  }
  const Fault f = disarm(s);
  if (err.code() != Errc::ok && want.code == Errc::ok)
    expect(err.chunk() == p, "%s: error names chunk %p, not %p", id(kind),
           err.chunk(), p);
  if (!judge(id(kind), err, want, false, s.options.vma_budget != 0, f, false))
    return;
  ChunkM& c = s.chunks.at(want.head);
  if (kind == Kind::release) {
    retire(s, {want.head});
    return;
  }
  c.state = target(kind);
  if (kind == Kind::unseal) {
    expect(addr(unsealed.rx()) == want.head &&
               unsealed.size() == c.pages * ps_ &&
               (s.kw ? in_staging(s, unsealed.rw().data())
                     : addr(unsealed.rw().data()) == view(s, want.head)) &&
               unsealed.rw().size() == unsealed.size(),
           "unseal(%p): chunk %p+%zu rw %p", p, unsealed.rx(), unsealed.size(),
           static_cast<void*>(unsealed.rw().data()));
    c.rw = unsealed.rw().data();
  } else {
    c.rw = nullptr;
  }
}

void Harness::op_batch(Slot& s) {
  need_arena(s);
  struct Queued {
    const void* p;
    Kind kind;
    Verdict v;
  };
  std::vector<Queued> q;
  Batch batch(*s.arena);
  const std::size_t n = 1 + in_.below(8);
  for (std::size_t i = 0; i < n; ++i) {
    const Kind kind = static_cast<Kind>(in_.below(4));
    const bool repeat = in_.below(4) == 0;  // the same chunk again
    const void* p =
        repeat && !q.empty() ? q[in_.below(q.size())].p : pick_address(s);
    const Verdict v = validate(s, p, kind);
    if (v.code == Errc::ok && s.chunks.at(v.head).heap) continue;
    q.push_back({p, kind, v});
    switch (kind) {
      case Kind::seal_execute:
        batch.seal(p, wxa::Seal::execute);
        break;
      case Kind::seal_read_only:
        batch.seal(p, wxa::Seal::read_only);
        break;
      case Kind::unseal:
        batch.unseal(p);
        break;
      case Kind::release:
        batch.release(p);
        break;
    }
  }
  // The first invalid transition in queue order, then duplicates (the
  // lowest duplicated chunk), then success.
  Verdict want;
  for (const Queued& e : q)
    if (e.v.code != Errc::ok) {
      want = e.v;
      break;
    }
  std::vector<std::pair<std::uintptr_t, State>> items;
  if (want.code == Errc::ok) {
    for (const Queued& e : q) items.emplace_back(e.v.head, target(e.kind));
    std::sort(items.begin(), items.end());
    for (std::size_t k = 1; k < items.size(); ++k)
      if (items[k].first == items[k - 1].first) {
        want = {Errc::duplicate_in_batch, ptr(items[k].first), 0};
        break;
      }
  }
  std::size_t runs = 0, flushes = 0;
  if (want.code == Errc::ok) {
    std::uintptr_t end = 0;
    for (std::size_t k = 0; k < items.size(); ++k) {
      const auto [head, to] = items[k];
      if (k == 0 || end != head || items[k - 1].second != to) {
        ++runs;
        // kernel_write also flushes retired runs: traps were copied over
        // code that other cores may hold in their caches.
        flushes += to == State::executable || (s.kw && to == State::retired);
      }
      end = head + s.chunks.at(head).pages * ps_;
    }
  }
  const CommitFlags flags =
      in_.below(4) == 0 ? CommitFlags::barrier : CommitFlags::none;
  note("batch of %zu -> expect %s", q.size(), id(want.code));
  arm(s);
  Result<wxa::CommitReport> r = batch.commit(flags);
  const Fault f = disarm(s);
  const Error err = r ? Error() : r.error();
  if (!r && want.code == Errc::ok) {
    bool names_one = false;
    for (const auto& it : items) names_one |= ptr(it.first) == err.chunk();
    expect(names_one, "batch: %s names %p, not one of its chunks",
           id(err.code()), err.chunk());
  }
  if (!judge("batch", err, want, false, s.options.vma_budget != 0, f, false)) {
    expect(batch.size() == q.size(), "batch: a failed commit emptied it");
    return;
  }
  expect(batch.empty(), "batch: not empty after commit");
  expect(r->chunks == q.size() && r->runs == runs && r->flushes == flushes,
         "batch: report chunks %zu runs %zu flushes %zu; model %zu %zu %zu",
         r->chunks, r->runs, r->flushes, q.size(), runs, flushes);
  std::vector<std::uintptr_t> released;
  for (const auto& [head, to] : items) {
    ChunkM& c = s.chunks.at(head);
    if (to == State::retired) {
      released.push_back(head);
      continue;
    }
    c.state = to;
    c.rw = nullptr;
    if (to == State::writable) {
      if (s.kw) {  // staged wherever the arena found room
        Result<wxa::ChunkInfo> f = s.arena->find(ptr(head));
        c.rw = f ? f->chunk.rw().data() : nullptr;
        expect(c.rw && in_staging(s, c.rw), "unsealed %#lx: staging %p",
               ul(head), static_cast<void*>(c.rw));
      } else {
        c.rw = reinterpret_cast<std::byte*>(view(s, head));
      }
    }
  }
  retire(s, released);
}

void Harness::op_find(Slot& s) {
  need_arena(s);
  const void* p = pick_address(s);
  Result<wxa::ChunkInfo> r = s.arena->find(p);
  // The model's answer.
  Errc want = Errc::ok;
  const Where w = locate(s, p, true);
  auto it = s.chunks.end();
  if (!p) {
    want = Errc::null_pointer;
  } else if (!w.inside) {
    want = Errc::foreign_pointer;
  } else {
    it = chunk_at_page(s, w.page);
    if (it == s.chunks.end() || it->second.state == State::retired)
      want = Errc::not_allocated;
  }
  note("find %p -> expect %s", p, id(want));
  record("find -> %s", r ? "ok" : id(r.error().code()));
  if (want != Errc::ok) {
    expect(!r && r.error().code() == want, "find(%p): %s, model says %s", p,
           r ? "found" : id(r.error().code()), id(want));
    expect(r.error().chunk() == (p ? p : nullptr), "find(%p): names %p", p,
           r.error().chunk());
    return;
  }
  expect(bool(r), "find(%p): %s, model says found", p,
         r ? "" : id(r.error().code()));
  const std::uintptr_t head = it->first;
  const ChunkM& c = it->second;
  const std::uintptr_t base = w.in_rx ? head : view(s, head);
  expect(addr(r->chunk.rx()) == head && r->chunk.size() == c.pages * ps_ &&
             r->state == c.state && r->offset == addr(p) - base,
         "find(%p): %p+%zu %s offset %zu; model %#lx+%zu %s offset %zu", p,
         r->chunk.rx(), r->chunk.size(), id(r->state), r->offset, ul(head),
         c.pages * ps_, id(c.state), ul(addr(p) - base));
  expect(c.state == State::writable
             ? addr(r->chunk.rw().data()) == view(s, head)
             : r->chunk.rw().empty(),
         "find(%p): writable view %p in state %s", p,
         static_cast<void*>(r->chunk.rw().data()), id(c.state));
}

void Harness::op_trim(Slot& s) {
  need_arena(s);
  note("trim");
  arm(s);
  Result<void> r = s.arena->trim();
  const Fault f = disarm(s);
  const Error err = r ? Error() : r.error();
  // A failed trim() may have given some pages back before the failing call
  // (what was given back stays given back): sync_recycled() accepts that.
  const bool ok =
      judge("trim", err, Verdict{}, false, s.options.vma_budget != 0, f, false);
  sync_recycled(s);
  if (!ok || f.fired) return;
  for (const wxa::RunInfo& run : runs_of(s))
    expect(!run.open, "trim: open pages remain at %p", run.rx);
  const std::uint64_t allocs = allocations(s);
  for (const auto& [rx, c] : s.chunks)
    expect(!eligible(s, c, allocs), "trim: reusable quarantine remains at %#lx",
           ul(rx));
}

// Arena::patch: `mov eax, value; ret` written over a chunk's start, or a
// few trap bytes anywhere (which break the function if they overlap it).
void Harness::op_patch(Slot& s) {
  need_arena(s);
  const void* p = pick_address(s);
  const std::uint8_t sel = in_.u8();
  const std::uint32_t value = in_.u32();
  std::byte code[wxa::test::return_imm_size + 16];
  std::size_t len = 0;
  const bool whole = (sel & 1) != 0;
  if (whole) {
    len = wxa::test::write_return_imm(code, value);
  } else {
    len = (sel >> 1) % 17;  // 0: zero_size
    for (std::size_t i = 0; i < len; ++i)
      code[i] = wxa::test::trap_byte_at(addr(p) + i);
  }
  // The header's contract: the chunk holding `at` must be executable and
  // the bytes must lie inside it.
  Verdict want;
  auto it = s.chunks.end();
  if (!kPatchLanded) {
    want = {Errc::not_supported, nullptr, 0};
  } else if (!p) {
    want = {Errc::null_pointer, nullptr, 0};
  } else if (const Where w = locate(s, p, false); !w.inside) {
    want = {Errc::foreign_pointer, p, 0};
  } else if (it = chunk_at_page(s, w.page); it == s.chunks.end()) {
    want = {Errc::not_allocated, p, 0};
  } else if (it->second.state != State::executable &&
             it->second.state != State::read_only) {
    // Retired chunks too: like sealing one, not a missing chunk.
    want = {Errc::illegal_transition, ptr(it->first), 0};
  } else if (len == 0) {
    want = {Errc::zero_size, ptr(it->first), 0};
  } else if (addr(p) + len > it->first + it->second.pages * ps_) {
    want = {Errc::out_of_bounds, ptr(it->first), 0};
  }
  // A CodeHeap's page holds functions the model tracks one by one.
  if (want.code == Errc::ok && it->second.heap) return;
  note("patch %p with %zu bytes -> expect %s", p, len, id(want.code));
  arm(s);
  Result<void> r = s.arena->patch(p, std::span<const std::byte>(code, len));
  const Fault f = disarm(s);
  const Error err = r ? Error() : r.error();
  if (!judge("patch", err, want, false, s.options.vma_budget != 0, f, false))
    return;
  ChunkM& c = it->second;
  const std::size_t off = addr(p) - it->first;
  if (whole && off == 0) {
    c.written = true;
    c.value = value;
  } else if (off < wxa::test::return_imm_size) {
    c.written = false;
  }
}

// The transcript's last lines: the slot's runs() relative to its start, and
// the stats that do not depend on addresses.
void Harness::record_final(Slot& s) {
  if (!s.arena) {
    record("slot: no arena");
    return;
  }
  for (const wxa::RunInfo& r : runs_of(s))
    record("run +%zu %zu pages %s%s rx %s rw %s",
           (addr(r.rx) - s.rx_base) / ps_, r.bytes / ps_, id(r.state),
           r.open ? " (open)" : "", id(r.rx_access), id(r.rw_access));
  const wxa::Stats st = s.arena->stats();
  record("stats: backend %d reserved %zu committed %zu open %zu vmas %zu/%zu",
         static_cast<int>(st.backend), st.reserved_bytes, st.committed_bytes,
         st.open_bytes, st.vmas, st.vma_budget);
  for (int k = 0; k < 5; ++k)
    record("stats: %s %zu chunks %zu bytes", id(State(k)), st.chunks[k],
           st.bytes[k]);
  record(
      "stats: allocations %llu commits %llu runs %llu protection calls "
      "%llu flushes %llu barriers %llu",
      static_cast<unsigned long long>(st.allocations),
      static_cast<unsigned long long>(st.commits),
      static_cast<unsigned long long>(st.runs),
      static_cast<unsigned long long>(st.protection_calls),
      static_cast<unsigned long long>(st.flushes),
      static_cast<unsigned long long>(st.barriers));
  const wxa::SyscallCounts& n = st.syscalls;
  record(
      "syscalls: mmap %llu munmap %llu mprotect %llu madvise %llu memfd "
      "%llu write %llu",
      static_cast<unsigned long long>(n.mmap),
      static_cast<unsigned long long>(n.munmap),
      static_cast<unsigned long long>(n.mprotect),
      static_cast<unsigned long long>(n.madvise),
      static_cast<unsigned long long>(n.memfd),
      static_cast<unsigned long long>(n.write));
}

void Harness::op_arm(Slot& s) {
  static const int kErrnos[] = {ENOMEM, EACCES, EPERM, EINVAL, EAGAIN};
  // Up to 16: a commit of many runs, or trim(), makes a dozen calls.
  s.fault_k = 1 + in_.below(16);
  s.fault_errno = kErrnos[in_.below(std::size(kErrnos))];
  note("arm: call %zu fails with errno %d", s.fault_k, s.fault_errno);
}

void Harness::destroy_arena(Slot& s) {
  destroy_heap(s);
  stale(s);
  if (!s.arena) return;
  const std::uintptr_t rx = s.rx_base, rw = s.rw_base, bytes = s.pages * ps_;
  s.arena.reset();
  s.chunks.clear();
  s.released = 0;
  s.rx_base = s.rw_base = 0;
  s.pages = 0;
  for (const Vma& v : read_maps()) {
    const bool in = (v.begin < rx + bytes && rx < v.end) ||
                    (v.begin < rw + bytes && rw < v.end);
    expect(!in || v.perms[2] != 'x',
           "destroyed arena: %#lx-%#lx is still executable", ul(v.begin),
           ul(v.end));
  }
}

void Harness::op_destroy(Slot& s) {
  if (in_.below(4) == 0) {
    note("destroy arena");
    destroy_arena(s);
  } else {
    note("destroy heap");
    destroy_heap(s);
  }
}

// --- CodeHeap operations -----------------------------------------------------

void Harness::destroy_heap(Slot& s) {
  stale(s);
  if (!s.heap) return;
  s.heap.reset();  // releases every page it holds in one commit
  // All or nothing: if that commit failed (the VMA budget), the pages stay
  // as they were, no longer the heap's.
  std::vector<std::uintptr_t> heads;
  for (const auto& [rx, page] : s.heap_pages) heads.push_back(rx);
  heads.insert(heads.end(), s.heap_reserve.begin(), s.heap_reserve.end());
  s.heap_pages.clear();
  s.heap_reserve.clear();
  if (heads.empty()) return;
  const Result<wxa::ChunkInfo> first = s.arena->find(ptr(heads.front()));
  if (!first) {
    retire(s, heads);
    return;
  }
  note("  (the heap's final release failed: its pages are orphans)");
  for (std::uintptr_t h : heads) {
    ChunkM& c = s.chunks.at(h);
    c.heap = false;
    c.written = false;
  }
}

CodeHeap& Harness::need_heap(Slot& s) {
  need_arena(s);
  if (!s.heap) {
    stale(s);
    Result<CodeHeap> h = CodeHeap::create(*s.arena);
    expect(bool(h), "default CodeHeap::create failed");
    s.heap.emplace(std::move(*h));
    s.heap_alignment = 16;
  }
  return *s.heap;
}

void Harness::op_heap_create(Slot& s) {
  need_arena(s);
  destroy_heap(s);
  static const std::size_t kAlign[] = {16, 1,    2, 4, 8,  32,
                                       64, 4096, 0, 3, 24, 8192};
  wxa::HeapOptions o;
  o.alignment = kAlign[in_.below(std::size(kAlign))];
  const bool good = o.alignment != 0 && std::has_single_bit(o.alignment) &&
                    o.alignment <= ps_;
  note("heap create alignment %zu -> expect %s", o.alignment,
       good ? "ok" : "bad_alignment");
  stale(s);
  Result<CodeHeap> h = CodeHeap::create(*s.arena, o);
  record("heap create -> %s", h ? "ok" : id(h.error().code()));
  if (!good) {
    expect(!h && h.error().code() == Errc::bad_alignment,
           "CodeHeap::create(alignment %zu): %s", o.alignment,
           h ? "ok" : id(h.error().code()));
    return;
  }
  expect(bool(h), "CodeHeap::create(alignment %zu): %s", o.alignment,
         h ? "" : id(h.error().code()));
  s.heap.emplace(std::move(*h));
  s.heap_alignment = o.alignment;
}

void Harness::op_heap_allocate(Slot& s) {
  CodeHeap& heap = need_heap(s);
  std::size_t bytes = 0;
  const std::uint8_t sel = in_.u8();
  switch (sel % 8) {
    case 0:
      bytes = (sel & 0x80) ? 0 : s.pages * ps_ + 1;
      break;
    case 5:
      bytes = 6 + in_.below(ps_ - 6);
      break;
    case 6:
      bytes = ps_ + 1 + in_.below(2 * ps_);
      break;
    case 7:
      bytes = 1 + in_.below(5);
      break;
    default:
      bytes = 6 + in_.below(250);
      break;
  }
  static const std::size_t kAlign[] = {1, 2, 4, 8, 16, 32, 64, 4096, 3, 8192};
  const std::size_t align =
      in_.below(4) == 0 ? kAlign[in_.below(std::size(kAlign))] : 0;
  const std::size_t a = align ? align : s.heap_alignment;
  const std::uint32_t value = in_.u32();
  const bool emit_bit = (in_.u8() & 1) != 0;
  const bool emit = bytes >= wxa::test::return_imm_size && emit_bit;
  Verdict want;
  if (bytes == 0)
    want.code = Errc::zero_size;
  else if (!std::has_single_bit(a) || a > ps_)
    want.code = Errc::bad_alignment;
  else if (bytes > s.pages * ps_)
    want.code = Errc::size_too_large;
  note("heap %s %zu align %zu -> expect %s", emit ? "emit" : "allocate", bytes,
       align, id(want.code));

  std::vector<std::byte> code;
  if (emit) {
    code.resize(bytes);
    (void)wxa::test::write_return_imm(code, value, bytes);
  }
  arm(s);
  Result<wxa::Function> r =
      emit ? heap.emit(code, align) : heap.allocate(bytes, align);
  const Fault f = disarm(s);
  const Error err = r ? Error() : r.error();
  const bool ok = judge("heap allocate", err, want, true,
                        s.options.vma_budget != 0, f, true);
  if (ok) {
    const std::uintptr_t rx = addr(r->rx);
    expect(rx % a == 0 && r->rw.size() == bytes &&
               (s.kw ? in_staging(s, r->rw.data())
                     : addr(r->rw.data()) == view(s, rx)),
           "heap allocate(%zu, %zu): %#lx rw %p+%zu", bytes, a, ul(rx),
           static_cast<void*>(r->rw.data()), r->rw.size());
    // An unsealed page of the heap, after its last function; or a new one.
    auto it = s.heap_pages.upper_bound(rx);
    HeapPageM* page = nullptr;
    std::uintptr_t page_rx = 0;
    if (it != s.heap_pages.begin()) {
      --it;
      if (rx < it->first + it->second.pages * ps_) {
        page = &it->second;
        page_rx = it->first;
      }
    }
    if (page) {
      const std::size_t off = rx - page_rx;
      const std::size_t used =
          page->fns.empty()
              ? 0
              : page->fns.rbegin()->first + page->fns.rbegin()->second.size;
      expect(!page->sealed && page->pages == 1 && bytes <= ps_ && off >= used &&
                 off + bytes <= ps_,
             "heap allocate(%zu): at %#lx in a %s page of %zu, used to %zu",
             bytes, ul(rx), page->sealed ? "sealed" : "writable", page->pages,
             used);
    } else if (s.heap_reserve.erase(rx)) {
      // A page of the reserve, now in use.
      const ChunkM& m = s.chunks.at(rx);
      expect(m.pages == 1 && bytes <= ps_,
             "heap allocate(%zu): at %#lx, a reserve page", bytes, ul(rx));
      page_rx = rx;
      page = &s.heap_pages[rx];
      page->pages = 1;
    } else {
      Result<wxa::ChunkInfo> info = s.arena->find(r->rx);
      expect(bool(info) && addr(info->chunk.rx()) == rx &&
                 info->state == State::writable,
             "heap allocate(%zu): %#lx is not the start of a writable chunk",
             bytes, ul(rx));
      const std::size_t pages = bytes > ps_ ? (bytes + ps_ - 1) / ps_ : 1;
      expect(info->chunk.size() == pages * ps_,
             "heap allocate(%zu): a new chunk of %zu bytes", bytes,
             info->chunk.size());
      take_pages(s, rx, pages);
      ChunkM m;
      m.pages = pages;
      m.rw = info->chunk.rw().data();
      m.heap = true;
      s.chunks.emplace(rx, m);
      page_rx = rx;
      page = &s.heap_pages[rx];
      page->pages = pages;
    }
    if (emit) {
      expect(std::memcmp(r->rw.data(), code.data(), bytes) == 0,
             "heap emit: the code did not land");
    } else {
      for (std::byte& b : r->rw)
        expect(
            b == std::byte{0} || b == wxa::test::trap_byte_at(
                                          reinterpret_cast<std::uintptr_t>(&b)),
            "heap allocate: fresh space holds %#x", static_cast<unsigned>(b));
      if (bytes >= wxa::test::return_imm_size)
        (void)wxa::test::write_return_imm(r->rw, value);
    }
    FnM fn;
    fn.size = bytes;
    fn.value = value;
    fn.callable = bytes >= wxa::test::return_imm_size;
    page->fns[rx - page_rx] = fn;
    ++page->live;
    remember(rx);
    note("  -> %#lx", ul(rx));
  }
  sync_recycled(s);
  sync_reserve(s);
}

// A new page may have come with more (CodeHeap takes up to 8 adjacent pages
// from the arena at a time): writable single-page chunks the model does not
// know yet, as many as HeapStats::reserve_pages says.
void Harness::sync_reserve(Slot& s) {
  if (!s.heap) return;
  const std::size_t want = s.heap->stats().reserve_pages;
  if (want == s.heap_reserve.size()) return;
  expect(want > s.heap_reserve.size(),
         "heap reserve shrank from %zu to %zu without a new page",
         s.heap_reserve.size(), want);
  for (const wxa::RunInfo& r : runs_of(s)) {
    if (r.state != State::writable) continue;
    for (std::uintptr_t rx = addr(r.rx); rx < addr(r.rx) + r.bytes; rx += ps_) {
      if (chunk_at_page(s, (rx - s.rx_base) / ps_) != s.chunks.end()) continue;
      Result<wxa::ChunkInfo> info = s.arena->find(ptr(rx));
      expect(bool(info) && addr(info->chunk.rx()) == rx &&
                 info->chunk.size() == ps_ && info->state == State::writable,
             "a writable page %#lx the model does not know is not a "
             "single-page chunk of the heap's reserve",
             ul(rx));
      if (!info) continue;
      ChunkM m;
      m.pages = 1;
      m.rw = info->chunk.rw().data();
      m.heap = true;
      s.chunks.emplace(rx, m);
      s.heap_reserve.insert(rx);
      remember(rx);
    }
  }
  expect(s.heap_reserve.size() == want,
         "the heap's reserve: %zu pages, the model found %zu", want,
         s.heap_reserve.size());
}

const void* Harness::pick_heap_address(Slot& s) {
  static const char kForeign[16] = {};
  const std::uint8_t sel = in_.u8();
  if (!s.heap_pages.empty() && sel % 8 < 4) {
    auto it = s.heap_pages.begin();
    std::advance(it,
                 static_cast<std::ptrdiff_t>(in_.below(s.heap_pages.size())));
    const HeapPageM& page = it->second;
    if (sel % 8 == 3)  // anywhere in the page
      return ptr(it->first + in_.below(page.pages * ps_));
    if (!page.fns.empty()) {
      auto fn = page.fns.begin();
      std::advance(fn, static_cast<std::ptrdiff_t>(in_.below(page.fns.size())));
      const std::size_t inner = sel % 8 == 2 && fn->second.size > 1
                                    ? 1 + in_.below(fn->second.size - 1)
                                    : 0;
      return ptr(it->first + fn->first + inner);
    }
  }
  switch (sel % 8) {
    case 4:
      if (!stale_.empty()) return ptr(stale_[in_.below(stale_.size())]);
      break;
    case 5:
      return nullptr;
    case 6:
      return kForeign;
    default:
      break;
  }
  return pick_address(s);
}

void Harness::op_heap_release(Slot& s) {
  CodeHeap& heap = need_heap(s);
  const void* p = pick_heap_address(s);
  // The model: the heap's page holding p, then the function at p.
  Verdict want;
  HeapPageM* page = nullptr;
  std::size_t off = 0;
  if (!p) {
    want = {Errc::null_pointer, nullptr, 0};
  } else {
    auto it = s.heap_pages.upper_bound(addr(p));
    if (it != s.heap_pages.begin()) {
      --it;
      if (addr(p) < it->first + it->second.pages * ps_) {
        page = &it->second;
        off = addr(p) - it->first;
      }
    }
    if (!page) {
      want = {Errc::foreign_pointer, p, 0};
    } else {
      auto fn = page->fns.find(off);
      if (fn != page->fns.end()) {
        if (fn->second.dead) want = {Errc::double_release, p, 0};
      } else {
        want = {Errc::not_allocated, p, 0};
        auto next = page->fns.upper_bound(off);
        if (next != page->fns.begin()) {
          const auto& prev = *std::prev(next);
          if (!prev.second.dead && off < prev.first + prev.second.size)
            want = {Errc::interior_pointer, p, 0};
        }
      }
    }
  }
  note("heap release %p -> expect %s", p, id(want.code));
  stale(s);
  Result<void> r = heap.release(p);
  const Error err = r ? Error() : r.error();
  if (!judge("heap release", err, want, false, false, Fault{}, false)) return;
  FnM& fn = page->fns.at(off);
  fn.dead = true;
  --page->live;
}

void Harness::op_heap_publish(Slot& s) {
  CodeHeap& heap = need_heap(s);
  // Unsealed pages are sealed, or released if every function on them died;
  // sealed pages with no live function are released.
  std::size_t n = 0;
  for (const auto& [rx, page] : s.heap_pages)
    n += !page.sealed || page.live == 0;
  const CommitFlags flags =
      in_.below(4) == 0 ? CommitFlags::barrier : CommitFlags::none;
  note("heap publish (%zu chunks)", n);
  arm(s);
  Result<wxa::CommitReport> r = heap.publish(flags);
  const Fault f = disarm(s);
  const Error err = r ? Error() : r.error();
  if (!judge("heap publish", err, Verdict{}, false, s.options.vma_budget != 0,
             f, false))
    return;
  expect(r->chunks == n, "heap publish: %zu chunks, model %zu", r->chunks, n);
  std::vector<std::uintptr_t> released;
  for (auto it = s.heap_pages.begin(); it != s.heap_pages.end();) {
    HeapPageM& page = it->second;
    if (page.live == 0) {
      released.push_back(it->first);
      it = s.heap_pages.erase(it);
      continue;
    }
    if (!page.sealed) {
      page.sealed = true;
      ChunkM& c = s.chunks.at(it->first);
      c.state = State::executable;
      c.rw = nullptr;
    }
    ++it;
  }
  retire(s, released);
}

// --- The loop ----------------------------------------------------------------

void Harness::run() {
  g_trace.clear();
  const std::size_t fds = count_fds();
  for (std::size_t ops = 0; ops < kMaxOps && !in_.empty(); ++ops) {
    const std::uint8_t op = in_.u8();
    Slot& s = slots_[(op & 0xC0) == 0xC0 ? 1 : 0];
    const bool armed = s.fault_k != 0;
    switch (op & 15) {
      case 0:
        op_create(s);
        break;
      case 1:
      case 2:
        op_allocate(s);
        break;
      case 3:
        op_write(s);
        break;
      case 4:
        op_single(s, in_.u8() & 1 ? Kind::seal_read_only : Kind::seal_execute);
        break;
      case 5:
        op_single(s, Kind::unseal);
        break;
      case 6:
        op_single(s, Kind::release);
        break;
      case 7:
        op_batch(s);
        break;
      case 8:
        op_heap_allocate(s);
        break;
      case 9:
        op_heap_publish(s);
        break;
      case 10:
        op_heap_release(s);
        break;
      case 11:
        // Bits 4 and 5 of the operation byte choose nothing else (and no
        // seed from before patch sets them on a find).
        if ((op & 0x30) == 0x30)
          op_patch(s);
        else
          op_find(s);
        break;
      case 12:
        op_trim(s);
        break;
      case 13:
        op_arm(s);
        break;
      case 14:
        op_heap_create(s);
        break;
      default:
        op_destroy(s);
        break;
    }
    for (Slot& each : slots_) verify(each);
    const std::size_t every = g_platform->audit_every();
    if (ops % every == every - 1 || (armed && !s.fault_k)) kernel_check();
  }
  kernel_check();
  if (g_record)
    for (Slot& s : slots_) record_final(s);
  for (Slot& s : slots_) {
    s.fault_k = 0;
    destroy_arena(s);
  }
  expect(count_fds() == fds, "%zu descriptors open after the input, %zu before",
         count_fds(), fds);
}

}  // namespace

void run_input(Platform& platform, const std::uint8_t* data, std::size_t size) {
  g_platform = &platform;
  g_transcript.clear();
  g_unmap_failed = false;
  Harness(data, size).run();
  platform.end_input(g_unmap_failed);
}

const std::string& trace() { return g_trace; }

void record_transcript(bool on) { g_record = on; }

const std::vector<std::string>& transcript() { return g_transcript; }

}  // namespace wxa::fuzz
