// SPDX-License-Identifier: MIT
// The reference model's verdicts: where an address falls, what a
// transition must answer and what protection each state must have; and the
// injected platform failures, with the judgement of a result against both.
#include <cstddef>
#include <cstdint>
#include <map>

#include "harness_internal.hpp"

namespace wxa::fuzz::harness {

// --- The reference model ---------------------------------------------------

Where Harness::locate(const Slot& s, const void* p, bool either) const {
  const std::uintptr_t u = addr(p), bytes = s.pages * ps_;
  if (u >= s.rx_base && u - s.rx_base < bytes)
    return {true, true, (u - s.rx_base) / ps_};
  if (either && s.kw && u >= s.rw_base && u - s.rw_base < s.rw_bytes) {
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

// The rules of src/commit.cpp's validate(), from the header's contract.
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
    // The injected call, not the first that failed: a hinted reservation
    // may fail on its own before it (no room there) and be retried.
    for (const wxa::test::PalEvent& e : s.pal->log())
      if (e.injected) {
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

}  // namespace wxa::fuzz::harness
