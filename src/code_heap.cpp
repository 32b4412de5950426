// SPDX-License-Identifier: MIT
// CodeHeap: small functions bump-allocated in single-page arena chunks,
// sealed (and emptied pages released) together in one commit per publish().
//
// Layering: layer 6, on the arena and its commit engine (arena_impl.hpp).
// Space is reused at page granularity only: a page goes back to the arena
// once no live function remains on it, and comes back (trap-filled, after
// the quarantine) as a fresh page. So no byte that held code is ever
// rewritten with new code while any view of it is executable. Where the
// backend copies code in (kernel_write), a released function's bytes on a
// page that stays executable become traps in the next publish()'s commit,
// with the pages it seals; elsewhere they keep their code until the page is
// retired. A function released before its page is sealed is trap-filled at
// once.
//
// Where the backend copies code in, the last page stays the one small
// functions go to after its seal: a new function on it is written in the
// heap's shadow page and copied in by the next publish() over bytes that
// never held code (they hold traps), with the traps of released functions
// in the same pwritev; those of a function released right before the new
// ones are written into the shadow at publish, so that both go in as one
// piece (one pwrite, through the arena's quick commit of spans). A JIT
// publishing one function at a time then costs one write of that function,
// not a fresh page (staging trap-filled, copied in, faulted into the code
// view) per function.
#include "wxarena/code_heap.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <new>

#include "arena_impl.hpp"
#include "pal/cpu.hpp"

namespace wxa {
namespace detail {

class HeapImpl {
 public:
  HeapImpl(Arena& arena, ArenaImpl& impl, const HeapOptions& options) noexcept
      : arena_(arena), impl_(impl), options_(options) {}
  ~HeapImpl();

  [[nodiscard]] Result<void> init() noexcept;
  [[nodiscard]] Result<Function> allocate(std::size_t bytes,
                                          std::size_t alignment) noexcept;
  [[nodiscard]] Result<CommitReport> publish(CommitFlags flags) noexcept;
  [[nodiscard]] Result<void> release(const void* rx) noexcept;
  [[nodiscard]] HeapStats stats() const noexcept {
    HeapStats s = stats_;
    s.reserve_pages = reserve_end_ - reserve_first_;
    s.committed_bytes += s.reserve_pages << shift_;  // held too
    // Writable pages (written since the last publish, and the reserve) are
    // staging memory where the backend stages them.
    if (impl_.region().ops().stage_needs_traps()) {
      std::size_t pages = s.reserve_pages;
      for (const Page* p : pending_)
        if (!p->sealed) pages += p->pages;
      s.staging_bytes = pages << shift_;
    }
    return s;
  }
  [[nodiscard]] Arena& arena() const noexcept { return arena_; }

 private:
  // One function on a page: its offset and size; the top bit marks it dead.
  struct Fn {
    std::uint32_t offset;
    std::uint32_t size;  // kDead | bytes
  };
  static constexpr std::uint32_t kDead = 0x8000'0000u;

  // One arena chunk the heap holds: a single page of small functions, or
  // several pages for one large function.
  struct Page {
    const std::byte* rx;
    std::byte* rw;  // valid while not sealed
    std::uint32_t pages;
    std::uint32_t used = 0;  // bump offset
    std::uint32_t live = 0;
    std::uint32_t next_release = 0;  // index in fns: functions often die
                                     // in the order they were made
    bool sealed = false;
    bool queued = false;  // in pending_ (to seal) or empty_ (to release)
    MetaVector<Fn> fns;
    Page* prev = nullptr;  // every page the heap holds, in one list
    Page* next = nullptr;
  };

  [[nodiscard]] Result<Page*> new_page(std::size_t pages) noexcept;
  [[nodiscard]] Page* page_of(const void* rx) const noexcept;
  [[nodiscard]] bool index_pages(std::size_t first, std::size_t n) noexcept;
  void set_index(std::size_t first, std::size_t n, Page* page) noexcept;
  void forget(Page* page) noexcept;
  // Room for one more in empty_, grown geometrically (may throw).
  void reserve_empty() {
    if (empty_.size() == empty_.capacity())
      empty_.reserve(2 * empty_.size() + 1);
  }
  // A sealed page left without live functions waits in empty_ to be
  // retired (room in empty_ reserved by the caller).
  void queue_empty(Page* page) noexcept {
    empty_.push_back(page);
    page->queued = true;
    stats_.empty_pages += page->pages;
  }

  // The page index: arena page -> the heap's page there, in two levels (a
  // leaf per kLeafPages arena pages, allocated when first needed). One flat
  // array would be 2 MiB for a 1 GiB arena, and meta_calloc() writes every
  // byte it returns (mimalloc clears even fresh memory), which touched all
  // of it at create() and kept it resident for the heap's life.
  static constexpr unsigned kLeafShift = 9;
  static constexpr std::size_t kLeafPages = std::size_t{1} << kLeafShift;

  Arena& arena_;
  ArenaImpl& impl_;
  HeapOptions options_;
  std::size_t page_size_ = 0;
  unsigned shift_ = 0;
  const std::byte* base_ = nullptr;
  std::size_t arena_pages_ = 0;
  Page*** leaves_ = nullptr;  // arena page index >> kLeafShift -> leaf
  std::size_t leaf_count_ = 0;
  Page* current_ = nullptr;  // where small functions are bump-allocated
  // current_ once sealed, where the backend copies code in: functions from
  // offset tail_from_ on are written in shadow_ (a page of the heap's own
  // memory, at their offsets) until publish() copies them in.
  Page* tail_ = nullptr;
  std::uint32_t tail_from_ = 0;
  std::byte* shadow_ = nullptr;
  Page* all_ = nullptr;        // head of the list of every page held
  MetaVector<Page*> pending_;  // written since the last publish()
  MetaVector<Page*> empty_;    // sealed, no live function: to release
  MetaVector<Batch::Op> ops_;  // scratch for publish()
  // Released functions on sealed pages whose bytes still hold their code:
  // traps from the next publish() on, where the backend copies content in
  // (trap_released_). Adjacent ones on a page are one span.
  struct Stale {
    Page* page;
    std::uint32_t offset, size;
  };
  bool trap_released_ = false;
  MetaVector<Stale> stale_;
  MetaVector<ArenaImpl::WriteSpan> traps_;  // scratch for publish()
  HeapStats stats_;
  // Single-page chunks taken from the arena ahead of need, used lowest
  // address first: one lock taken for several pages, and a heap's pages
  // stay adjacent (one pwritev) even while other threads allocate from the
  // same arena. The reserve grows from 1 page to kMaxReserve as the heap
  // keeps asking for pages, so a heap that needs few holds few.
  static constexpr std::size_t kMaxReserve = 16;
  Chunk reserve_[kMaxReserve];
  std::size_t reserve_first_ = 0, reserve_end_ = 0;
  std::size_t refill_ = 1;
};

HeapImpl::~HeapImpl() {
  // Give every page back in one commit. A destructor cannot report an
  // error; the pages stay retired in the arena either way.
  ops_.clear();
  try {
    for (Page* p = all_; p; p = p->next)
      ops_.push_back({p->rx, OpKind::release});
    for (std::size_t k = reserve_first_; k < reserve_end_; ++k)
      ops_.push_back({reserve_[k].rx(), OpKind::release});
  } catch (const std::bad_alloc&) {
  }
  if (!ops_.empty()) {
    Result<CommitReport> r =
        impl_.commit(ops_.data(), ops_.size(), CommitFlags::none);
    // One chunk refused (the caller released a page behind the heap's back:
    // double_release) must not keep the others: each goes back on its own.
    // In another process nothing may change, and nothing does.
    if (!r && r.error() != Errc::wrong_process)
      for (const Batch::Op& op : ops_)
        (void)impl_.commit(&op, 1, CommitFlags::none);
  }
  while (all_) forget(all_);
  meta_free(shadow_);
  if (leaves_)
    for (std::size_t i = 0; i < leaf_count_; ++i) meta_free(leaves_[i]);
  meta_free(leaves_);
}

Result<void> HeapImpl::init() noexcept {
  if (options_.alignment == 0 || !std::has_single_bit(options_.alignment))
    return Error(Errc::bad_alignment);
  page_size_ = arena_.page_size();
  if (options_.alignment > page_size_) return Error(Errc::bad_alignment);
  shift_ = static_cast<unsigned>(std::countr_zero(page_size_));
  base_ = arena_.range().data();
  arena_pages_ = arena_.range().size() >> shift_;
  leaf_count_ = (arena_pages_ + kLeafPages - 1) >> kLeafShift;
  leaves_ = static_cast<Page***>(meta_calloc(leaf_count_, sizeof(Page**)));
  if (!leaves_) return Error(Errc::out_of_memory, kNoMemory);
  try {
    pending_.reserve(64);
    empty_.reserve(64);
    ops_.reserve(128);
    trap_released_ = impl_.region().ops().content_writer() != nullptr;
    if (trap_released_) {
      stale_.reserve(64);
      traps_.reserve(64);
    }
  } catch (const std::bad_alloc&) {
    return Error(Errc::out_of_memory, kNoMemory);
  }
  if (trap_released_) {
    shadow_ = static_cast<std::byte*>(meta_alloc(page_size_));
    if (!shadow_) return Error(Errc::out_of_memory, kNoMemory);
  }
  return {};
}

HeapImpl::Page* HeapImpl::page_of(const void* rx) const noexcept {
  auto u = reinterpret_cast<std::uintptr_t>(rx);
  auto b = reinterpret_cast<std::uintptr_t>(base_);
  if (u < b || ((u - b) >> shift_) >= arena_pages_) return nullptr;
  const std::size_t i = (u - b) >> shift_;
  Page** leaf = leaves_[i >> kLeafShift];
  return leaf ? leaf[i & (kLeafPages - 1)] : nullptr;
}

bool HeapImpl::index_pages(std::size_t first, std::size_t n) noexcept {
  for (std::size_t l = first >> kLeafShift; l <= (first + n - 1) >> kLeafShift;
       ++l) {
    if (leaves_[l]) continue;
    leaves_[l] = static_cast<Page**>(meta_calloc(kLeafPages, sizeof(Page*)));
    if (!leaves_[l]) return false;  // leaves made so far stay: they are empty
  }
  return true;
}

void HeapImpl::set_index(std::size_t first, std::size_t n,
                         Page* page) noexcept {
  for (std::size_t i = first; i < first + n; ++i)
    leaves_[i >> kLeafShift][i & (kLeafPages - 1)] = page;
}

Result<HeapImpl::Page*> HeapImpl::new_page(std::size_t pages) noexcept {
  Result<Chunk> c = Chunk();
  if (pages == 1) {
    if (reserve_first_ == reserve_end_) {
      Result<std::size_t> n = impl_.allocate_pages(refill_, reserve_);
      if (!n) return n.error();
      reserve_first_ = 0;
      reserve_end_ = *n;
      refill_ = std::min(refill_ * 2, kMaxReserve);
    }
    c = reserve_[reserve_first_++];
  } else {
    c = impl_.allocate(pages << shift_);
    if (!c) return c.error();
  }
  // Back where it came from if the page cannot be made: nothing was
  // written to it.
  auto give_back = [&] {
    if (pages == 1) {
      --reserve_first_;
    } else {
      (void)arena_.release(c->rx());
    }
  };
  const std::size_t first =
      static_cast<std::size_t>(static_cast<const std::byte*>(c->rx()) -
                               base_) >>
      shift_;
  void* mem = index_pages(first, pages) ? meta_alloc(sizeof(Page)) : nullptr;
  if (!mem) {
    give_back();
    return Error(Errc::out_of_memory, kNoMemory);
  }
  auto* page = ::new (mem) Page{static_cast<const std::byte*>(c->rx()),
                                c->rw().data(),
                                static_cast<std::uint32_t>(pages),
                                0,
                                0,
                                0,
                                false,
                                false,
                                {},
                                nullptr,
                                nullptr};
  try {
    page->fns.reserve(pages == 1 ? 16 : 1);
    pending_.reserve(pending_.size() + 1);
  } catch (const std::bad_alloc&) {
    page->~Page();
    meta_free(page);
    give_back();
    return Error(Errc::out_of_memory, kNoMemory);
  }
  set_index(first, pages, page);
  page->next = all_;
  if (all_) all_->prev = page;
  all_ = page;
  stats_.pages += pages;
  stats_.committed_bytes += pages << shift_;
  return page;
}

void HeapImpl::forget(Page* page) noexcept {
  const std::size_t first =
      static_cast<std::size_t>(page->rx - base_) >> shift_;
  set_index(first, page->pages, nullptr);
  stats_.pages -= page->pages;
  stats_.committed_bytes -= std::size_t{page->pages} << shift_;
  if (current_ == page) current_ = nullptr;
  if (tail_ == page) tail_ = nullptr;
  if (page->prev)
    page->prev->next = page->next;
  else
    all_ = page->next;
  if (page->next) page->next->prev = page->prev;
  page->~Page();
  meta_free(page);
}

Result<Function> HeapImpl::allocate(std::size_t bytes,
                                    std::size_t alignment) noexcept {
  // In a child, the pages the heap holds are its parent's (or copies of
  // them), and their writable views may not exist there.
  if (impl_.foreign_process()) return Error(Errc::wrong_process);
  if (bytes == 0) return Error(Errc::zero_size);
  if (alignment == 0) alignment = options_.alignment;
  // (x & (x - 1)) == 0: std::has_single_bit() is a libgcc call without
  // -mpopcnt, on every allocation.
  if ((alignment & (alignment - 1)) != 0 || alignment > page_size_)
    return Error(Errc::bad_alignment);
  if (bytes > (arena_pages_ << shift_) || bytes >= kDead)
    return Error(Errc::size_too_large);

  Page* page = current_;
  std::size_t offset = 0;
  if (bytes > page_size_) {
    // A large function gets chunk of its own, starting on a page.
    Result<Page*> p = new_page((bytes + page_size_ - 1) >> shift_);
    if (!p) return p.error();
    page = *p;
  } else {
    if (page) offset = (page->used + alignment - 1) & ~(alignment - 1);
    if (!page || offset + bytes > page_size_) {
      // A sealed last page without live functions is retired once the
      // heap moves on (release() keeps it while new ones may go on it).
      Page* const old = page && page->sealed && !page->live ? page : nullptr;
      try {
        if (old) reserve_empty();
      } catch (const std::bad_alloc&) {
        return Error(Errc::out_of_memory, kNoMemory);
      }
      Result<Page*> p = new_page(1);
      if (!p) return p.error();
      page = current_ = *p;
      offset = 0;
      if (old) {
        queue_empty(old);
        if (tail_ == old) tail_ = nullptr;
      }
    }
  }
  try {
    page->fns.push_back(Fn{static_cast<std::uint32_t>(offset),
                           static_cast<std::uint32_t>(bytes)});
  } catch (const std::bad_alloc&) {
    return Error(Errc::out_of_memory, kNoMemory);  // the page stays usable
  }
  std::byte* rw;
  if (page == tail_) {
    // On the sealed tail page: written in the shadow, traps until then
    // (the alignment gap before it too: the span copied in is contiguous).
    rw = shadow_ + offset;
    fill_traps(shadow_ + page->used, offset + bytes - page->used);
  } else {
    rw = page->rw + offset;
    if (!page->queued) {
      page->queued = true;
      pending_.push_back(page);  // capacity reserved in new_page()
    }
  }
  page->used = static_cast<std::uint32_t>(offset + bytes);
  ++page->live;
  ++stats_.live_functions;
  ++stats_.pending_functions;
  stats_.live_bytes += bytes;
  return Function{std::span<std::byte>(rw, bytes), page->rx + offset};
}

Result<CommitReport> HeapImpl::publish(CommitFlags flags) noexcept {
  if (impl_.foreign_process()) return Error(Errc::wrong_process);
  ops_.clear();
  traps_.clear();
  // The last page, emptied since and given nothing new: it goes with the
  // pages emptied before (release() keeps it for functions to come).
  Page* const drop =
      tail_ && tail_ == current_ && !tail_->live ? tail_ : nullptr;
  try {
    ops_.reserve(pending_.size() + empty_.size() + 1);
    traps_.reserve(stale_.size() + 1);  // and the tail's span
    if (drop) reserve_empty();
  } catch (const std::bad_alloc&) {
    return Error(Errc::out_of_memory, kNoMemory);
  }
  // Written pages are sealed; pages whose functions all died before being
  // published, and sealed pages emptied since, are released instead.
  for (Page* p : pending_)
    ops_.push_back({p->rx, p->live ? OpKind::seal_execute : OpKind::release});
  // Sealed pages emptied since wait until enough of them can be retired
  // together (HeapOptions::retire_pages).
  const bool retire =
      stats_.empty_pages + (drop ? drop->pages : 0) >= options_.retire_pages;
  if (retire) {
    for (Page* p : empty_) ops_.push_back({p->rx, OpKind::release});
    if (drop) ops_.push_back({drop->rx, OpKind::release});
  }
  // Functions appended to the tail page: copied in from the shadow (a
  // tail page without live functions is no longer the tail: release()).
  const bool append = tail_ && tail_->live && tail_->used > tail_from_;
  std::uint32_t append_from = tail_from_;
  // Released functions on pages that stay executable become traps (those
  // on pages retired now are trapped whole by the release). Those right
  // before the appended ones go with them: their traps are written into
  // the shadow now (whatever a stale pointer put there before), and the
  // publish is one piece of the shadow, one pwrite.
  for (const Stale& f : stale_) {
    if (retire && f.page->live == 0 && (f.page->queued || f.page == drop))
      continue;
    if (append && f.page == tail_ && f.offset + f.size == tail_from_) {
      fill_traps(shadow_ + f.offset, f.size);
      append_from = f.offset;
      continue;
    }
    traps_.push_back({f.page->rx + f.offset, f.size});
  }
  if (append)
    traps_.push_back({tail_->rx + append_from, tail_->used - append_from,
                      shadow_ + append_from});
  Result<CommitReport> r = impl_.commit(ops_.data(), ops_.size(), flags,
                                        traps_.data(), traps_.size());
  if (!r) return r.error();  // all-or-nothing: the heap is unchanged too
  stale_.clear();
  if (drop) {
    queue_empty(drop);
    current_ = tail_ = nullptr;
  }

  if (tail_) tail_from_ = tail_->used;
  for (Page* p : pending_) {
    p->queued = false;
    if (p->live) {
      p->sealed = true;
      p->rw = nullptr;
      if (current_ == p) {
        // Its view of staging is gone: where the backend copies code in,
        // new functions go on through the shadow; elsewhere not at all.
        if (trap_released_) {
          tail_ = p;
          tail_from_ = p->used;
        } else {
          current_ = nullptr;
        }
      }
    } else {
      forget(p);
    }
  }
  pending_.clear();
  if (retire) {
    for (Page* p : empty_) forget(p);
    empty_.clear();
    stats_.empty_pages = 0;
  }
  stats_.pending_functions = 0;
  ++stats_.publishes;
  return r;
}

Result<void> HeapImpl::release(const void* rx) noexcept {
  if (!rx) return Error(Errc::null_pointer);
  if (impl_.foreign_process()) return Error(Errc::wrong_process);
  Page* page = page_of(rx);
  if (!page) {
    // Not on a page the heap holds. In the arena, on pages no chunk holds
    // now: a function whose page the heap gave back after its last one was
    // released, so this is a second release. In a live chunk, or outside
    // the arena: someone else's.
    const auto* p = static_cast<const std::byte*>(rx);
    if (p >= base_ && p < base_ + (arena_pages_ << shift_)) {
      Result<ChunkInfo> info = impl_.find(rx);
      if (!info && info.error() == Errc::not_allocated)
        return Error(Errc::double_release, 0, rx);
      if (!info && info.error() == Errc::wrong_process) return info.error();
    }
    return Error(Errc::foreign_pointer, 0, rx);
  }
  const auto offset =
      static_cast<std::uint32_t>(static_cast<const std::byte*>(rx) - page->rx);
  // Functions on a page are in offset order (bump allocation).
  auto it = page->fns.begin() +
            std::min<std::size_t>(page->next_release, page->fns.size());
  if (it == page->fns.end() || it->offset != offset)
    it = std::lower_bound(
        page->fns.begin(), page->fns.end(), offset,
        [](const Fn& f, std::uint32_t off) { return f.offset < off; });
  if (it == page->fns.end() || it->offset != offset) {
    if (it != page->fns.begin()) {
      const Fn& prev = *std::prev(it);
      if (!(prev.size & kDead) && offset < prev.offset + prev.size)
        return Error(Errc::interior_pointer, 0, rx);
    }
    return Error(Errc::not_allocated, 0, rx);
  }
  if (it->size & kDead) return Error(Errc::double_release, 0, rx);
  // Appended to the sealed tail page and not yet copied in: the code view
  // holds traps there still.
  const bool appended = page == tail_ && offset >= tail_from_;
  if (!page->sealed || appended) {
    // A pending function: releasing it before publish() is allowed. Its
    // bytes are still writable: traps, so that the seal makes traps of it.
    fill_traps((appended ? shadow_ : page->rw) + it->offset, it->size);
    --stats_.pending_functions;
  } else if (trap_released_) {
    try {
      stale_.reserve(stale_.size() + 1);  // so nothing below throws
    } catch (const std::bad_alloc&) {
      return Error(Errc::out_of_memory, kNoMemory);  // nothing changed
    }
  }
  // The last page stays the heap's until the next publish(), emptied or
  // not: new functions may go on it before (allocate(), publish()).
  if (page->live == 1 && page->sealed && page != current_) {
    try {
      reserve_empty();
    } catch (const std::bad_alloc&) {
      return Error(Errc::out_of_memory, kNoMemory);  // nothing changed
    }
    queue_empty(page);
  }
  if (page->sealed && trap_released_ && !appended) {
    // Joined to the span of the function just before it on the page when
    // that one died too and waits for its traps (nothing lies between).
    Stale* last = stale_.empty() ? nullptr : &stale_.back();
    const Fn* prev = it != page->fns.begin() ? &*std::prev(it) : nullptr;
    if (last && prev && last->page == page && (prev->size & kDead) &&
        last->offset + last->size == prev->offset + (prev->size & ~kDead))
      last->size = it->offset + it->size - last->offset;
    else
      stale_.push_back(Stale{page, it->offset, it->size});  // room reserved
  }
  stats_.live_bytes -= it->size;
  it->size |= kDead;
  page->next_release = static_cast<std::uint32_t>(it - page->fns.begin()) + 1;
  --page->live;
  --stats_.live_functions;
  return {};
}

}  // namespace detail

// --- CodeHeap --------------------------------------------------------------

Result<CodeHeap> CodeHeap::create(Arena& arena,
                                  const HeapOptions& options) noexcept {
  if (!arena.impl_) return Error(Errc::invalid_argument);  // moved from
  void* mem = detail::meta_alloc(sizeof(detail::HeapImpl));
  if (!mem) return Error(Errc::out_of_memory, detail::kNoMemory);
  auto* impl =
      ::new (mem) detail::HeapImpl(arena, detail::impl_of(arena), options);
  if (Result<void> r = impl->init(); !r) {
    impl->~HeapImpl();
    detail::meta_free(mem);
    return r.error();
  }
  return CodeHeap(impl);
}

CodeHeap::CodeHeap(CodeHeap&& other) noexcept : impl_(other.impl_) {
  other.impl_ = nullptr;
}

CodeHeap& CodeHeap::operator=(CodeHeap&& other) noexcept {
  if (this != &other) {
    this->~CodeHeap();
    impl_ = other.impl_;
    other.impl_ = nullptr;
  }
  return *this;
}

CodeHeap::~CodeHeap() {
  if (impl_) {
    impl_->~HeapImpl();
    detail::meta_free(impl_);
    impl_ = nullptr;
  }
}

Result<Function> CodeHeap::allocate(std::size_t bytes,
                                    std::size_t alignment) noexcept {
  return impl_->allocate(bytes, alignment);
}

Result<Function> CodeHeap::emit(std::span<const std::byte> code,
                                std::size_t alignment) noexcept {
  Result<Function> f = impl_->allocate(code.size(), alignment);
  if (f) std::memcpy(f->rw.data(), code.data(), code.size());
  return f;
}

Result<CommitReport> CodeHeap::publish(CommitFlags flags) noexcept {
  return impl_->publish(flags);
}

Result<void> CodeHeap::release(const void* rx) noexcept {
  return impl_->release(rx);
}

HeapStats CodeHeap::stats() const noexcept { return impl_->stats(); }

Arena& CodeHeap::arena() const noexcept { return impl_->arena(); }

}  // namespace wxa
