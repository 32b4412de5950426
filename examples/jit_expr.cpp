// SPDX-License-Identifier: MIT
// wxa-jit-expr: the example JIT (jit_expr.hpp) on wxarena under strict W^X:
// compiles, publishes in batches, runs and checks 50,000 functions, then
// prints what it cost the arena, frees the older half and prints it again.
//
// Usage: wxa-jit-expr [--functions N] [--batch N] [--seed N]
//                     [--backend automatic|protect|dual_map|kernel_write]
//                     [--wait]
// Exit status 0 iff every result matched the interpreter and no mapping of
// the process was writable and executable at once. With --wait it stays
// alive after its report, its code still mapped, until its standard input
// ends, so that `wxa-audit PID` can inspect it.
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "jit_expr.hpp"
#include "wxarena/wxarena.hpp"

namespace {

// Writable+executable mappings anywhere in this process, per /proc/self/maps.
int count_wx_mappings() {
  std::FILE* f = std::fopen("/proc/self/maps", "r");
  if (!f) return -1;
  char line[512];
  int n = 0;
  while (std::fgets(line, sizeof line, f)) {
    char perms[8] = {};
    if (std::sscanf(line, "%*x-%*x %7s", perms) == 1 && perms[1] == 'w' &&
        perms[2] == 'x')
      ++n;
  }
  std::fclose(f);
  return n;
}

void print_stats(const char* title, const wxa::Arena& arena,
                 const wxa::CodeHeap& heap) {
  const wxa::Stats s = arena.stats();
  const wxa::HeapStats h = heap.stats();
  const std::string_view backend = to_string(arena.backend());
  std::printf("%s\n", title);
  std::printf(
      "  backend %.*s: %zu live functions, %zu KiB of code on %zu pages"
      " (%.2f committed bytes per live byte)\n",
      int(backend.size()), backend.data(), h.live_functions, h.live_bytes >> 10,
      h.pages, h.committed_per_live());
  std::printf(
      "  chunks: %zu writable, %zu executable, %zu retired;"
      " %zu KiB committed of %zu MiB reserved; %zu kernel VMAs"
      " (budget %zu)\n",
      s.chunks_in(wxa::State::writable), s.chunks_in(wxa::State::executable),
      s.chunks_in(wxa::State::retired), s.committed_bytes >> 10,
      s.reserved_bytes >> 20, s.vmas, s.vma_budget);
  std::printf("  system calls: %" PRIu64 " (mmap %" PRIu64 ", munmap %" PRIu64
              ", mprotect %" PRIu64 ", madvise %" PRIu64 ", memfd %" PRIu64
              ", membarrier %" PRIu64 ", pwritev %" PRIu64 ")\n",
              s.syscalls.total(), s.syscalls.mmap, s.syscalls.munmap,
              s.syscalls.mprotect, s.syscalls.madvise, s.syscalls.memfd,
              s.syscalls.membarrier, s.syscalls.write);
  std::printf("  commits %" PRIu64 ", runs %" PRIu64
              ", protection calls %" PRIu64 ", barriers %" PRIu64
              "; heap publishes %" PRIu64 "\n",
              s.commits, s.runs, s.protection_calls, s.barriers, h.publishes);
}

bool parse_size(const char* s, std::uint64_t& out) {
  char* end = nullptr;
  out = std::strtoull(s, &end, 10);
  return end && *end == '\0' && end != s;
}

int usage() {
  std::fprintf(
      stderr,
      "usage: wxa-jit-expr [--functions N] [--batch N] [--seed N]\n"
      "                    [--backend automatic|protect|dual_map|kernel_write] "
      "[--wait]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  jit_expr::Config config;
  wxa::Options options;
  bool wait = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--wait") {
      wait = true;
      continue;
    }
    if (i + 1 >= argc) return usage();
    const char* value = argv[++i];
    std::uint64_t n = 0;
    if (arg == "--functions" && parse_size(value, n)) {
      config.functions = n;
    } else if (arg == "--batch" && parse_size(value, n) && n > 0) {
      config.batch = n;
    } else if (arg == "--seed" && parse_size(value, n)) {
      config.seed = n;
    } else if (arg == "--backend") {
      const std::string_view b = value;
      if (b == "automatic")
        options.backend = wxa::Backend::automatic;
      else if (b == "protect")
        options.backend = wxa::Backend::protect;
      else if (b == "dual_map")
        options.backend = wxa::Backend::dual_map;
      else if (b == "kernel_write")
        options.backend = wxa::Backend::kernel_write;
      else
        return usage();
    } else {
      return usage();
    }
  }

  wxa::Result<std::unique_ptr<jit_expr::WxarenaSink>> sink =
      jit_expr::WxarenaSink::create(options);
  if (!sink) {
    std::fprintf(stderr, "wxa-jit-expr: arena: %s\n",
                 sink.error().to_string().c_str());
    return 1;
  }
  jit_expr::WxarenaSink& s = **sink;

  const jit_expr::Report r = jit_expr::run_jit(s, config);
  if (!r.error.empty()) {
    std::fprintf(stderr, "wxa-jit-expr: %s\n", r.error.c_str());
    return 1;
  }
  std::printf(
      "compiled %zu expressions (%zu bytes of x86-64, %.1f per "
      "function) in %zu batches; %zu calls, %zu mismatches against "
      "the interpreter (checksum %016" PRIx64 ")\n",
      r.functions, r.code_bytes,
      r.functions ? double(r.code_bytes) / double(r.functions) : 0.0, r.batches,
      r.calls, r.mismatches, r.checksum);
  // The checksum of every result, recomputed by the interpreter alone:
  // what the benchmarks compare their runs with.
  const std::uint64_t expected = jit_expr::expected_checksum(config);
  if (r.checksum != expected)
    std::printf("checksum %016" PRIx64
                " differs from the interpreter's %016" PRIx64 "\n",
                r.checksum, expected);
  auto us = [&](double seconds) {
    return r.functions ? seconds * 1e6 / double(r.functions) : 0.0;
  };
  std::printf(
      "per function: generate+compile %.2f us, copy %.3f us, "
      "publish %.3f us, run %.3f us, interpret %.2f us "
      "(total %.3f s)\n",
      us(r.compile_s), us(r.add_s), us(r.publish_s), us(r.run_s),
      us(r.verify_s), r.total_s());
  print_stats("arena after publishing everything:", s.arena(), s.heap());

  // Free the older half, as a JIT replacing code would: a page goes back to
  // the arena (retired, then quarantined) once no live function remains on
  // it, all in the next publish's one commit.
  std::size_t freed = 0;
  for (std::size_t i = 0; i < s.functions().size() / 2; ++i) {
    if (wxa::Result<void> rel = s.heap().release(s.functions()[i]); !rel) {
      std::fprintf(stderr, "wxa-jit-expr: release: %s\n",
                   rel.error().to_string().c_str());
      return 1;
    }
    ++freed;
  }
  if (wxa::Result<wxa::CommitReport> p = s.heap().publish(); !p) {
    std::fprintf(stderr, "wxa-jit-expr: publish: %s\n",
                 p.error().to_string().c_str());
    return 1;
  }
  char title[64];
  std::snprintf(title, sizeof title, "after freeing %zu of them:", freed);
  print_stats(title, s.arena(), s.heap());

  const int wx = count_wx_mappings();
  std::printf("writable+executable mappings in this process: %d\n", wx);
  const bool ok = r.ok() && r.checksum == expected && wx == 0;
  std::printf("%s\n", ok ? "OK" : "FAILED");
  if (wait) {
    // The arena and the live half of the code stay mapped meanwhile.
    std::printf("pid %ld waits for the end of its standard input\n",
                static_cast<long>(::getpid()));
    std::fflush(stdout);
    while (std::fgetc(stdin) != EOF) {
    }
  }
  return ok ? 0 : 1;
}
