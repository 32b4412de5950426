/* SPDX-License-Identifier: MIT */
/* The C API of wxarena: the same model as the C++ API (arena, chunk, batch,
 * code heap, stats, error codes) behind opaque handles, for JITs in C.
 *
 * Every function that can fail returns a wxa_errc (WXA_OK on success) and,
 * if `err` is not NULL, fills it with the errno and chunk behind the error.
 * Thread safety: as in C++ — an arena may be used from any thread; a batch
 * or a heap by one thread at a time. */
#ifndef WXARENA_WXARENA_H
#define WXARENA_WXARENA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes: the same values as wxa::Errc. */
typedef enum wxa_errc {
  WXA_OK = 0,
  WXA_INVALID_ARGUMENT,
  WXA_NULL_POINTER,
  WXA_FOREIGN_POINTER,
  WXA_INTERIOR_POINTER,
  WXA_NOT_ALLOCATED,
  WXA_DOUBLE_RELEASE,
  WXA_ILLEGAL_TRANSITION,
  WXA_DUPLICATE_IN_BATCH,
  WXA_ZERO_SIZE,
  WXA_SIZE_TOO_LARGE,
  WXA_BAD_ALIGNMENT,
  WXA_EXHAUSTED,
  WXA_VMA_BUDGET,
  WXA_UNREACHABLE_ANCHOR,
  WXA_OUT_OF_MEMORY,
  WXA_PERMISSION_DENIED,
  WXA_NOT_SUPPORTED,
  WXA_OS_ERROR,
  WXA_WRONG_PROCESS,
  WXA_OUT_OF_BOUNDS
} wxa_errc;

typedef enum wxa_backend {
  WXA_BACKEND_AUTOMATIC = 0,
  WXA_BACKEND_PROTECT,
  WXA_BACKEND_DUAL_MAP,
  WXA_BACKEND_KERNEL_WRITE
} wxa_backend;

typedef enum wxa_state {
  WXA_STATE_FREE = 0,
  WXA_STATE_WRITABLE,
  WXA_STATE_EXECUTABLE,
  WXA_STATE_READ_ONLY,
  WXA_STATE_RETIRED
} wxa_state;

/* What a seal turns a writable chunk into. */
typedef enum wxa_seal_to {
  WXA_SEAL_EXECUTE = 0,
  WXA_SEAL_READ_ONLY
} wxa_seal_to;

/* Flags for commits and publishes. WXA_COMMIT_BARRIER: serialise every
 * thread; WXA_NOT_SUPPORTED (nothing changed) where the host has no
 * membarrier SYNC_CORE. */
enum { WXA_COMMIT_BARRIER = 1 };

typedef struct wxa_error {
  wxa_errc code;
  int sys_errno;     /* 0 if the OS was not involved */
  const void* chunk; /* the chunk the error is about, or NULL */
} wxa_error;

/* Arena configuration; start from wxa_options_init(). Fields as in
 * wxa::Options (include/wxarena/arena.hpp). */
typedef struct wxa_options {
  wxa_backend backend;
  size_t reserve_bytes;
  const void* anchor;
  size_t reach;
  size_t quarantine;
  size_t vma_budget;
  size_t open_pages;
  int name_mappings;
  size_t lanes; /* kernel_write: memfds the reservation is split into */
} wxa_options;

/* A chunk: its writable view (NULL unless writable), its executable address
 * (its identity) and its size. */
typedef struct wxa_chunk {
  void* rw;
  const void* rx;
  size_t size;
} wxa_chunk;

/* One function in a code heap. */
typedef struct wxa_function {
  void* rw; /* writable until the next publish */
  const void* rx;
  size_t size;
} wxa_function;

typedef struct wxa_commit_report {
  size_t chunks, runs, protection_calls, flushes;
  int barrier;
  size_t writes; /* pwritev calls copying code in (kernel_write) */
} wxa_commit_report;

typedef struct wxa_stats {
  size_t page_size, reserved_bytes, committed_bytes, open_bytes;
  size_t bytes[5];  /* by wxa_state */
  size_t chunks[5]; /* live chunks by wxa_state */
  size_t vmas, vma_budget;
  uint64_t mmap_calls, munmap_calls, mprotect_calls, madvise_calls, memfd_calls,
      membarrier_calls, other_calls;
  uint64_t allocations, commits, runs, protection_calls, flushes, barriers;
  uint64_t write_calls; /* pwritev into the code's memfd (kernel_write) */
  wxa_backend backend;  /* the backend in use */
  /* kernel_write: staging holding writable chunks, and staging that may be
     resident (see wxa::Stats). */
  size_t staging_bytes, staging_resident_bytes;
} wxa_stats;

/* Fields as in wxa::HeapStats (include/wxarena/code_heap.hpp). */
typedef struct wxa_heap_stats {
  size_t live_functions, pending_functions, live_bytes, committed_bytes, pages;
  uint64_t publishes;
  size_t empty_pages, reserve_pages;
  size_t staging_bytes;
} wxa_heap_stats;

typedef struct wxa_arena wxa_arena;
typedef struct wxa_batch wxa_batch;
typedef struct wxa_heap wxa_heap;

/* A fixed message for a code, e.g. "chunk already released". */
const char* wxa_strerror(wxa_errc code);

void wxa_options_init(wxa_options* options);

/* Arena. `options` may be NULL for the defaults. */
wxa_errc wxa_arena_create(const wxa_options* options, wxa_arena** out,
                          wxa_error* err);
void wxa_arena_destroy(wxa_arena* arena);
wxa_errc wxa_allocate(wxa_arena* arena, size_t bytes, wxa_chunk* out,
                      wxa_error* err);
wxa_errc wxa_seal(wxa_arena* arena, const void* rx, wxa_seal_to to,
                  wxa_error* err);
wxa_errc wxa_unseal(wxa_arena* arena, const void* rx, wxa_chunk* out,
                    wxa_error* err);
wxa_errc wxa_release(wxa_arena* arena, const void* rx, wxa_error* err);
/* Writes `size` bytes into live code at `at` (inside an executable chunk);
 * see wxa::Arena::patch. */
wxa_errc wxa_patch(wxa_arena* arena, const void* at, const void* bytes,
                   size_t size, wxa_error* err);
/* The chunk containing `address`; `state` and `offset` may be NULL. */
wxa_errc wxa_find(const wxa_arena* arena, const void* address, wxa_chunk* out,
                  wxa_state* state, size_t* offset, wxa_error* err);
wxa_errc wxa_trim(wxa_arena* arena, wxa_error* err);
void wxa_stats_get(const wxa_arena* arena, wxa_stats* out);
wxa_backend wxa_arena_backend(const wxa_arena* arena);

/* Batch: queue transitions, then commit them all or none. */
wxa_errc wxa_batch_create(wxa_arena* arena, wxa_batch** out);
void wxa_batch_destroy(wxa_batch* batch);
void wxa_batch_seal(wxa_batch* batch, const void* rx, wxa_seal_to to);
void wxa_batch_unseal(wxa_batch* batch, const void* rx);
void wxa_batch_release(wxa_batch* batch, const void* rx);
/* Queues a patch; the bytes are copied now. */
void wxa_batch_patch(wxa_batch* batch, const void* at, const void* bytes,
                     size_t size);
wxa_errc wxa_batch_commit(wxa_batch* batch, unsigned flags,
                          wxa_commit_report* report, wxa_error* err);

/* Code heap: small functions packed into pages. alignment 0 = 16. */
wxa_errc wxa_heap_create(wxa_arena* arena, size_t alignment, wxa_heap** out,
                         wxa_error* err);
void wxa_heap_destroy(wxa_heap* heap);
wxa_errc wxa_heap_allocate(wxa_heap* heap, size_t bytes, size_t alignment,
                           wxa_function* out, wxa_error* err);
wxa_errc wxa_heap_publish(wxa_heap* heap, unsigned flags,
                          wxa_commit_report* report, wxa_error* err);
wxa_errc wxa_heap_release(wxa_heap* heap, const void* rx, wxa_error* err);
void wxa_heap_stats_get(const wxa_heap* heap, wxa_heap_stats* out);

#ifdef __cplusplus
}
#endif

#endif /* WXARENA_WXARENA_H */
