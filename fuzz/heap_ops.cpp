// SPDX-License-Identifier: MIT
// The operations on CodeHeaps: create, allocate or emit, publish, release,
// destroy; each predicted by the model, run, judged and applied to it.
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iterator>
#include <vector>

#include "harness_internal.hpp"

namespace wxa::fuzz::harness {

// --- CodeHeap operations -----------------------------------------------------

void Harness::destroy_heap(Slot& s) {
  stale(s);
  if (!s.heap) return;
  const std::uint64_t commits = s.arena->stats().commits;
  s.heap.reset();  // releases every page it holds in one commit
  // If that commit failed (the VMA budget), each page was released on its
  // own, in the heap's order (its pages newest first, then its reserve),
  // each with a quarantine place of its own: those the budget still
  // refused stay as they were, no longer the heap's.
  std::vector<std::pair<std::uint64_t, std::uintptr_t>> order;
  for (const auto& [rx, page] : s.heap_pages) order.emplace_back(page.made, rx);
  std::sort(order.begin(), order.end(), std::greater<>());
  std::vector<std::uintptr_t> heads;
  for (const auto& [made, rx] : order) heads.push_back(rx);
  heads.insert(heads.end(), s.heap_reserve.begin(), s.heap_reserve.end());
  s.heap_pages.clear();
  s.heap_reserve.clear();
  s.heap_tail = 0;
  std::vector<std::uintptr_t> released;
  for (std::uintptr_t h : heads) {
    if (!s.arena->find(ptr(h))) {
      released.push_back(h);
      continue;
    }
    note("  (the heap's release of %#lx failed: an orphan page)", ul(h));
    ChunkM& c = s.chunks.at(h);
    c.heap = false;
    c.written = false;
  }
  if (released.size() == heads.size() &&
      s.arena->stats().commits - commits <= 1) {
    if (!released.empty()) retire(s, released);
    return;
  }
  for (std::uintptr_t h : released) retire(s, {h});
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
    // kernel_write: staging, or for a function appended to the sealed tail
    // page the heap's shadow page (neither staging nor the code).
    const bool shadow = s.kw && !in_staging(s, r->rw.data()) &&
                        !(addr(r->rw.data()) >= s.rx_base &&
                          addr(r->rw.data()) - s.rx_base < s.pages * ps_);
    expect(rx % a == 0 && r->rw.size() == bytes &&
               (s.kw ? in_staging(s, r->rw.data()) || shadow
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
      // A sealed one only on kernel_write, the tail page, through the shadow.
      expect((page->sealed ? shadow && page_rx == s.heap_tail : !shadow) &&
                 page->pages == 1 && bytes <= ps_ && off >= used &&
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
      page->made = ++s.heap_pages_made;
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
      page->made = ++s.heap_pages_made;
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
    fn.appended = page->sealed;
    fn.rw = r->rw.data();
    page->fns[rx - page_rx] = fn;
    if (page->pages == 1) s.heap_tail = page_rx;
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
      // Not on a page the heap holds: on arena pages no chunk holds (a
      // page the heap gave back, retired or free since), a second release;
      // elsewhere someone else's.
      want = {Errc::foreign_pointer, p, 0};
      if (const Where w = locate(s, p, false); w.inside) {
        auto c = chunk_at_page(s, w.page);
        if (c == s.chunks.end() || c->second.state == State::retired)
          want = {Errc::double_release, p, 0};
      }
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
  Verdict want;
  if (flags == CommitFlags::barrier && !s.barrier)
    want = {Errc::not_supported, nullptr, 0};  // no barrier to honour it
  note("heap publish (%zu chunks)", n);
  arm(s);
  Result<wxa::CommitReport> r = heap.publish(flags);
  const Fault f = disarm(s);
  const Error err = r ? Error() : r.error();
  if (!judge("heap publish", err, want, false, s.options.vma_budget != 0, f,
             settling(s, f)))
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
    for (auto& [off, fn] : page.fns) fn.appended = false;
    ++it;
  }
  // Elsewhere the tail takes nothing once sealed.
  if (!s.kw || !s.heap_pages.count(s.heap_tail)) s.heap_tail = 0;
  retire(s, released);
}

}  // namespace wxa::fuzz::harness
