// SPDX-License-Identifier: MIT
// The C API: thin wrappers that translate between wxarena.h and the C++ API.
//
// Layering: on top of the public C++ API (layer 7); no logic of its own.
#include "wxarena/wxarena.h"

#include <new>
#include <type_traits>

#include "pal/pal.hpp"
#include "wxarena/wxarena.hpp"

static_assert(WXA_OS_ERROR == static_cast<int>(wxa::Errc::os_error));
static_assert(WXA_WRONG_PROCESS == static_cast<int>(wxa::Errc::wrong_process));
static_assert(WXA_STATE_RETIRED == static_cast<int>(wxa::State::retired));
static_assert(WXA_BACKEND_DUAL_MAP == static_cast<int>(wxa::Backend::dual_map));
static_assert(WXA_BACKEND_KERNEL_WRITE ==
              static_cast<int>(wxa::Backend::kernel_write));
static_assert(WXA_OUT_OF_BOUNDS == static_cast<int>(wxa::Errc::out_of_bounds));

struct wxa_arena {
  wxa::Arena arena;
};
struct wxa_batch {
  wxa::Batch batch;
};
struct wxa_heap {
  wxa::CodeHeap heap;
};

namespace {

template <class T, class... Args>
T* make(Args&&... args) noexcept {
  void* mem = wxa::detail::meta_alloc(sizeof(T));
  return mem ? ::new (mem) T{std::forward<Args>(args)...} : nullptr;
}

template <class T>
void destroy(T* p) noexcept {
  if (!p) return;
  p->~T();
  wxa::detail::meta_free(p);
}

wxa_errc fail(const wxa::Error& e, wxa_error* err) noexcept {
  const auto code = static_cast<wxa_errc>(e.code());
  if (err) *err = wxa_error{code, e.sys_errno(), e.chunk()};
  return code;
}

wxa_errc ok(wxa_error* err) noexcept {
  if (err) *err = wxa_error{WXA_OK, 0, nullptr};
  return WXA_OK;
}

wxa_chunk to_c(const wxa::Chunk& c) noexcept {
  return wxa_chunk{c.rw().data(), c.rx(), c.size()};
}

void to_c(const wxa::CommitReport& r, wxa_commit_report* out) noexcept {
  if (out)
    *out = wxa_commit_report{r.chunks,  r.runs,    r.protection_calls,
                             r.flushes, r.barrier, r.writes};
}

wxa::CommitFlags flags_of(unsigned flags) noexcept {
  return (flags & WXA_COMMIT_BARRIER) ? wxa::CommitFlags::barrier
                                      : wxa::CommitFlags::none;
}

}  // namespace

extern "C" {

const char* wxa_strerror(wxa_errc code) {
  // Every message is a string literal, so data() is NUL-terminated.
  return wxa::to_string(static_cast<wxa::Errc>(code)).data();
}

void wxa_options_init(wxa_options* o) {
  if (!o) return;
  const wxa::Options d;
  *o = wxa_options{static_cast<wxa_backend>(d.backend),
                   d.reserve_bytes,
                   d.anchor,
                   d.reach,
                   d.quarantine,
                   d.vma_budget,
                   d.open_pages,
                   d.name_mappings,
                   d.lanes};
}

wxa_errc wxa_arena_create(const wxa_options* options, wxa_arena** out,
                          wxa_error* err) {
  if (!out) return fail(wxa::Error(wxa::Errc::null_pointer), err);
  *out = nullptr;
  wxa::Options o;
  if (options) {
    o.backend = static_cast<wxa::Backend>(options->backend);
    o.reserve_bytes = options->reserve_bytes;
    o.anchor = options->anchor;
    o.reach = options->reach;
    o.quarantine = options->quarantine;
    o.vma_budget = options->vma_budget;
    o.open_pages = options->open_pages;
    o.name_mappings = options->name_mappings != 0;
    o.lanes = options->lanes;
  }
  wxa::Result<wxa::Arena> a = wxa::Arena::create(o);
  if (!a) return fail(a.error(), err);
  *out = make<wxa_arena>(std::move(*a));
  if (!*out)
    return fail(wxa::Error(wxa::Errc::out_of_memory, wxa::detail::kNoMemory),
                err);
  return ok(err);
}

void wxa_arena_destroy(wxa_arena* arena) { destroy(arena); }

wxa_errc wxa_allocate(wxa_arena* arena, size_t bytes, wxa_chunk* out,
                      wxa_error* err) {
  if (!arena || !out) return fail(wxa::Error(wxa::Errc::null_pointer), err);
  wxa::Result<wxa::Chunk> c = arena->arena.allocate(bytes);
  if (!c) return fail(c.error(), err);
  *out = to_c(*c);
  return ok(err);
}

wxa_errc wxa_seal(wxa_arena* arena, const void* rx, wxa_seal_to to,
                  wxa_error* err) {
  if (!arena) return fail(wxa::Error(wxa::Errc::null_pointer), err);
  const wxa::Seal s =
      to == WXA_SEAL_READ_ONLY ? wxa::Seal::read_only : wxa::Seal::execute;
  if (wxa::Result<void> r = arena->arena.seal(rx, s); !r)
    return fail(r.error(), err);
  return ok(err);
}

wxa_errc wxa_unseal(wxa_arena* arena, const void* rx, wxa_chunk* out,
                    wxa_error* err) {
  if (!arena) return fail(wxa::Error(wxa::Errc::null_pointer), err);
  wxa::Result<wxa::Chunk> c = arena->arena.unseal(rx);
  if (!c) return fail(c.error(), err);
  if (out) *out = to_c(*c);
  return ok(err);
}

wxa_errc wxa_release(wxa_arena* arena, const void* rx, wxa_error* err) {
  if (!arena) return fail(wxa::Error(wxa::Errc::null_pointer), err);
  if (wxa::Result<void> r = arena->arena.release(rx); !r)
    return fail(r.error(), err);
  return ok(err);
}

wxa_errc wxa_patch(wxa_arena* arena, const void* at, const void* bytes,
                   size_t size, wxa_error* err) {
  if (!arena) return fail(wxa::Error(wxa::Errc::null_pointer), err);
  if (!bytes && size) return fail(wxa::Error(wxa::Errc::null_pointer), err);
  if (wxa::Result<void> r =
          arena->arena.patch(at, {static_cast<const std::byte*>(bytes), size});
      !r)
    return fail(r.error(), err);
  return ok(err);
}

wxa_errc wxa_find(const wxa_arena* arena, const void* address, wxa_chunk* out,
                  wxa_state* state, size_t* offset, wxa_error* err) {
  if (!arena) return fail(wxa::Error(wxa::Errc::null_pointer), err);
  wxa::Result<wxa::ChunkInfo> info = arena->arena.find(address);
  if (!info) return fail(info.error(), err);
  if (out) *out = to_c(info->chunk);
  if (state) *state = static_cast<wxa_state>(info->state);
  if (offset) *offset = info->offset;
  return ok(err);
}

wxa_errc wxa_trim(wxa_arena* arena, wxa_error* err) {
  if (!arena) return fail(wxa::Error(wxa::Errc::null_pointer), err);
  if (wxa::Result<void> r = arena->arena.trim(); !r)
    return fail(r.error(), err);
  return ok(err);
}

void wxa_stats_get(const wxa_arena* arena, wxa_stats* out) {
  if (!arena || !out) return;
  const wxa::Stats s = arena->arena.stats();
  *out = wxa_stats{};
  out->page_size = s.page_size;
  out->reserved_bytes = s.reserved_bytes;
  out->committed_bytes = s.committed_bytes;
  out->open_bytes = s.open_bytes;
  out->staging_bytes = s.staging_bytes;
  out->staging_resident_bytes = s.staging_resident_bytes;
  for (int i = 0; i < 5; ++i) {
    out->bytes[i] = s.bytes[i];
    out->chunks[i] = s.chunks[i];
  }
  out->vmas = s.vmas;
  out->vma_budget = s.vma_budget;
  out->mmap_calls = s.syscalls.mmap;
  out->munmap_calls = s.syscalls.munmap;
  out->mprotect_calls = s.syscalls.mprotect;
  out->madvise_calls = s.syscalls.madvise;
  out->memfd_calls = s.syscalls.memfd;
  out->membarrier_calls = s.syscalls.membarrier;
  out->other_calls = s.syscalls.other;
  out->allocations = s.allocations;
  out->commits = s.commits;
  out->runs = s.runs;
  out->protection_calls = s.protection_calls;
  out->flushes = s.flushes;
  out->barriers = s.barriers;
  out->write_calls = s.syscalls.write;
  out->backend = static_cast<wxa_backend>(s.backend);
}

wxa_backend wxa_arena_backend(const wxa_arena* arena) {
  return arena ? static_cast<wxa_backend>(arena->arena.backend())
               : WXA_BACKEND_AUTOMATIC;
}

wxa_errc wxa_batch_create(wxa_arena* arena, wxa_batch** out) {
  if (!arena || !out) return WXA_NULL_POINTER;
  *out = make<wxa_batch>(wxa::Batch(arena->arena));
  return *out ? WXA_OK : WXA_OUT_OF_MEMORY;
}

void wxa_batch_destroy(wxa_batch* batch) { destroy(batch); }

void wxa_batch_seal(wxa_batch* batch, const void* rx, wxa_seal_to to) {
  if (batch)
    batch->batch.seal(rx, to == WXA_SEAL_READ_ONLY ? wxa::Seal::read_only
                                                   : wxa::Seal::execute);
}

void wxa_batch_unseal(wxa_batch* batch, const void* rx) {
  if (batch) batch->batch.unseal(rx);
}

void wxa_batch_release(wxa_batch* batch, const void* rx) {
  if (batch) batch->batch.release(rx);
}

void wxa_batch_patch(wxa_batch* batch, const void* at, const void* bytes,
                     size_t size) {
  if (batch && (bytes || !size))
    batch->batch.patch(at, {static_cast<const std::byte*>(bytes), size});
}

wxa_errc wxa_batch_commit(wxa_batch* batch, unsigned flags,
                          wxa_commit_report* report, wxa_error* err) {
  if (!batch) return fail(wxa::Error(wxa::Errc::null_pointer), err);
  wxa::Result<wxa::CommitReport> r = batch->batch.commit(flags_of(flags));
  if (!r) return fail(r.error(), err);
  to_c(*r, report);
  return ok(err);
}

wxa_errc wxa_heap_create(wxa_arena* arena, size_t alignment, wxa_heap** out,
                         wxa_error* err) {
  if (!arena || !out) return fail(wxa::Error(wxa::Errc::null_pointer), err);
  *out = nullptr;
  wxa::HeapOptions o;
  if (alignment) o.alignment = alignment;
  wxa::Result<wxa::CodeHeap> h = wxa::CodeHeap::create(arena->arena, o);
  if (!h) return fail(h.error(), err);
  *out = make<wxa_heap>(std::move(*h));
  if (!*out)
    return fail(wxa::Error(wxa::Errc::out_of_memory, wxa::detail::kNoMemory),
                err);
  return ok(err);
}

void wxa_heap_destroy(wxa_heap* heap) { destroy(heap); }

wxa_errc wxa_heap_allocate(wxa_heap* heap, size_t bytes, size_t alignment,
                           wxa_function* out, wxa_error* err) {
  if (!heap || !out) return fail(wxa::Error(wxa::Errc::null_pointer), err);
  wxa::Result<wxa::Function> f = heap->heap.allocate(bytes, alignment);
  if (!f) return fail(f.error(), err);
  *out = wxa_function{f->rw.data(), f->rx, f->rw.size()};
  return ok(err);
}

wxa_errc wxa_heap_publish(wxa_heap* heap, unsigned flags,
                          wxa_commit_report* report, wxa_error* err) {
  if (!heap) return fail(wxa::Error(wxa::Errc::null_pointer), err);
  wxa::Result<wxa::CommitReport> r = heap->heap.publish(flags_of(flags));
  if (!r) return fail(r.error(), err);
  to_c(*r, report);
  return ok(err);
}

wxa_errc wxa_heap_release(wxa_heap* heap, const void* rx, wxa_error* err) {
  if (!heap) return fail(wxa::Error(wxa::Errc::null_pointer), err);
  if (wxa::Result<void> r = heap->heap.release(rx); !r)
    return fail(r.error(), err);
  return ok(err);
}

void wxa_heap_stats_get(const wxa_heap* heap, wxa_heap_stats* out) {
  if (!heap || !out) return;
  const wxa::HeapStats s = heap->heap.stats();
  *out = wxa_heap_stats{
      s.live_functions, s.pending_functions, s.live_bytes,  s.committed_bytes,
      s.pages,          s.publishes,         s.empty_pages, s.reserve_pages,
      s.staging_bytes};
}

}  // extern "C"
