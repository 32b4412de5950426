// SPDX-License-Identifier: MIT
// A program outside the project using wxarena through its installed headers.
#include <cstdio>
#include <cstring>

#include <wxarena/wxarena.h>
#include <wxarena/wxarena.hpp>

int main() {
  wxa::Result<wxa::Arena> arena = wxa::Arena::create();
  if (!arena) return std::printf("create: %s\n", arena.error().to_string().c_str()), 1;
  wxa::Result<wxa::Chunk> chunk = arena->allocate(16);
  if (!chunk) return 1;
  const unsigned char code[] = {0xB8, 5, 0, 0, 0, 0xC3};  // mov eax, 5; ret
  std::memcpy(chunk->rw().data(), code, sizeof code);
  if (!arena->seal(*chunk)) return 1;
  const int got = chunk->entry<int()>()();
  std::printf("consumer: JIT code returned %d; %s\n", got, wxa_strerror(WXA_DOUBLE_RELEASE));
  return got == 5 ? 0 : 1;
}
