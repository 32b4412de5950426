/* SPDX-License-Identifier: MIT */
/* The C API, compiled as C11: the same model and error codes as in C++. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "wxarena/wxarena.h"

static int passed, failed;

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (cond) {                                                         \
      ++passed;                                                         \
    } else {                                                            \
      ++failed;                                                         \
      fprintf(stderr, "%s:%d: CHECK(%s)\n", __FILE__, __LINE__, #cond); \
    }                                                                   \
  } while (0)

typedef int (*int_fn)(void);

static int_fn as_fn(const void* rx) {
  int_fn f;
  memcpy(&f, &rx, sizeof f);
  return f;
}

#if defined(__aarch64__)
/* movz w0, #(value & 0xffff); movk w0, #(value >> 16), lsl #16; ret */
enum { RET_SIZE = 12 };
static void write_ret(void* rw, uint32_t value) {
  const uint32_t code[3] = {0x52800000u | (value & 0xFFFFu) << 5,
                            0x72A00000u | (value >> 16) << 5, 0xD65F03C0u};
  memcpy(rw, code, sizeof code); /* little-endian words */
}
#else
/* mov eax, value; ret */
enum { RET_SIZE = 6 };
static void write_ret(void* rw, uint32_t value) {
  unsigned char code[6] = {0xB8, 0, 0, 0, 0, 0xC3};
  memcpy(code + 1, &value, 4);
  memcpy(rw, code, sizeof code);
}
#endif

static void test_arena(wxa_backend backend) {
  wxa_options o;
  wxa_options_init(&o);
  CHECK(o.reserve_bytes == (size_t)1 << 30);
  CHECK(o.lanes == 0);
  o.backend = backend;
  o.reserve_bytes = 16u << 20;
  wxa_arena* arena = NULL;
  wxa_error err;
  o.lanes = 2;
  wxa_errc rc = wxa_arena_create(&o, &arena, &err);
  if (rc == WXA_PERMISSION_DENIED && backend == WXA_BACKEND_PROTECT) {
    printf("protect backend refused by this system's policy: skipped\n");
    return;
  }
  if (rc == WXA_NOT_SUPPORTED && backend != WXA_BACKEND_PROTECT) {
    printf("backend %d not supported on this system (%s): skipped\n",
           (int)backend, wxa_strerror(rc));
    return;
  }
  CHECK(rc == WXA_OK && arena != NULL);
  if (!arena) return;
  CHECK(wxa_arena_backend(arena) == backend);
  /* Where the backend is available: more lanes than the limit are refused,
   * for any backend. */
  wxa_options bad = o;
  bad.lanes = 65;
  wxa_arena* none = NULL;
  CHECK(wxa_arena_create(&bad, &none, &err) == WXA_INVALID_ARGUMENT);
  CHECK(none == NULL && err.code == WXA_INVALID_ARGUMENT);

  enum { N = 100 };
  wxa_chunk chunks[N];
  wxa_batch* batch = NULL;
  CHECK(wxa_batch_create(arena, &batch) == WXA_OK);
  for (int i = 0; i < N; ++i) {
    CHECK(wxa_allocate(arena, 32, &chunks[i], &err) == WXA_OK);
    CHECK(chunks[i].rw != NULL && chunks[i].size >= 32);
    write_ret(chunks[i].rw, (uint32_t)i * 3u);
    wxa_batch_seal(batch, chunks[i].rx, WXA_SEAL_EXECUTE);
  }
  wxa_commit_report report;
  CHECK(wxa_batch_commit(batch, 0, &report, &err) == WXA_OK);
  CHECK(report.chunks == N && report.runs == 1);
  for (int i = 0; i < N; ++i) CHECK(as_fn(chunks[i].rx)() == i * 3);

  wxa_chunk found;
  wxa_state state;
  size_t offset = 0;
  CHECK(wxa_find(arena, (const char*)chunks[7].rx + 5, &found, &state, &offset,
                 &err) == WXA_OK);
  CHECK(found.rx == chunks[7].rx && state == WXA_STATE_EXECUTABLE &&
        offset == 5);

  /* Errors are codes with messages, and change nothing. */
  CHECK(wxa_release(arena, (const char*)chunks[0].rx + 1, &err) ==
        WXA_INTERIOR_POINTER);
  CHECK(err.code == WXA_INTERIOR_POINTER && err.chunk != NULL);
  CHECK(wxa_seal(arena, chunks[0].rx, WXA_SEAL_EXECUTE, &err) ==
        WXA_ILLEGAL_TRANSITION);
  CHECK(wxa_release(arena, chunks[0].rx, &err) == WXA_OK);
  CHECK(wxa_release(arena, chunks[0].rx, &err) == WXA_DOUBLE_RELEASE);
  CHECK(strcmp(wxa_strerror(WXA_DOUBLE_RELEASE), "chunk already released") ==
        0);
  wxa_chunk c;
  CHECK(wxa_allocate(arena, 0, &c, &err) == WXA_ZERO_SIZE);
  CHECK(wxa_allocate(arena, (size_t)1 << 40, &c, &err) == WXA_SIZE_TOO_LARGE);
  CHECK(wxa_release(arena, &c, &err) == WXA_FOREIGN_POINTER);
  CHECK(wxa_release(arena, NULL, &err) == WXA_NULL_POINTER);
  CHECK(wxa_allocate(NULL, 16, &c, NULL) == WXA_NULL_POINTER);
  CHECK(as_fn(chunks[1].rx)() == 3);

  /* Unseal, patch, seal again. */
  wxa_chunk w;
  CHECK(wxa_unseal(arena, chunks[1].rx, &w, &err) == WXA_OK && w.rw != NULL);
  write_ret(w.rw, 777);
  CHECK(wxa_seal(arena, chunks[1].rx, WXA_SEAL_EXECUTE, &err) == WXA_OK);
  CHECK(as_fn(chunks[1].rx)() == 777);

  /* Patch live code in place, alone and in a batch. */
  unsigned char code[RET_SIZE];
  write_ret(code, 888);
  CHECK(wxa_patch(arena, chunks[1].rx, code, sizeof code, &err) == WXA_OK);
  CHECK(as_fn(chunks[1].rx)() == 888);
  CHECK(wxa_patch(arena, (const char*)chunks[1].rx + chunks[1].size - 2, code,
                  sizeof code, &err) == WXA_OUT_OF_BOUNDS);
  CHECK(wxa_patch(arena, chunks[1].rx, code, 0, &err) == WXA_ZERO_SIZE);
  write_ret(code, 999);
  wxa_batch_patch(batch, chunks[2].rx, code, sizeof code);
  write_ret(code, 0); /* copied when queued */
  CHECK(wxa_batch_commit(batch, 0, &report, &err) == WXA_OK);
  CHECK(as_fn(chunks[2].rx)() == 999);
  CHECK(as_fn(chunks[1].rx)() == 888);

  /* Code heap. */
  wxa_heap* heap = NULL;
  CHECK(wxa_heap_create(arena, 0, &heap, &err) == WXA_OK);
  wxa_function fns[50];
  for (int i = 0; i < 50; ++i) {
    CHECK(wxa_heap_allocate(heap, RET_SIZE, 0, &fns[i], &err) == WXA_OK);
    CHECK(((uintptr_t)fns[i].rx & 15) == 0);
    write_ret(fns[i].rw, 1000u + (uint32_t)i);
  }
  CHECK(wxa_heap_publish(heap, 0, &report, &err) == WXA_OK);
  for (int i = 0; i < 50; ++i) CHECK(as_fn(fns[i].rx)() == 1000 + i);
  wxa_stats s0;
  wxa_stats_get(arena, &s0);
  wxa_heap_stats hs;
  wxa_heap_stats_get(heap, &hs);
  CHECK(hs.live_functions == 50 && hs.pages == 1 && hs.empty_pages == 0);
  CHECK(hs.publishes == 1 && hs.pending_functions == 0);
  CHECK(hs.committed_bytes == (hs.pages + hs.reserve_pages) * s0.page_size);
  CHECK(wxa_heap_release(heap, fns[3].rx, &err) == WXA_OK);
  CHECK(wxa_heap_release(heap, fns[3].rx, &err) == WXA_DOUBLE_RELEASE);

  wxa_stats s;
  wxa_stats_get(arena, &s);
  CHECK(s.chunks[WXA_STATE_EXECUTABLE] == N - 1 + 1 /* heap page */);
  CHECK(s.chunks[WXA_STATE_RETIRED] == 1);
  CHECK(s.vmas >= 1 && s.commits >= 3);
  CHECK(s.backend == backend);
  if (backend == WXA_BACKEND_KERNEL_WRITE) CHECK(s.write_calls >= 3);

  wxa_heap_destroy(heap);

  /* A heap that keeps asking for pages takes them several at a time: the
   * reserve it holds ahead of need is counted. */
  CHECK(wxa_heap_create(arena, 0, &heap, &err) == WXA_OK);
  for (int i = 0; i < 4; ++i)
    CHECK(wxa_heap_allocate(heap, s0.page_size / 2 + 1, 0, &fns[i], &err) ==
          WXA_OK);
  wxa_heap_stats_get(heap, &hs);
  CHECK(hs.pages == 4 && hs.live_functions == 4 && hs.pending_functions == 4);
  CHECK(hs.reserve_pages >= 1 && hs.reserve_pages <= 16);
  CHECK(hs.committed_bytes == (hs.pages + hs.reserve_pages) * s0.page_size);
  wxa_heap_destroy(heap);
  wxa_batch_destroy(batch);
  wxa_arena_destroy(arena);
}

int main(void) {
  test_arena(WXA_BACKEND_PROTECT);
  test_arena(WXA_BACKEND_DUAL_MAP);
  test_arena(WXA_BACKEND_KERNEL_WRITE);
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
