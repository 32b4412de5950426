// SPDX-License-Identifier: MIT
// The arena: its creation (as steps), chunk allocation, lookups, stats and
// runs, and the public Arena over it.
#include <algorithm>
#include <limits>
#include <new>

#include "arena_impl.hpp"
#include "error.hpp"
#include "pal/cpu.hpp"

namespace wxa {
namespace detail {
ArenaImpl::ArenaImpl(Pal& pal, const Options& options) noexcept
    : pal_(pal), options_(options) {}

ArenaImpl::~ArenaImpl() {
  for (const Idle& idle : idle_scratch_) {
    Scratch* s = idle.scratch;
    // Made by the backend's content writer (only a backend with one makes
    // plans).
    if (s->plan) region_.ops().content_writer()->destroy_plan(s->plan);
    s->~Scratch();
    meta_free(s);
  }
  region_.destroy(sys_);
}

std::unique_lock<std::mutex> ArenaImpl::acquire() const noexcept {
  std::unique_lock lock(mutex_, std::try_to_lock);
  if (!lock.owns_lock()) relock(lock);
  return lock;
}

void ArenaImpl::relock(std::unique_lock<std::mutex>& lock) noexcept {
  // A few microseconds, then block.
  for (int k = 0; k < 64; ++k) {
    if (lock.try_lock()) return;
    for (int p = 0; p < 8; ++p) cpu_relax();
  }
  lock.lock();
}

ArenaImpl::Scratch* ArenaImpl::take_scratch() noexcept {
  const std::size_t slot = my_slot();
  if (!idle_scratch_.empty()) {
    // The one this thread used last, if idle: its memory (the plan, the
    // bytes saved for an undo) is in this core's cache, not another's.
    auto it = std::find_if(idle_scratch_.rbegin(), idle_scratch_.rend(),
                           [slot](const Idle& e) { return e.slot == slot; });
    if (it != idle_scratch_.rend()) std::iter_swap(it, idle_scratch_.rbegin());
    Scratch* s = idle_scratch_.back().scratch;
    idle_scratch_.pop_back();
    return s;
  }
  // One more commit in progress than ever before: room to give it back.
  try {
    idle_scratch_.reserve(scratch_made_ + 1);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
  void* mem = meta_alloc(sizeof(Scratch));
  if (!mem) return nullptr;
  ++scratch_made_;
  return ::new (mem) Scratch;
}

void ArenaImpl::give_scratch(Scratch* s) noexcept {
  // Capacity reserved in take_scratch().
  idle_scratch_.push_back(Idle{s, my_slot()});
}

// Creating the arena, as steps: the reservation's size, the backends to
// try, the anchor's range, the budgets, the region, the recycling policy.
Result<void> ArenaImpl::init() noexcept {
  // Who made the arena: a child of any kind sees another token.
  if (Result<std::uint64_t> token = process_token(sys_); token)
    process_token_ = *token;
  else
    return token.error();
  fork_generation_ = fork_generation();
  const Capabilities& caps = pal_.capabilities();
  Result<std::size_t> pages = reservation_pages(caps.page_size);
  if (!pages) return pages.error();
  // Every backend this host allows, best first (or the one asked for), as
  // the platform layer found what each needs by trying; if the first
  // cannot be created after all, the next is tried.
  const BackendFacts* candidates[kMaxBackends];
  Result<std::size_t> ncandidates =
      backend_candidates(options_.backend, caps, candidates);
  if (!ncandidates) return ncandidates.error();
  std::uintptr_t lo = 0, hi = 0;
  if (Result<void> r = anchor_range(*pages * caps.page_size, lo, hi); !r)
    return r;
  vma_budget_ = options_.vma_budget
                    ? options_.vma_budget
                    : std::max<std::size_t>(caps.max_map_count / 4, 16);
  if (options_.open_pages == 0) options_.open_pages = 1;
  if (Result<void> r = make_region(candidates, *ncandidates, *pages, lo, hi);
      !r)
    return r;
  try {
    unused_.emplace(0, static_cast<std::uint32_t>(*pages));
    idle_scratch_.reserve(4);
  } catch (const std::bad_alloc&) {
    return Error(Errc::out_of_memory, kNoMemory);
  }
  set_recycling();
  if (ContentWriter* w = region_.ops().content_writer();
      w && w->plans_without_lock())
    quick_writer_ = w;
  if (caps.barrier) barrier_registered_ = bool(pal_.register_barrier(sys_));
  return {};
}

Result<std::size_t> ArenaImpl::reservation_pages(
    std::size_t page_size) const noexcept {
  if (options_.reserve_bytes == 0) return Error(Errc::invalid_argument);
  if (options_.reserve_bytes > (std::size_t{1} << 46))
    return Error(Errc::size_too_large);
  const std::size_t pages =
      (options_.reserve_bytes + page_size - 1) / page_size;
  if (pages > std::numeric_limits<std::uint32_t>::max() / 2)
    return Error(Errc::size_too_large);
  return pages;
}

Result<void> ArenaImpl::anchor_range(std::size_t bytes, std::uintptr_t& lo,
                                     std::uintptr_t& hi) const noexcept {
  if (!options_.anchor) return {};
  // Every byte of the reservation within `reach` of the anchor.
  const std::size_t ps = pal_.capabilities().page_size;
  const std::uintptr_t reach =
      options_.reach ? options_.reach : (std::uintptr_t{1} << 31) - ps;
  if (reach < bytes) return Error(Errc::unreachable_anchor);
  const auto anchor = reinterpret_cast<std::uintptr_t>(options_.anchor);
  lo = anchor > reach ? anchor - reach + 1 : ps;
  hi = anchor + reach < anchor ? std::numeric_limits<std::uintptr_t>::max()
                               : anchor + reach;
  return {};
}

Result<void> ArenaImpl::make_region(const BackendFacts** candidates,
                                    std::size_t count, std::size_t pages,
                                    std::uintptr_t lo,
                                    std::uintptr_t hi) noexcept {
  // A VMA budget too small for a backend's own mappings rules it out; for
  // automatic, the next one may fit.
  std::size_t fits = 0;
  for (std::size_t k = 0; k < count; ++k)
    if (candidates[k]->initial_vmas <= vma_budget_)
      candidates[fits++] = candidates[k];
  if (fits == 0) return Error(Errc::invalid_argument);
  if (options_.lanes > PageBackend::kLaneLimit)
    return Error(Errc::invalid_argument);
  const std::size_t lanes =
      options_.lanes
          ? options_.lanes
          : std::min<std::size_t>(pal_.capabilities().cpus, kDefaultMaxLanes);
  Result<void> made;
  for (std::size_t k = 0; k < fits; ++k) {
    made = region_.init(pal_, *candidates[k], pages, lo, hi,
                        options_.name_mappings, lanes, sys_);
    // No range within reach of the anchor: another backend, needing the
    // same range, would not find one either. Out of memory (an address
    // space limit, say) is worth another try: backends reserve different
    // amounts (kernel_write its staging besides the code).
    if (made || made.error().code() == Errc::unreachable_anchor) break;
  }
  if (!made) return made;
  if (vma_budget_ < region_.vmas()) return Error(Errc::invalid_argument);
  return {};
}

void ArenaImpl::set_recycling() noexcept {
  // Where recycling changes protection, quarantined pages come back
  // open_pages at a time, one call per coalesced run. Where retired and
  // open pages look the same to the kernel (trapped code, mapped
  // read+execute), recycling makes no call, and pages come back in small
  // groups instead: recently written pages are reused while they are
  // still in the caches, rather than the arena cycling through open_pages
  // of fresh ones, and a barrier (needed once per group, when its first
  // address is reused) stays rare.
  bool recycling_is_free = true;
  for (int v = 0; v < region_.views(); ++v)
    recycling_is_free &= region_.access(PageState::retired, View(v)) ==
                         region_.access(PageState::open, View(v));
  recycle_pages_ =
      recycling_is_free
          ? std::min<std::size_t>(options_.open_pages, kFreeRecyclePages)
          : options_.open_pages;
}

Chunk ArenaImpl::chunk_at(std::size_t head, bool writable) const noexcept {
  const std::size_t bytes = std::size_t{region_.length(head)}
                            << region_.page_shift();
  return Chunk(writable ? region_.ops().staged(static_cast<std::uint32_t>(head))
                        : nullptr,
               region_.rx_page(head), bytes);
}

Result<Chunk> ArenaImpl::allocate(std::size_t bytes) noexcept {
  if (bytes == 0) return Error(Errc::zero_size);
  const std::size_t ps = region_.page_size();
  if (bytes > region_.pages() * ps) return Error(Errc::size_too_large);
  const std::size_t pages = (bytes + ps - 1) >> region_.page_shift();

  if (foreign_process()) return Error(Errc::wrong_process);  // before the lock
  std::unique_lock lock = acquire();
  Result<std::uint32_t> head = allocate_locked(pages);
  if (!head) return head.error();
  const Chunk chunk = chunk_at(*head, true);
  fill_staging(lock, &chunk, 1);
  return chunk;
}

void ArenaImpl::fill_staging(std::unique_lock<std::mutex>& lock,
                             const Chunk* chunks, std::size_t n) noexcept {
  if (!region_.ops().stage_needs_traps()) return;
  // Staging recycled from other chunks: traps over whatever it held, so no
  // stale byte ever becomes code. The chunks are no one else's yet; the
  // lock is not needed for this.
  lock.unlock();
  for (std::size_t k = 0; k < n; ++k)
    region_.ops().trap_staging(
        static_cast<std::uint32_t>(region_.index_of(chunks[k].rx(), false)),
        static_cast<std::uint32_t>(chunks[k].rw().size() >>
                                   region_.page_shift()));
}

Result<void> ArenaImpl::make_writable(std::uint32_t head,
                                      std::uint32_t n) noexcept {
  if (Result<std::byte*> st = region_.ops().stage(head, n, false); !st)
    return st.error();
  region_.set_state(head, head + n, PageState::writable, head);
  region_.set_length(head, n);
  ++chunks_[static_cast<int>(State::writable)];
  ++allocations_;
  return {};
}

Result<std::size_t> ArenaImpl::allocate_pages(std::size_t most,
                                              Chunk* out) noexcept {
  if (most == 0) return Error(Errc::zero_size);
  if (foreign_process()) return Error(Errc::wrong_process);  // before the lock
  std::unique_lock lock = acquire();
  Result<std::uint32_t> first = allocate_locked(1);
  if (!first) return first.error();
  out[0] = chunk_at(*first, true);
  // The pages after it, while they are open: the front of what is left of
  // the run the first came from.
  std::size_t n = 1;
  while (n < most) {
    const auto head = static_cast<std::uint32_t>(*first + n);
    auto it = open_.find(head);
    if (it == open_.end() || !make_writable(head, 1)) break;
    carve_front(open_, it, 1);
    out[n++] = chunk_at(head, true);
  }
  fill_staging(lock, out, n);
  return n;
}

Result<std::uint32_t> ArenaImpl::allocate_locked(std::size_t pages) noexcept {
  try {
    // With lanes, this thread's lane first: its open pages, its recycled
    // ones, fresh ones opened there; then any lane.
    const bool lanes = region_.lanes() > 1;
    std::ptrdiff_t a = take_open(pages, lanes);
    if (a < 0) {
      // Quarantined pages come back in groups, once recycle_pages_ of them
      // have passed the quarantine (see init()). Until then fresh address
      // space is opened (it costs no memory until written). When the
      // reservation runs out, whatever may be reused is.
      Result<void> recycled;
      if (eligible_pages() >= recycle_pages_) {
        recycled = recycle();
        a = take_open(pages, lanes);
      }
      // A lane without room, or whose pages cannot be opened (its memfd
      // not made: no descriptor left, say), leaves the chunk to the other
      // lanes' open pages; that error is the allocation's if they have
      // none.
      Result<void> lane_error;
      if (a < 0 && lanes) {
        Result<void> in_lane = open_more(pages, true);
        if (in_lane)
          a = take_open(pages, true);
        else if (in_lane.error().code() != Errc::exhausted)
          lane_error = in_lane.error();
        if (a < 0) a = take_open(pages, false);
        // Opening more elsewhere could try the failing lane again.
        if (a < 0 && !lane_error) return lane_error.error();
      }
      if (a < 0) {
        Result<void> opened = open_more(pages);
        if (opened) {
          a = take_open(pages);
        } else {
          // Recycled pages may complete a span with free pages around them.
          const std::size_t waiting = quarantine_.size();
          recycled = recycle();
          a = take_open(pages);
          if (a < 0 && recycled && quarantine_.size() < waiting &&
              opened.error().code() == Errc::exhausted) {
            opened = open_more(pages);
            if (opened) a = take_open(pages);
          }
          if (a < 0) return recycled ? opened.error() : recycled.error();
        }
      }
    }
    if (a < 0) return Error(Errc::exhausted);
    const auto head = static_cast<std::uint32_t>(a);
    const auto n = static_cast<std::uint32_t>(pages);
    if (Result<void> made = make_writable(head, n); !made) {
      insert_run(open_, head, n);  // merges back: no allocation
      return made.error();
    }
    return head;
  } catch (const std::bad_alloc&) {
    return Error(Errc::out_of_memory, kNoMemory);
  }
}

Result<ChunkInfo> ArenaImpl::find(const void* p) const noexcept {
  if (!p) return Error(Errc::null_pointer);
  if (foreign_process()) return Error(Errc::wrong_process);  // before the lock
  const std::unique_lock lock = acquire();
  const std::ptrdiff_t i = region_.index_of(p, true);
  if (i < 0) {
    // Writable memory no chunk holds now (staging, where there is some).
    const std::span<std::byte> rw = region_.ops().rw_range();
    const auto* b = static_cast<const std::byte*>(p);
    if (b >= rw.data() && b < rw.data() + rw.size())
      return Error(Errc::not_allocated, 0, p);
    return Error(Errc::foreign_pointer, 0, p);
  }
  const PageState s = region_.state(static_cast<std::size_t>(i));
  if (s == PageState::unused || s == PageState::open || s == PageState::retired)
    return Error(Errc::not_allocated, 0, p);
  const std::uint32_t head = region_.head(static_cast<std::size_t>(i));
  ChunkInfo info;
  info.chunk = chunk_at(head, s == PageState::writable);
  info.state = to_public(s);
  const bool in_rx = region_.index_of(p, false) >= 0;
  const std::byte* base =
      in_rx ? region_.rx_page(head) : region_.ops().staged(head);
  info.offset =
      static_cast<std::size_t>(static_cast<const std::byte*>(p) - base);
  return info;
}

Stats ArenaImpl::stats() const noexcept {
  Stats s;
  // In a child the lock may never be free: what is known without it.
  if (foreign_process()) {
    s.backend = region_.backend();
    s.page_size = region_.page_size();
    s.reserved_bytes = region_.pages() * region_.page_size();
    return s;
  }
  const std::unique_lock lock = acquire();
  s.backend = region_.backend();
  const std::size_t ps = region_.page_size();
  s.page_size = ps;
  s.reserved_bytes = region_.pages() * ps;
  s.open_bytes = region_.count(PageState::open) * ps;
  s.committed_bytes = (region_.pages() - region_.count(PageState::unused)) * ps;
  s.bytes[int(State::free)] =
      (region_.count(PageState::unused) + region_.count(PageState::open)) * ps;
  s.bytes[int(State::writable)] = region_.count(PageState::writable) * ps;
  s.bytes[int(State::executable)] = region_.count(PageState::executable) * ps;
  s.bytes[int(State::read_only)] = region_.count(PageState::read_only) * ps;
  s.bytes[int(State::retired)] = region_.count(PageState::retired) * ps;
  for (int i = 0; i < 5; ++i) s.chunks[i] = chunks_[i];
  s.vmas = region_.vmas();
  s.vma_budget = vma_budget_;
  s.syscalls = sys_;
  s.allocations = allocations_;
  s.commits = commits_;
  s.runs = run_count_;
  s.protection_calls = protection_calls_;
  s.flushes = flushes_;
  s.barriers = barriers_;
  s.staging_bytes = region_.ops().staging_bytes();
  s.staging_resident_bytes = region_.ops().staging_resident_bytes();
  return s;
}

std::vector<RunInfo> ArenaImpl::runs() const {
  std::vector<RunInfo> out;
  if (foreign_process()) return out;  // the lock may never be free here
  const std::unique_lock lock = acquire();
  const std::size_t n = region_.pages();
  std::size_t i = 0;
  while (i < n) {
    const PageState s = region_.state(i);
    std::size_t j = i + 1;
    while (j < n && region_.state(j) == s) ++j;
    RunInfo r;
    r.rx = region_.rx_page(i);
    r.rw = region_.rw_page(i);  // nullptr where writable bytes are staged
    r.bytes = (j - i) << region_.page_shift();
    r.state = to_public(s);
    r.open = s == PageState::open;
    r.rx_access = region_.access(s, View::rx);
    r.rw_access = region_.ops().views() == 2       ? region_.access(s, View::rw)
                  : region_.ops().facts().rw_is_rx ? r.rx_access
                                                   : Access::none;
    out.push_back(r);
    i = j;
  }
  return out;
}

}  // namespace detail

// --- Arena -----------------------------------------------------------------

Result<Arena> detail::create_arena(const Options& options,
                                   detail::Pal& pal) noexcept {
  void* mem = detail::meta_alloc(sizeof(detail::ArenaImpl));
  if (!mem) return Error(Errc::out_of_memory, kNoMemory);
  auto* impl = ::new (mem) detail::ArenaImpl(pal, options);
  if (Result<void> r = impl->init(); !r) {
    impl->~ArenaImpl();
    detail::meta_free(mem);
    return r.error();
  }
  return Arena(impl);
}

detail::ArenaImpl& detail::impl_of(Arena& arena) noexcept {
  return *arena.impl_;
}

Result<Arena> Arena::create(const Options& options) noexcept {
  return detail::create_arena(options, detail::system_pal());
}

Arena::Arena(Arena&& other) noexcept : impl_(other.impl_) {
  other.impl_ = nullptr;
}

Arena& Arena::operator=(Arena&& other) noexcept {
  if (this != &other) {
    this->~Arena();
    impl_ = other.impl_;
    other.impl_ = nullptr;
  }
  return *this;
}

Arena::~Arena() {
  if (impl_) {
    impl_->~ArenaImpl();
    detail::meta_free(impl_);
    impl_ = nullptr;
    // The per-page metadata of a large reservation is megabytes.
    detail::meta_collect();
  }
}

// A moved-from arena has no implementation: every call answers
// invalid_argument, or an empty result, instead of dereferencing null.
namespace {
constexpr Errc kNoArena = Errc::invalid_argument;
}  // namespace

Result<Chunk> Arena::allocate(std::size_t bytes) noexcept {
  if (!impl_) return Error(kNoArena);
  return impl_->allocate(bytes);
}

Result<void> Arena::seal(const void* rx, Seal to) noexcept {
  if (!impl_) return Error(kNoArena);
  const Batch::Op op{rx, to == Seal::execute ? detail::OpKind::seal_execute
                                             : detail::OpKind::seal_read_only};
  Result<CommitReport> r = impl_->commit(&op, 1, CommitFlags::none);
  if (!r) return r.error();
  return {};
}

Result<Chunk> Arena::unseal(const void* rx) noexcept {
  if (!impl_) return Error(kNoArena);
  const Batch::Op op{rx, detail::OpKind::unseal};
  Result<CommitReport> r = impl_->commit(&op, 1, CommitFlags::none);
  if (!r) return r.error();
  Result<ChunkInfo> info = impl_->find(rx);
  if (!info) return info.error();
  return info->chunk;
}

Result<void> Arena::release(const void* rx) noexcept {
  if (!impl_) return Error(kNoArena);
  const Batch::Op op{rx, detail::OpKind::release};
  Result<CommitReport> r = impl_->commit(&op, 1, CommitFlags::none);
  if (!r) return r.error();
  return {};
}

Result<void> Arena::patch(const void* at,
                          std::span<const std::byte> bytes) noexcept {
  if (!impl_) return Error(kNoArena);
  if (bytes.size() > std::numeric_limits<std::uint32_t>::max())
    return Error(Errc::out_of_bounds, 0, at);
  const Batch::Op op{at, detail::OpKind::patch,
                     static_cast<std::uint32_t>(bytes.size()), bytes.data()};
  Result<CommitReport> r = impl_->commit(&op, 1, CommitFlags::none);
  if (!r) return r.error();
  return {};
}

Result<ChunkInfo> Arena::find(const void* address) const noexcept {
  if (!impl_) return Error(kNoArena);
  return impl_->find(address);
}

Result<void> Arena::trim() noexcept {
  if (!impl_) return Error(kNoArena);
  return impl_->trim();
}
Stats Arena::stats() const noexcept { return impl_ ? impl_->stats() : Stats{}; }
Backend Arena::backend() const noexcept {
  return impl_ ? impl_->backend() : Backend::automatic;
}
std::size_t Arena::page_size() const noexcept {
  return impl_ ? impl_->region().page_size() : 0;
}
std::span<const std::byte> Arena::range() const noexcept {
  if (!impl_) return {};
  const detail::Region& r = impl_->region();
  return {r.rx_base(), r.pages() * r.page_size()};
}
std::span<std::byte> Arena::rw_range() const noexcept {
  if (!impl_) return {};
  return impl_->region().ops().rw_range();
}
std::vector<RunInfo> Arena::runs() const {
  return impl_ ? impl_->runs() : std::vector<RunInfo>{};
}

}  // namespace wxa
