/* SPDX-License-Identifier: MIT */
/* The C API in a dozen lines: allocate, write code, seal, call, release. */
#include <stdio.h>
#include <string.h>

#include "wxarena/wxarena.h"

int main(void) {
  wxa_arena* arena = NULL;
  wxa_error err;
  if (wxa_arena_create(NULL, &arena, &err) != WXA_OK) {
    fprintf(stderr, "create: %s (errno %d)\n", wxa_strerror(err.code), err.sys_errno);
    return 1;
  }
  wxa_chunk chunk;
#if defined(__aarch64__)
  static const unsigned char code[] = {0x40, 0x05, 0x80, 0x52,  /* mov w0, #42 */
                                       0xC0, 0x03, 0x5F, 0xD6}; /* ret */
#else
  static const unsigned char code[] = {0xB8, 42, 0, 0, 0, 0xC3}; /* mov eax, 42; ret */
#endif
  int rc = 1;
  if (wxa_allocate(arena, sizeof code, &chunk, &err) == WXA_OK) {
    memcpy(chunk.rw, code, sizeof code);
    if (wxa_seal(arena, chunk.rx, WXA_SEAL_EXECUTE, &err) == WXA_OK) {
      int (*fn)(void);
      memcpy(&fn, &chunk.rx, sizeof fn); /* object to function pointer */
      printf("JIT function returned %d\n", fn());
      rc = fn() == 42 ? 0 : 1;
    }
    if (wxa_release(arena, chunk.rx, &err) != WXA_OK) rc = 1;
    /* A second release is refused, not a crash. */
    if (wxa_release(arena, chunk.rx, &err) == WXA_DOUBLE_RELEASE)
      printf("second release refused: %s\n", wxa_strerror(err.code));
  }
  if (rc != 0) fprintf(stderr, "failed: %s\n", wxa_strerror(err.code));
  wxa_stats stats;
  wxa_stats_get(arena, &stats);
  printf("system calls: %llu mmap, %llu mprotect; %zu VMAs\n",
         (unsigned long long)stats.mmap_calls, (unsigned long long)stats.mprotect_calls,
         stats.vmas);
  wxa_arena_destroy(arena);
  return rc;
}
