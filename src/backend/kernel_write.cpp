// SPDX-License-Identifier: MIT
// The kernel_write backend: code pages that are never writable in this
// process. The reservation is backed by memfds, one per lane (a power-of-two
// run of pages; one lane unless Options::lanes asks for more), mapped
// read+execute (read-only for sealed data) wherever pages are in use; no
// mapping of them is ever writable. Threads publishing in different lanes
// write to different files, which the kernel does not serialise.
// A writable chunk is staged in ordinary read-write memory (a bounded pool
// reserved right next to the code, see staging.hpp); a commit hands the
// staged bytes to the kernel,
// which copies them into the memfd with one pwritev per contiguous run, and
// the executable view shows them at once. Retiring a chunk overwrites it
// with trap instructions the same way. No page changes protection on the
// hot path, so no TLB shootdown is ever paid to publish code, and fresh
// pages are mapped in with one MADV_POPULATE_READ instead of a fault each.
//
// Everything this backend does is in this file and its staging pool's
// (staging.cpp); the contracts it implements are in backend.hpp and
// content_writer.hpp.
#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <new>

#include "backend/backend.hpp"
#include "backend/code_files.hpp"
#include "backend/staging.hpp"
#include "backend/traps.hpp"

namespace wxa::detail {
namespace {

class KernelWriteBackend final : public PageBackend, public ContentWriter {
 public:
  const BackendFacts& facts() const noexcept override;
  ContentWriter* content_writer() noexcept override { return this; }

  void set_lanes(std::size_t lanes) noexcept override { want_lanes_ = lanes; }
  std::size_t lane_pages() const noexcept override {
    return files_.lane_count > 1 ? std::size_t{1} << files_.lane_shift : 0;
  }

  Result<void> init(Pal& pal, std::size_t pages, unsigned shift,
                    std::uintptr_t lo, std::uintptr_t hi, bool name,
                    SyscallCounts& n) noexcept override {
    pal_ = &pal;
    pages_ = pages;
    shift_ = shift;
    const Capabilities& caps = pal.capabilities();
    if (!caps.shared_memory || !caps.shared_exec || !caps.shared_write)
      return Error(Errc::not_supported);

    populated_ = meta_zeroed<std::uint8_t>(pages);
    written_ = meta_zeroed<std::uint8_t>(pages);
    extent_ = meta_zeroed<std::uint32_t>(pages);
    if (!populated_ || !written_ || !extent_)
      return Error(Errc::out_of_memory, kNoMemory);
    files_.traps = shared_trap_page(std::size_t{1} << shift);
    if (!files_.traps) return Error(Errc::not_supported);

    // Lanes of a power-of-two number of pages, at least kMinLanePages.
    std::size_t lanes = std::clamp<std::size_t>(want_lanes_, 1, kLaneLimit);
    lanes = std::min(lanes, std::max<std::size_t>(1, pages / kMinLanePages));
    const std::size_t per_lane = std::bit_ceil((pages + lanes - 1) / lanes);
    files_.lane_shift = static_cast<unsigned>(std::countr_zero(per_lane));
    files_.lane_count = (pages + per_lane - 1) / per_lane;
    files_.shift = shift;
    files_.pal = &pal;
    if (Result<void> r = staging_.allocate(pages, shift, files_.lane_shift,
                                           files_.lane_count, files_.traps);
        !r)
      return r;
    // The first lane's memfd now, so that a host refusing memfds refuses
    // the backend at once; the others when their first page is opened.
    if (Result<void> r = make_lane(0, n); !r) return r;
    // The executable view's address range; pages are mapped into it as they
    // are opened (set_access), from their lane's memfd, read+execute.
    // Without an anchor the staging is reserved first and the code right
    // below it, so that read-write data a JIT keeps in staging stays within
    // 32-bit reach of the code (staging.hpp); with one, the code goes where
    // the anchor asks and the staging as near it as it can.
    Result<std::byte*> rx = Error(Errc::unreachable_anchor);
    if (hi <= lo) {
      if (Result<void> r = staging_.reserve(pal, n); !r) {
        destroy(n);
        return r;
      }
      const std::uintptr_t page = std::uintptr_t{1} << shift_;
      const std::uintptr_t fenced = bytes() + 2 * page;  // with its guards
      const std::uintptr_t top =
          reinterpret_cast<std::uintptr_t>(staging_.base()) - page;
      if (top > fenced)
        rx = pal.reserve_view(files_.shm[0], bytes(), top - fenced, top,
                              Access::read_execute, n);
      if (!rx && rx.error().code() == Errc::unreachable_anchor) {
        rx = pal.reserve_view(files_.shm[0], bytes(), 0, 0,
                              Access::read_execute, n);
        // The code went elsewhere: the staging follows it (map()).
        if (rx) {
          rx_base_ = *rx;
          if (Result<void> r = staging_.unreserve(n); !r) {
            destroy(n);
            return r;
          }
        }
      }
    } else {
      rx = pal.reserve_view(files_.shm[0], bytes(), lo, hi,
                            Access::read_execute, n);
    }
    if (!rx) {
      Error e = rx.error();
      destroy(n);
      return e;
    }
    rx_base_ = *rx;
    files_.rx_base = rx_base_;

    // Staging, near the code (see staging.hpp).
    if (Result<void> r = staging_.map(pal, rx_base_, name, n); !r) {
      destroy(n);
      return r;
    }
    return {};
  }

  void destroy(SyscallCounts& n) noexcept override {
    if (rx_base_) (void)pal_->unmap_view(rx_base_, bytes(), n);
    staging_.unmap(n);
    for (SharedHandle& h : files_.shm) {
      if (h.valid()) (void)pal_->close_shared(h, n);
      h = SharedHandle{};
    }
    rx_base_ = files_.rx_base = nullptr;
  }

  // --- what the kernel shows ------------------------------------------------

  int views() const noexcept override { return 1; }

  Access access(PageState s, View v) const noexcept override {
    if (v == View::rw) return Access::none;  // no writable view exists
    switch (s) {
      case PageState::unused:
        return Access::none;
      case PageState::read_only:
        return Access::read;
      default:
        // open (traps or zeros), writable (traps, or the last sealed code
        // until the seal), executable, retired (traps).
        return Access::read_execute;
    }
  }

  Result<void> set_access(View, std::size_t a, std::size_t b, Access want,
                          SyscallCounts& n) noexcept override {
    const std::size_t len = (b - a) << shift_;
    std::memset(populated_.get() + a, 0, b - a);
    if (want == Access::none) return pal_->reset(rx_page(a), len, n);
    // Read-only data: removing execute is an mprotect (never refused by a
    // deny_execmem policy). Gaining execute is always a mapping of the
    // memfd, never an mprotect.
    if (want == Access::read) return pal_->protect(rx_page(a), len, want, n);
    // The region never asks for a change across a lane edge.
    const std::size_t lane = a >> files_.lane_shift;
    if (Result<void> r = make_lane(lane, n); !r) return r;
    return pal_->map_shared(rx_page(a), len, files_.shm[lane],
                            files_.local_offset(a << shift_), want, n);
  }

  std::size_t fixed_vmas() const noexcept override { return 1; }  // staging

  Result<void> decommit(std::size_t a, std::size_t b,
                        SyscallCounts& n) noexcept override {
    std::memset(populated_.get() + a, 0, b - a);
    std::memset(written_.get() + a, 0, b - a);  // holes again: zeros
    for (std::size_t x = a; x < b;) {
      const std::size_t lane = x >> files_.lane_shift;
      const std::size_t y = std::min(b, (lane + 1) << files_.lane_shift);
      if (files_.shm[lane].valid()) {  // else never opened: nothing to free
        if (Result<void> r = pal_->discard_shared(
                files_.shm[lane], files_.local_offset(x << shift_),
                (y - x) << shift_, rx_page(x), n);
            !r)
          return r;
      }
      x = y;
    }
    return {};
  }

  bool revoke_before_decommit() const noexcept override { return true; }

  // --- staging
  // ----------------------------------------------------------------

  Result<std::byte*> stage(std::uint32_t head, std::uint32_t pages,
                           bool keep_code) noexcept override {
    std::byte* p = staging_.take(head, pages);
    // Writable chunks not yet sealed hold the whole pool (or it is too
    // fragmented for this one).
    if (!p) return Error(Errc::exhausted);
    const std::size_t len = std::size_t{pages} << shift_;
    if (keep_code) {
      std::memcpy(p, rx_page(head), len);  // readable in every sealed state
      staging_.mark_written(head, pages);
    }
    return p;
  }

  void trap_staging(std::uint32_t head, std::uint32_t pages) noexcept override {
    staging_.fill(head, pages);
  }

  void unstage(std::uint32_t head, std::uint32_t pages,
               bool sealed) noexcept override {
    // A seal found traps after the chunk's extent (see make_plan()): the
    // staging is clean again once what came before gets traps.
    staging_.give_back(head, pages,
                       sealed ? extent_[head] : StagingPool::kUnknown);
  }

  std::byte* staged(std::uint32_t head) const noexcept override {
    return staging_.staged(head);
  }

  bool stage_needs_traps() const noexcept override { return true; }

  std::ptrdiff_t page_of_rw(const void* p) const noexcept override {
    return staging_.page_of(p);
  }

  std::span<std::byte> rw_range() const noexcept override {
    return staging_.range();
  }
  std::byte* rw_page(std::size_t) const noexcept override { return nullptr; }

  // Retired pages were overwritten with traps when they were retired.
  void trap_fill(std::size_t, std::size_t) noexcept override {}

  Result<void> trim(SyscallCounts& n) noexcept override {
    return staging_.trim(n);
  }

  void after_commit(SyscallCounts& n) noexcept override { staging_.settle(n); }
  std::size_t staging_bytes() const noexcept override {
    return staging_.held_bytes();
  }
  std::size_t staging_resident_bytes() const noexcept override {
    return staging_.resident_bytes();
  }

  // --- the commit
  // -------------------------------------------------------------

  bool plans_without_lock() const noexcept override { return true; }

  Result<void> plan_content(ContentPlan*& plan, const ContentItem* items,
                            std::size_t count) noexcept override {
    if (!plan) {
      void* mem = meta_alloc(sizeof(Plan));
      if (!mem) return Error(Errc::out_of_memory, kNoMemory);
      plan = ::new (mem) Plan;
    }
    try {
      make_plan(static_cast<Plan&>(*plan), items, count);
    } catch (const std::bad_alloc&) {
      return Error(Errc::out_of_memory, kNoMemory);
    }
    return {};
  }

  Result<void> write_planned(ContentPlan& plan,
                             SyscallCounts& n) noexcept override {
    Plan& P = static_cast<Plan&>(plan);
    // One pwritev per contiguous group of pieces (in steady state: one).
    for (std::size_t g = 0; g < P.groups_.size(); ++g) {
      const Group& grp = P.groups_[g];
      if (Result<void> r = pal_->write_shared(
              files_.lane_of(grp.offset), files_.local_offset(grp.offset),
              P.pieces_.data() + grp.first, grp.count, n);
          !r) {
        restore(P, g + 1, n);  // the failed group may be written in part
        return r.error();
      }
    }
    P.written_groups_ = P.groups_.size();
    return {};
  }

  Result<void> finish_content(ContentPlan& plan, const ContentItem* items,
                              std::size_t count,
                              SyscallCounts& n) noexcept override {
    Plan& P = static_cast<Plan&>(plan);
    for (Extent& e : P.extents_) {
      std::swap(extent_[e.head], e.value);
      std::memset(written_.get() + e.head, 1, e.pages);
    }
    // Fresh code pages are mapped in now, with one call per run, instead of
    // faulting on the first call into them.
    if (pal_->capabilities().populate_read) {
      for (std::size_t k = 0; k < count; ++k) {
        const ContentItem& it = items[k];
        if (it.to != PageState::executable || it.data) continue;
        std::size_t a = it.head, b = it.head + it.pages;
        // Coalesce with the following items, then keep the part between
        // the first and the last page not mapped in yet.
        std::size_t end = k + 1;
        while (end < count && items[end].to == PageState::executable &&
               !items[end].data && items[end].head == b) {
          b += items[end].pages;
          ++end;
        }
        while (a < b && populated_[a]) ++a;
        while (b > a && populated_[b - 1]) --b;
        if (a < b) {
          if (Result<void> r = pal_->populate(rx_page(a), (b - a) << shift_, n);
              !r) {
            undo_content(P, n);
            return r.error();
          }
          std::memset(populated_.get() + a, 1, b - a);
        }
        k = end - 1;
      }
    }
    return {};
  }

  void undo_content(ContentPlan& plan, SyscallCounts& n) noexcept override {
    Plan& P = static_cast<Plan&>(plan);
    restore(P, P.written_groups_, n);
    // Back to the extents from before (swapped in by finish_content()).
    for (const Extent& e : P.extents_) extent_[e.head] = e.value;
  }

  void forget_undo(ContentPlan& plan) noexcept override {
    // Undo records of a commit that saved much (a mass release's old code)
    // are not kept for the next.
    Plan& P = static_cast<Plan&>(plan);
    if (P.saved_.capacity() > kKeptPlanBytes) P.saved_.release();
    if (P.pieces_.capacity() * sizeof(WritePiece) > kKeptPlanBytes)
      MetaVector<WritePiece>().swap(P.pieces_);
    if (P.undo_.capacity() * sizeof(Undo) > kKeptPlanBytes)
      MetaVector<Undo>().swap(P.undo_);
  }

  void destroy_plan(ContentPlan* plan) noexcept override {
    if (!plan) return;
    plan->~ContentPlan();
    meta_free(plan);
  }

  bool spans_fit(const SpanWrite* spans,
                 std::size_t count) const noexcept override {
    return files_.spans_fit(spans, count);
  }

  Result<void> write_spans(const SpanWrite* spans, std::size_t count,
                           SyscallCounts& n) noexcept override {
    if (Result<void> r = files_.write_spans(spans, count, n); !r) return r;
    // Appended code moves the chunk's extent (traps leave it).
    for (std::size_t k = 0; k < count; ++k) {
      const SpanWrite& w = spans[k];
      if (!w.data || w.offset + w.size <= extent_[w.head]) continue;
      extent_[w.head] = w.offset + w.size;
      std::memset(written_.get() + w.head, 1, w.pages);
    }
    return {};
  }

  void flush(std::size_t a, std::size_t b) noexcept override {
    // The kernel wrote through its own mapping of the pages; the executable
    // view gets no cache maintenance from that (AArch64: clean + invalidate
    // by virtual address, here).
    pal_->flush_icache(rx_page(a), (b - a) << shift_);
  }

 private:
  // A run of pieces written with one call, from `offset` in the reservation
  // (a group never crosses a lane edge).
  struct Group {
    std::size_t offset;
    std::size_t first, count;  // pieces
  };
  // What to write back over a piece if the commit is undone.
  struct Undo {
    std::size_t offset, bytes;
    std::size_t saved;  // in saved_, or kTraps
  };
  static constexpr std::size_t kTraps = std::numeric_limits<std::size_t>::max();

  struct UndoGroup {
    std::size_t first, end;
  };
  // A chunk's new extent, swapped with the old one once the copy is done.
  struct Extent {
    std::uint32_t head, pages;
    std::uint32_t value;
  };
  // One commit's writes: made under the arena's lock, written without it,
  // kept for undo until the next commit that uses it.
  struct Plan final : ContentPlan {
    MetaVector<WritePiece> pieces_;
    MetaVector<Group> groups_;
    std::size_t group_bytes_ = 0;
    MetaVector<Undo> undo_;
    MetaVector<UndoGroup> undo_groups_;
    MetaBytes saved_;
    MetaVector<WritePiece> restore_pieces_;
    MetaVector<Extent> extents_;
    std::size_t written_groups_ = 0;  // groups written so far
  };

  // Trap instructions to copy from: one page, repeated in the iovecs.
  [[nodiscard]] std::size_t trap_bytes() const noexcept {
    return std::size_t{1} << shift_;
  }
  void add_piece(Plan& P, std::size_t offset, const void* data,
                 std::size_t len) {
    // A piece that crosses a lane edge goes to two memfds: split there.
    const std::size_t edge = files_.lane_end(offset);
    if (offset + len > edge) {
      add_piece(P, offset, data, edge - offset);
      add_piece(P, edge, static_cast<const std::byte*>(data) + (edge - offset),
                len - (edge - offset));
      return;
    }
    if (P.groups_.empty() ||
        P.groups_.back().offset + P.group_bytes_ != offset ||
        files_.lane_start(offset)) {
      P.groups_.push_back(Group{offset, P.pieces_.size(), 0});
      P.group_bytes_ = 0;
    }
    P.group_bytes_ += len;
    // Chunks staged one after another are usually staged next to each
    // other too: one piece for all of them.
    if (P.groups_.back().count) {
      WritePiece& last = P.pieces_.back();
      if (static_cast<const std::byte*>(last.data) + last.bytes == data) {
        last.bytes += len;
        return;
      }
    }
    P.pieces_.push_back(WritePiece{data, len});
    ++P.groups_.back().count;
  }

  void add_traps(Plan& P, std::size_t offset, std::size_t len) {
    for (std::size_t at = 0; at < len; at += trap_bytes())
      add_piece(P, offset + at, files_.traps, std::min(trap_bytes(), len - at));
  }

  // An undo record: traps, or the old bytes there (copied by copy_saved()
  // once the plan is made).
  void save(Plan& P, std::size_t offset, std::size_t len, bool traps) {
    P.undo_.push_back(Undo{offset, len, traps ? kTraps : 0});
  }

  // The old bytes of the undo records, into one buffer of their total size
  // (a mass release keeps all the code it retires).
  void copy_saved(Plan& P) {
    std::size_t total = 0;
    for (const Undo& rec : P.undo_)
      if (rec.saved != kTraps) total += rec.bytes;
    P.saved_.reserve(total);
    for (Undo& rec : P.undo_) {
      if (rec.saved == kTraps) continue;
      rec.saved = P.saved_.size();
      std::memcpy(P.saved_.extend(rec.bytes), rx_base_ + rec.offset, rec.bytes);
    }
  }

  // Turns the items into pieces and their undo records; allocates, so it
  // runs before the first write.
  void make_plan(Plan& P, const ContentItem* items, std::size_t count) {
    P.pieces_.clear();
    P.groups_.clear();
    P.undo_.clear();
    P.saved_.clear();
    P.extents_.clear();
    P.written_groups_ = 0;
    std::size_t prev_start = 0, prev_end = 0;  // the last item's chunk
    for (std::size_t k = 0; k < count; ++k) {
      const ContentItem& it = items[k];
      const std::size_t off = std::size_t{it.head} << shift_;
      const std::size_t len = std::size_t{it.pages} << shift_;
      const std::size_t extent = extent_[it.head];
      // Where this item's bytes start: a gap after the previous chunk's
      // bytes, inside that chunk, holds traps already; writing them again
      // keeps adjacent chunks in one call.
      auto join = [&](std::size_t at) {
        if (P.groups_.empty() || at != prev_end) return;
        const std::size_t end = P.groups_.back().offset + P.group_bytes_;
        if (end >= prev_start && end < at) add_traps(P, end, at - end);
      };
      std::size_t new_extent = extent;
      if (it.traps) {
        // A released function of a chunk that stays executable: its bytes
        // become traps (in phase with the address, as the trap page is),
        // the rest of the chunk is left alone. Past the extent the chunk
        // holds traps already: the extent stays.
        const std::size_t at = off + it.offset;
        join(at);
        save(P, at, it.size, false);
        for (std::size_t done = 0; done < it.size;) {
          const std::size_t phase = (at + done) & (trap_bytes() - 1);
          const std::size_t n =
              std::min(trap_bytes() - phase, std::size_t{it.size} - done);
          add_piece(P, at + done, files_.traps + phase, n);
          done += n;
        }
      } else if (it.data) {  // a patch of live code
        join(off + it.offset);
        save(P, off + it.offset, it.size, false);
        add_piece(P, off + it.offset, it.data, it.size);
        new_extent = std::max<std::size_t>(extent, it.offset + it.size);
      } else if (it.from == PageState::writable &&
                 (it.to == PageState::executable ||
                  it.to == PageState::read_only)) {
        // A seal: the staged bytes, up to the last that is not a trap, and
        // at least over what the code view held (an unsealed chunk's old
        // code). Pages never written hold zeros, not traps: the whole chunk
        // goes in. Undone with traps: the chunk is then writable again,
        // and a writable chunk's code view holds traps.
        bool all_written = true;
        for (std::uint32_t p = 0; p < it.pages && all_written; ++p)
          all_written = written_[it.head + p] != 0;
        const std::size_t bytes =
            all_written
                ? std::max(used_prefix(staged(it.head), len, files_.traps),
                           extent)
                : len;
        if (bytes) {
          join(off);
          save(P, off, bytes, true);
          add_piece(P, off, staged(it.head), bytes);
        }
        new_extent = bytes;
      } else if (it.to == PageState::retired ||
                 (it.from == PageState::read_only &&
                  it.to == PageState::writable)) {
        // Retired code must trap; data that stops being read-only must not
        // become executable as it is. Only what held code or data needs
        // it: the rest of the chunk holds traps, or zeros never written.
        if (extent) {
          join(off);
          save(P, off, extent, it.from == PageState::writable);
          add_traps(P, off, extent);
        }
        new_extent = 0;
      }
      // executable -> writable (unseal): the code stays until the next
      // seal; the staged copy is what the owner edits.
      if (new_extent != extent)
        P.extents_.push_back(
            Extent{it.head, it.pages, static_cast<std::uint32_t>(new_extent)});
      prev_start = off;
      // After a patch (of code or of traps) the rest of the chunk holds
      // live code, not traps: nothing may be joined over it.
      prev_end = it.data || it.traps ? SIZE_MAX : off + len;
    }
    copy_saved(P);
    // Undo records follow the pieces' order; restore() walks groups.
    P.undo_groups_.clear();
    P.undo_groups_.reserve(P.groups_.size());
    // Each group's undo records: the same offsets, one record per item.
    std::size_t u = 0;
    for (const Group& grp : P.groups_) {
      std::size_t end = grp.offset;
      for (std::size_t p = grp.first; p < grp.first + grp.count; ++p)
        end += P.pieces_[p].bytes;
      const std::size_t first = u;
      while (u < P.undo_.size() && P.undo_[u].offset < end) ++u;
      P.undo_groups_.push_back(UndoGroup{first, u});
    }
    std::size_t most = 1;  // pieces one undo record needs
    for (const Undo& rec : P.undo_)
      if (rec.saved == kTraps)
        most = std::max(most, (rec.bytes + trap_bytes() - 1) / trap_bytes());
    P.restore_pieces_.reserve(most);
  }

  // Writes back what the first `groups` groups replaced, with the cache
  // maintenance of a forward write. Fatal on failure: the code would
  // otherwise differ from what the arena says it is.
  void restore(Plan& P, std::size_t groups, SyscallCounts& n) noexcept {
    for (std::size_t g = 0; g < groups && g < P.undo_groups_.size(); ++g) {
      for (std::size_t u = P.undo_groups_[g].first; u < P.undo_groups_[g].end;
           ++u) {
        const Undo& rec = P.undo_[u];
        // One write per lane the record covers.
        for (std::size_t done = 0; done < rec.bytes;) {
          const std::size_t off = rec.offset + done;
          const std::size_t seg =
              std::min(rec.bytes - done, files_.lane_end(off) - off);
          P.restore_pieces_.clear();
          if (rec.saved == kTraps) {
            for (std::size_t at = 0; at < seg; at += trap_bytes())
              P.restore_pieces_.push_back(
                  WritePiece{files_.traps, std::min(trap_bytes(), seg - at)});
          } else {
            P.restore_pieces_.push_back(
                WritePiece{P.saved_.data() + rec.saved + done, seg});
          }
          if (!pal_->write_shared(files_.lane_of(off), files_.local_offset(off),
                                  P.restore_pieces_.data(),
                                  P.restore_pieces_.size(), n))
            fatal("cannot restore code after a failed commit", rx_base_ + off,
                  0);
          // The old bytes are code again: made visible to instruction
          // fetch as a forward write's are (flush()).
          pal_->flush_icache(rx_base_ + off, seg);
          done += seg;
        }
      }
    }
    P.written_groups_ = 0;
  }

  // Undo records larger than this are freed after their commit.
  static constexpr std::size_t kKeptPlanBytes = std::size_t{256} << 10;
  // The fewest pages a lane holds.
  static constexpr std::size_t kMinLanePages = 64;

  // The memfd of a lane, made when first needed. Named apart from
  // dual_map's memfd: no mapping of these may ever be writable, and
  // auditors (wxa-audit) check that by name.
  [[nodiscard]] Result<void> make_lane(std::size_t lane,
                                       SyscallCounts& n) noexcept {
    if (files_.shm[lane].valid()) return {};
    const std::size_t first = lane << files_.lane_shift;
    const std::size_t pages =
        std::min(std::size_t{1} << files_.lane_shift, pages_ - first);
    Result<SharedHandle> h =
        pal_->create_shared(pages << shift_, "wxarena-code", n);
    if (!h) return h.error();
    files_.shm[lane] = *h;
    return {};
  }
  std::size_t want_lanes_ = 1;
  CodeFiles files_;  // the memfds, one per lane
  StagingPool staging_;
  MetaArray<std::uint8_t> populated_;  // code page mapped in (populated)
  // Page of the memfd written since it was last a hole: it holds traps
  // wherever it holds no code or data.
  MetaArray<std::uint8_t> written_;
  // Chunk head -> bytes from its start that may hold code or data (the
  // rest of the chunk holds traps, or zeros where never written).
  MetaArray<std::uint32_t> extent_;
};

static_assert(StagingPool::kMaxLanes >= PageBackend::kLaneLimit);
static_assert(CodeFiles::kMaxLanes >= PageBackend::kLaneLimit);

}  // namespace

extern const BackendFacts kKernelWriteFacts;
const BackendFacts kKernelWriteFacts{
    .kind = Backend::kernel_write,
    // A memfd that may be mapped executable, and that the kernel copies
    // into while it is (see the probe in the platform layer).
    .refusal =
        [](const Capabilities& caps) noexcept {
          return caps.shared_memory && caps.shared_exec && caps.shared_write
                     ? Errc::ok
                     : Errc::not_supported;
        },
    .initial_vmas = 2,  // the code view and the staging memory
    .shared_memory = true,
    .rw_is_rx = false,
    .make = &new_backend<KernelWriteBackend>,
};

const BackendFacts& KernelWriteBackend::facts() const noexcept {
  return kKernelWriteFacts;
}

}  // namespace wxa::detail
