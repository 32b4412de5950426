// SPDX-License-Identifier: MIT
// Demo: JIT-compiles thousands of small x86-64 functions under strict W^X,
// runs each one, and prints what it cost the arena.
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <vector>

#include "wxarena/wxarena.hpp"

namespace {

// f(x) = x * a + b, as `imul eax, edi, imm32; add eax, imm32; ret`.
constexpr std::size_t kFnBytes = 12;
void emit_affine(std::span<std::byte> out, std::int32_t a, std::int32_t b) {
  const std::uint8_t code[kFnBytes] = {0x69, 0xC7, 0, 0, 0, 0,
                                       0x05, 0,    0, 0, 0, 0xC3};
  std::memcpy(out.data(), code, kFnBytes);
  std::memcpy(out.data() + 2, &a, 4);
  std::memcpy(out.data() + 7, &b, 4);
}

int fail(const char* what, const wxa::Error& e) {
  std::fprintf(stderr, "demo: %s: %s\n", what, e.to_string().c_str());
  return 1;
}

void print_stats(const char* title, const wxa::Arena& arena) {
  const wxa::Stats s = arena.stats();
  std::printf("%s\n", title);
  std::printf(
      "  backend %-10.*s  chunks: %zu writable, %zu executable, %zu retired\n",
      int(to_string(arena.backend()).size()), to_string(arena.backend()).data(),
      s.chunks_in(wxa::State::writable), s.chunks_in(wxa::State::executable),
      s.chunks_in(wxa::State::retired));
  std::printf(
      "  committed %zu KiB of %zu MiB reserved; %zu kernel VMAs (budget %zu)\n",
      s.committed_bytes >> 10, s.reserved_bytes >> 20, s.vmas, s.vma_budget);
  std::printf("  system calls: %" PRIu64 " (mmap %" PRIu64 ", mprotect %" PRIu64
              ", madvise %" PRIu64 ", memfd %" PRIu64 ", membarrier %" PRIu64
              ", pwritev %" PRIu64 ", other %" PRIu64 ")\n",
              s.syscalls.total(), s.syscalls.mmap, s.syscalls.mprotect,
              s.syscalls.madvise, s.syscalls.memfd, s.syscalls.membarrier,
              s.syscalls.write, s.syscalls.other);
  std::printf("  commits %" PRIu64 ", runs %" PRIu64 ", barriers %" PRIu64 "\n",
              s.commits, s.runs, s.barriers);
}

int run(wxa::Backend backend) {
  wxa::Options options;
  options.backend = backend;
  options.anchor =
      reinterpret_cast<const void*>(&run);  // rel32 reach of the host
  wxa::Result<wxa::Arena> arena = wxa::Arena::create(options);
  if (!arena) return fail("create", arena.error());
  wxa::Result<wxa::CodeHeap> heap = wxa::CodeHeap::create(*arena);
  if (!heap) return fail("heap", heap.error());

  constexpr int kFunctions = 10000, kBatch = 500;
  using Fn = int(int);
  std::vector<const void*> entries;
  for (int i = 0; i < kFunctions; ++i) {
    wxa::Result<wxa::Function> f = heap->allocate(kFnBytes);
    if (!f) return fail("allocate", f.error());
    emit_affine(f->rw, i, 7);
    entries.push_back(f->rx);
    if ((i + 1) % kBatch == 0) {
      if (auto r = heap->publish(); !r) return fail("publish", r.error());
    }
  }
  long long checked = 0;
  for (int i = 0; i < kFunctions; ++i) {
    const int got = reinterpret_cast<Fn*>(const_cast<void*>(entries[i]))(3);
    if (got != 3 * i + 7) {
      std::fprintf(stderr, "demo: function %d returned %d, expected %d\n", i,
                   got, 3 * i + 7);
      return 1;
    }
    ++checked;
  }
  std::printf(
      "compiled, published (in batches of %d) and called %lld functions: all "
      "correct\n",
      kBatch, checked);
  const wxa::HeapStats hs = heap->stats();
  std::printf(
      "  code heap: %zu live functions, %zu B of code on %zu pages "
      "(committed/live %.2f)\n",
      hs.live_functions, hs.live_bytes, hs.pages, hs.committed_per_live());
  print_stats("arena after publishing:", *arena);

  // Functions die; pages whose functions all died go back to the arena in
  // the next publish(), retired (inaccessible) and quarantined.
  for (int i = 0; i < kFunctions / 2; ++i)
    if (auto r = heap->release(entries[i]); !r)
      return fail("release", r.error());
  if (auto r = heap->publish(); !r) return fail("publish", r.error());
  print_stats("arena after releasing the first half of the functions:", *arena);
  return 0;
}

}  // namespace

int main() {
  // automatic first (kernel_write where the host allows it), then each
  // backend this host can create, so their costs can be compared.
  int rc = run(wxa::Backend::automatic);
  for (wxa::Backend b : {wxa::Backend::kernel_write, wxa::Backend::protect,
                         wxa::Backend::dual_map}) {
    if (rc != 0) break;
    wxa::Options probe;
    probe.backend = b;
    probe.reserve_bytes = 1 << 20;
    if (wxa::Result<wxa::Arena> a = wxa::Arena::create(probe); !a) {
      std::printf("backend %.*s: not available here (%s)\n",
                  int(to_string(b).size()), to_string(b).data(),
                  a.error().to_string().c_str());
      continue;
    }
    std::printf("\n");
    rc = run(b);
  }
  return rc;
}
