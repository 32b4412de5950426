// SPDX-License-Identifier: MIT
// wxa_publish_loop: the library's own work per published function, to be
// counted by an instruction counter rather than timed (see
// docs/benchmarks.md): 256-byte functions through a CodeHeap on the default
// arena, published `batch` at a time, called and released, as
// publish/wxarena_heap does. The rounds after the warm-up run in measured(),
// for `valgrind --tool=callgrind --toggle-collect=wxb::measured*`.
#include <wxarena/wxarena.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "code_gen.hpp"

namespace wxb {
namespace {

constexpr std::size_t kSize = 256;

bool round(wxa::CodeHeap& heap, const CodeTemplate& code,
           std::vector<const void*>& fns, std::uint32_t& value) {
  const std::uint32_t first = value;
  for (const void*& rx : fns) {
    auto fn = heap.allocate(kSize);
    if (!fn) {
      std::fprintf(stderr, "allocate: %s\n", fn.error().to_string().c_str());
      return false;
    }
    code.write(fn->rw.data(), kSize, value++);
    rx = fn->rx;
  }
  // Also commits the releases of the round before.
  if (auto r = heap.publish(); !r) {
    std::fprintf(stderr, "publish: %s\n", r.error().to_string().c_str());
    return false;
  }
  for (std::size_t i = 0; i < fns.size(); ++i) {
    if (call_generated(fns[i]) != first + i) {
      std::fprintf(stderr, "function %zu returned a wrong value\n", i);
      return false;
    }
  }
  for (const void* rx : fns) {
    if (auto r = heap.release(rx); !r) {
      std::fprintf(stderr, "release: %s\n", r.error().to_string().c_str());
      return false;
    }
  }
  return true;
}

[[gnu::noinline]] bool measured(wxa::CodeHeap& heap, const CodeTemplate& code,
                                std::vector<const void*>& fns,
                                std::uint32_t& value, std::size_t rounds) {
  for (std::size_t r = 0; r < rounds; ++r)
    if (!round(heap, code, fns, value)) return false;
  return true;
}

}  // namespace
}  // namespace wxb

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr,
                 "usage: wxa_publish_loop BATCH ROUNDS "
                 "[automatic|protect|dual_map|kernel_write]\n");
    return 2;
  }
  wxa::Options options;
  if (argc == 4) {
    const std::string_view want(argv[3]);
    bool known = false;
    for (const wxa::Backend b :
         {wxa::Backend::automatic, wxa::Backend::protect,
          wxa::Backend::dual_map, wxa::Backend::kernel_write})
      if (wxa::to_string(b) == want) options.backend = b, known = true;
    if (!known) return 2;
  }
  const std::size_t batch = std::strtoul(argv[1], nullptr, 10);
  const std::size_t rounds = std::strtoul(argv[2], nullptr, 10);
  if (batch == 0 || rounds == 0) return 2;
  auto arena = wxa::Arena::create(options);
  if (!arena) {
    std::fprintf(stderr, "Arena::create: %s\n",
                 arena.error().to_string().c_str());
    return 1;
  }
  auto heap = wxa::CodeHeap::create(*arena);
  if (!heap) return 1;
  const wxb::CodeTemplate code(wxb::kSize);
  std::vector<const void*> fns(batch);
  std::uint32_t value = 1;
  // Warm-up: past the pages the arena opens ahead of need (1,024 pages,
  // 16,384 functions) and the quarantine, so that the measured rounds
  // reuse pages (the steady state).
  const std::size_t warm = std::max<std::size_t>(64, 32768 / batch);
  for (std::size_t r = 0; r < warm; ++r)
    if (!wxb::round(*heap, code, fns, value)) return 1;
  if (!wxb::measured(*heap, code, fns, value, rounds)) return 1;
  if (auto r = heap->publish(); !r) return 1;
  std::printf("%zu functions measured (batch %zu, %zu rounds, backend %s)\n",
              batch * rounds, batch, rounds,
              std::string(wxa::to_string(arena->backend())).c_str());
  return 0;
}
