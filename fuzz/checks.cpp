// SPDX-License-Identifier: MIT
// Checks the arena against the model after every operation (runs(), stats,
// find() and the contents of every chunk and function), and the kernel's
// mappings against the arena's runs() every few.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <vector>

#include "harness_internal.hpp"

namespace wxa::fuzz::harness {

// --- The kernel's view -----------------------------------------------------

namespace {

bool maps_exact() { return g_platform->maps_exact(); }

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

}  // namespace

// One buffer reused: a simulated platform is audited often.
const std::vector<Vma>& read_maps() {
  static std::vector<Vma> out;
  g_platform->maps(out);
  return out;
}

std::size_t count_fds() { return g_platform->handles(); }

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
// (allocate, trim), and trim() ends the quarantine of every retired chunk:
// they are then free, which the model accepts.
void Harness::sync_recycled(Slot& s, bool trimmed) {
  const std::vector<wxa::RunInfo>& runs = runs_of(s);
  const std::uint64_t allocs = allocations(s);
  for (auto it = s.chunks.begin(); it != s.chunks.end();) {
    const bool retired = it->second.state == State::retired;
    if (!(trimmed && retired) && !eligible(s, it->second, allocs)) {
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
        pending += !page.sealed || fn.appended;
        if (!fn.callable) continue;
        if (page.sealed && !fn.appended) {
          unsigned got = 0;
          expect(g_platform->returns(rx + off, fn.value, got),
                 "heap function %#lx returned %#x, not %#x", ul(rx + off), got,
                 fn.value);
        } else {
          std::byte code[wxa::test::return_imm_size];
          (void)wxa::test::write_return_imm(code, fn.value);
          const std::byte* at =
              fn.appended
                  ? fn.rw
                  : static_cast<const std::byte*>(ptr(view(s, rx) + off));
          expect(std::memcmp(at, code, sizeof code) == 0,
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

}  // namespace wxa::fuzz::harness
