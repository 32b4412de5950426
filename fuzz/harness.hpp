// SPDX-License-Identifier: MIT
// The transition fuzzers' shared part: the operation decoder and reference
// model (the files harness_internal.hpp lists), run against a Platform: the
// real kernel (fuzz_transitions.cpp) or a simulation of it
// (fuzz_transitions_sim.cpp).
//
// A Platform supplies the platform layer the arenas are created on (each
// arena slot wraps it in its own FaultPal, which injects the failures), and
// the auditor's view of it: the mappings /proc/self/maps shows, the open
// descriptors, and running a function. Everything else, including the byte
// language of the corpus, is the same for every Platform.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "pal/pal.hpp"

namespace wxa::fuzz {

/// One line of /proc/self/maps: the range and "rwxp"-style permissions.
struct Vma {
  std::uintptr_t begin = 0, end = 0;
  char perms[5] = {};
};

class Platform {
 public:
  virtual ~Platform() = default;
  /// The layer every arena is created on (through a FaultPal).
  virtual detail::Pal& pal() noexcept = 0;
  /// The process's mappings, in address order.
  virtual void maps(std::vector<Vma>& out) = 0;
  /// Whether maps() tells r-- pages from r-x neighbours (not under
  /// qemu-user).
  virtual bool maps_exact() = 0;
  /// Descriptors (or their equivalent) open in the process.
  virtual std::size_t handles() = 0;
  /// Runs `unsigned f()` at rx (or checks what running it would do); true
  /// if it returns `value`; `got` is what it returned.
  virtual bool returns(std::uintptr_t rx, std::uint32_t value,
                       unsigned& got) = 0;
  /// Whether the trace of operations is kept as they run (else a mismatch
  /// says to replay the input with WXA_FUZZ_TRACE=1 for it).
  virtual bool notes() const noexcept { return true; }
  /// Operations between two audits of maps() (cheap ones: every operation).
  virtual std::size_t audit_every() const noexcept { return 4; }
  /// Called after each input, once every arena is gone. `unmap_failed`:
  /// an injected failure hit an unmap, whose range then stays mapped (an
  /// arena's destructor cannot report it).
  virtual void end_input(bool unmap_failed) { (void)unmap_failed; }
};

/// Decodes one input and runs it against `platform`; aborts with the
/// operations on stderr at the first mismatch with the reference model.
void run_input(Platform& platform, const std::uint8_t* data, std::size_t size);

/// The operations of the last input (for WXA_FUZZ_TRACE).
const std::string& trace();

/// With this set, run_input() records an address-free transcript of the
/// input: every operation's result, then each arena's final runs() and
/// stats, for comparing two platforms.
void record_transcript(bool on);
const std::vector<std::string>& transcript();

/// Reports a mismatch (with the trace) and aborts.
[[noreturn]] __attribute__((format(printf, 1, 2))) void mismatch(
    const char* fmt, ...);

/// mismatch(), unless `ok` (inline: the harness checks thousands of times
/// an input).
template <typename... Args>
inline void expect(bool ok, const char* fmt, Args... args) {
  if (ok) [[likely]]
    return;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-security"
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
  mismatch(fmt, args...);  // the callers' literals, checked below
#pragma GCC diagnostic pop
}

/// The replay programs' main(): files and directories of inputs (each run
/// through `run`), or one input from standard input.
int replay_main(int argc, char** argv,
                void (*run)(const std::uint8_t*, std::size_t));

}  // namespace wxa::fuzz
