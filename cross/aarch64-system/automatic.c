/* SPDX-License-Identifier: MIT */
/* The guest's first check (tools/run_cross_tests.sh aarch64-system): which
 * backend wxa_arena_create picks by default, and whether one function
 * rewritten 200 times through it runs its newest code every time. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "wxarena/wxarena.h"

static const char* backend_name(wxa_backend b) {
  switch (b) {
    case WXA_BACKEND_PROTECT:
      return "protect";
    case WXA_BACKEND_DUAL_MAP:
      return "dual_map";
    case WXA_BACKEND_KERNEL_WRITE:
      return "kernel_write";
    default:
      return "automatic";
  }
}

/* movz w0, #value; ret */
static void write_ret(unsigned char* out, uint16_t value) {
  const uint32_t insns[2] = {0x52800000u | ((uint32_t)value << 5), 0xd65f03c0u};
  memcpy(out, insns, sizeof insns);
}

static int call(const void* rx) {
  int (*fn)(void);
  memcpy(&fn, &rx, sizeof fn); /* object to function pointer */
  return fn();
}

/* Usage: automatic [EXPECTED_BACKEND]; exits 1 if the default arena has
 * another backend or any call runs stale code. */
int main(int argc, char** argv) {
  wxa_arena* arena = NULL;
  wxa_error err;
  if (wxa_arena_create(NULL, &arena, &err) != WXA_OK) {
    fprintf(stderr, "automatic: create: %s (errno %d)\n",
            wxa_strerror(err.code), err.sys_errno);
    return 1;
  }
  const char* got = backend_name(wxa_arena_backend(arena));
  printf("automatic: the default arena's backend is %s\n", got);
  int rc = 0;
  if (argc > 1 && strcmp(argv[1], got) != 0) {
    fprintf(stderr, "automatic: expected %s\n", argv[1]);
    rc = 1;
  }

  /* One chunk, sealed, called, unsealed and rewritten: each call must run
   * the newest code (a stale translation or instruction cache would return
   * an older value). */
  enum { rounds = 200 };
  wxa_chunk chunk;
  int stale = 0;
  if (wxa_allocate(arena, 8, &chunk, &err) != WXA_OK) goto failed;
  for (int i = 1; i <= rounds; ++i) {
    write_ret(chunk.rw, (uint16_t)i);
    if (wxa_seal(arena, chunk.rx, WXA_SEAL_EXECUTE, &err) != WXA_OK)
      goto failed;
    const int value = call(chunk.rx);
    if (value != i) {
      if (stale++ < 5)
        fprintf(stderr, "automatic: call %d returned %d\n", i, value);
    }
    if (i < rounds && wxa_unseal(arena, chunk.rx, &chunk, &err) != WXA_OK)
      goto failed;
  }
  wxa_stats stats;
  wxa_stats_get(arena, &stats);
  printf(
      "automatic: %d rewrites of one function, %d stale calls; %llu pwritev, "
      "%llu membarrier, %llu mprotect calls\n",
      rounds, stale, (unsigned long long)stats.write_calls,
      (unsigned long long)stats.membarrier_calls,
      (unsigned long long)stats.mprotect_calls);
  wxa_arena_destroy(arena);
  return stale != 0 ? 1 : rc;

failed:
  fprintf(stderr, "automatic: %s (errno %d)\n", wxa_strerror(err.code),
          err.sys_errno);
  wxa_arena_destroy(arena);
  return 1;
}
