// SPDX-License-Identifier: MIT
// The transition fuzzers' run loop and failure reporting: each input is
// decoded into operations and run against a reference model of what every
// operation must do (the other parts of the harness, shared by both
// fuzzers, are listed in harness_internal.hpp).
//
// The input is decoded into operations (create an arena, allocate, write,
// seal, unseal, release, a batch, CodeHeap allocate / publish / release, find,
// trim, arm an injected platform failure, destroy) on up to two arenas, each
// on its own FaultPal. After every operation the harness checks the result
// (success, or the exact Errc and the chunk it names) against the model, the
// arena's state map and stats against the model, and every live chunk's
// contents: executable code is called and must return the value written into
// it. Every few operations it checks the kernel too: no writable+executable
// mapping anywhere in the process, and every page of every arena view has
// exactly the protection the arena's runs() claims. Where the model cannot
// predict the answer (exhausted, vma_budget, an injected fault) it accepts
// the library's error and then requires that nothing changed.
//
// The kernel's view (mappings, descriptors, running code) comes from a
// Platform (harness.hpp): the real one in fuzz_transitions.cpp, a simulated
// one in fuzz_transitions_sim.cpp.
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "harness_internal.hpp"

namespace wxa::fuzz {
namespace harness {

constexpr std::size_t kMaxOps = 200;  // operations decoded per input

// --- Failure reporting -----------------------------------------------------

std::string g_trace;  // the current input's operations, printed on failure
Platform* g_platform = nullptr;  // the platform of the current input
bool g_record = false;
bool g_unmap_failed = false;  // an injected failure hit an unmap
std::vector<std::string> g_transcript;

// Adds a line to the transcript (when one is recorded).
__attribute__((format(printf, 1, 2))) void record(const char* fmt, ...) {
  if (!g_record) return;
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  g_transcript.emplace_back(buf);
}

__attribute__((format(printf, 1, 2))) void note(const char* fmt, ...) {
  if (!g_platform->notes()) return;
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  g_trace += buf;
  g_trace += '\n';
}

}  // namespace harness

using harness::g_platform;
using harness::g_trace;

// A mismatch is a finding: print the operations that led to it and abort, so
// that libFuzzer keeps the input and the replay test fails.
void mismatch(const char* fmt, ...) {
  if (g_platform && !g_platform->notes())
    std::fprintf(stderr,
                 "wxa-fuzz: replay this input with WXA_FUZZ_TRACE=1 for its "
                 "operations\n");
  else
    std::fprintf(stderr, "wxa-fuzz: operations of this input:\n%s",
                 g_trace.c_str());
  std::fprintf(stderr, "wxa-fuzz: MISMATCH: ");
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
  std::abort();
}

namespace harness {

// --- The loop ----------------------------------------------------------------

void Harness::run() {
  g_trace.clear();
  const std::size_t fds = count_fds();
  for (std::size_t ops = 0; ops < kMaxOps && !in_.empty(); ++ops) {
    const std::uint8_t op = in_.u8();
    Slot& s = slots_[(op & 0xC0) == 0xC0 ? 1 : 0];
    const bool armed = s.fault_k != 0;
    switch (op & 15) {
      case 0:
        op_create(s);
        break;
      case 1:
      case 2:
        op_allocate(s);
        break;
      case 3:
        op_write(s);
        break;
      case 4:
        op_single(s, in_.u8() & 1 ? Kind::seal_read_only : Kind::seal_execute);
        break;
      case 5:
        op_single(s, Kind::unseal);
        break;
      case 6:
        op_single(s, Kind::release);
        break;
      case 7:
        op_batch(s);
        break;
      case 8:
        op_heap_allocate(s);
        break;
      case 9:
        op_heap_publish(s);
        break;
      case 10:
        op_heap_release(s);
        break;
      case 11:
        // Bits 4 and 5 of the operation byte choose nothing else (and no
        // seed from before patch sets them on a find).
        if ((op & 0x30) == 0x30)
          op_patch(s);
        else
          op_find(s);
        break;
      case 12:
        op_trim(s);
        break;
      case 13:
        op_arm(s);
        break;
      case 14:
        op_heap_create(s);
        break;
      default:
        op_destroy(s);
        break;
    }
    for (Slot& each : slots_) verify(each);
    const std::size_t every = g_platform->audit_every();
    if (ops % every == every - 1 || (armed && !s.fault_k)) kernel_check();
  }
  kernel_check();
  if (g_record)
    for (Slot& s : slots_) record_final(s);
  for (Slot& s : slots_) {
    s.fault_k = 0;
    destroy_arena(s);
  }
  expect(count_fds() == fds, "%zu descriptors open after the input, %zu before",
         count_fds(), fds);
}

}  // namespace harness

void run_input(Platform& platform, const std::uint8_t* data, std::size_t size) {
  harness::g_platform = &platform;
  harness::g_transcript.clear();
  harness::g_unmap_failed = false;
  harness::Harness(data, size).run();
  platform.end_input(harness::g_unmap_failed);
}

const std::string& trace() { return g_trace; }

void record_transcript(bool on) { harness::g_record = on; }

const std::vector<std::string>& transcript() { return harness::g_transcript; }

}  // namespace wxa::fuzz
