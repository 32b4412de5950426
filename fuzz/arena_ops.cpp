// SPDX-License-Identifier: MIT
// The operations on arenas and batches: create, allocate, write, seal,
// unseal, release, batch, find, trim, patch, arm a fault, destroy; each
// predicted by the model, run, judged and applied to the model.
#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <span>
#include <utility>
#include <vector>

#include "harness_internal.hpp"

namespace wxa::fuzz::harness {
namespace {

// API declared on main but not implemented yet. The model expects what the
// library does today; flip each flag when its implementation lands (and
// check the model's guesses marked "kernel_write:").
// false: Arena::create refuses Backend::kernel_write with invalid_argument,
// and Backend::automatic never picks it.
constexpr bool kKernelWriteLanded = true;
// false: Arena::patch returns not_supported (no chunk) for every input.
constexpr bool kPatchLanded = true;

}  // namespace

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
  // fails to be created (not for lack of an anchored range).
  const bool fell_back =
      o.backend == Backend::automatic && f.fired && r->backend() != resolved &&
      (resolved == Backend::kernel_write ? r->backend() != Backend::automatic
                                         : r->backend() == Backend::dual_map);
  expect(!f.fired || f.call == PalCall::name ||
             f.call == PalCall::register_barrier || fell_back,
         "create: succeeded although a required platform call failed");
  if (fell_back) resolved = r->backend();
  // Whether CommitFlags::barrier can be honoured: membarrier SYNC_CORE,
  // registered at creation.
  s.barrier = g_platform->pal().capabilities().barrier &&
              !(f.fired && f.call == PalCall::register_barrier);
  s.arena.emplace(std::move(*r));
  s.options = o;
  s.pages = pages;
  s.rx_base = addr(s.arena->range().data());
  s.rw_base = addr(s.arena->rw_range().data());
  s.rw_bytes = s.arena->rw_range().size();
  s.dual = s.arena->backend() != Backend::protect;
  s.kw = s.arena->backend() == Backend::kernel_write;
  s.lane_pages = 0;
  // kernel_write's staging pool: an eighth of the reservation, or all of it
  // up to 64 MiB, in one part of whole 64-page words per lane.
  std::size_t pool_bytes = pages * ps_;
  if (s.kw) {
    std::size_t lanes = o.lanes ? o.lanes
                                : std::min<std::size_t>(
                                      g_platform->pal().capabilities().cpus, 8);
    lanes = std::min(lanes, std::max<std::size_t>(1, pages / 64));
    const std::size_t per_lane = std::bit_ceil((pages + lanes - 1) / lanes);
    if (per_lane < pages) s.lane_pages = per_lane;
    const std::size_t parts = (pages + per_lane - 1) / per_lane;
    const std::size_t pool = std::max(
        (pages + 7) / 8, std::min(pages, (std::size_t{64} << 20) / ps_));
    pool_bytes = ((pool + parts - 1) / parts + 63) / 64 * 64 * parts * ps_;
  }
  s.released = 0;
  expect(s.arena->backend() == resolved, "create: backend %d, expected %d",
         static_cast<int>(s.arena->backend()), static_cast<int>(resolved));
  expect(s.arena->range().size() == pages * ps_ &&
             s.arena->rw_range().size() == pool_bytes && s.rx_base % ps_ == 0 &&
             s.rw_base % ps_ == 0,
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
    // kernel_write: writable chunks not yet sealed may hold the staging
    // pool (it is bounded: Options::reserve_bytes).
    const std::size_t room = s.kw ? staging_room(s) : need;
    expect(best_free < need || room < need,
           "allocate(%zu): exhausted, but %zu pages in a row were free, and "
           "%zu of staging",
           bytes, best_free, room);
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
  // kernel_write: an unseal stages the chunk's bytes, which takes a run
  // of free staging that long (the pool is bounded).
  const bool may_exhaust = kind == Kind::unseal && want.code == Errc::ok &&
                           s.kw &&
                           staging_room(s) < s.chunks.at(want.head).pages;
  if (!judge(id(kind), err, want, may_exhaust, s.options.vma_budget != 0, f,
             settling(s, f)))
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
  // A barrier asked for where there is none: refused before anything else.
  if (flags == CommitFlags::barrier && !s.barrier)
    want = {Errc::not_supported, nullptr, 0};
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
  // kernel_write: each unseal takes a run of free staging (bounded pool).
  std::size_t unseal_pages = 0;
  if (want.code == Errc::ok && s.kw)
    for (const Queued& e : q)
      if (e.kind == Kind::unseal) unseal_pages += s.chunks.at(e.v.head).pages;
  const bool may_exhaust = unseal_pages && staging_room(s) < unseal_pages;
  if (!judge("batch", err, want, may_exhaust, s.options.vma_budget != 0, f,
             settling(s, f))) {
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
  sync_recycled(s, true);
  if (!ok || f.fired) return;
  for (const auto& [rx, c] : s.chunks)
    expect(c.state != State::retired, "trim: quarantine remains at %#lx",
           ul(rx));
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
  } else if (it->second.state != State::executable) {
    // Read-only data is not code to patch; retired chunks are refused
    // too: like sealing one, not a missing chunk.
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
  if (!judge("patch", err, want, false, s.options.vma_budget != 0, f,
             settling(s, f)))
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
  s.rw_bytes = 0;
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

}  // namespace wxa::fuzz::harness
