// SPDX-License-Identifier: MIT
// The simulated platform of the transition fuzzers: one SimPal for the
// process, its maps() audited instead of /proc/self/maps (every other
// operation), code compared instead of called.
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "platforms.hpp"
#include "support/native_code.hpp"
#include "support/sim_pal.hpp"

namespace {

using wxa::fuzz::expect;
using wxa::fuzz::Vma;

// Switches off the capabilities WXA_SIM_CAPS names.
void apply_caps(wxa::detail::Capabilities& caps) {
  const char* env = std::getenv("WXA_SIM_CAPS");
  if (!env) return;
  struct Flag {
    const char* name;
    bool wxa::detail::Capabilities::*field;
  };
  static const Flag kFlags[] = {
      {"anon_exec", &wxa::detail::Capabilities::anon_exec},
      {"shared_memory", &wxa::detail::Capabilities::shared_memory},
      {"shared_exec", &wxa::detail::Capabilities::shared_exec},
      {"memfd_exec_flag", &wxa::detail::Capabilities::memfd_exec_flag},
      {"barrier", &wxa::detail::Capabilities::barrier},
      {"vma_naming", &wxa::detail::Capabilities::vma_naming},
      {"shared_write", &wxa::detail::Capabilities::shared_write},
      {"populate_read", &wxa::detail::Capabilities::populate_read},
      {"anon_merge_by_origin",
       &wxa::detail::Capabilities::anon_merge_by_origin},
  };
  std::string list = env;
  std::size_t at = 0;
  while (at <= list.size()) {
    const std::size_t comma = std::min(list.find(',', at), list.size());
    const std::string word = list.substr(at, comma - at);
    bool known = word.empty();
    for (const Flag& f : kFlags)
      if (word == f.name) {
        caps.*f.field = false;
        known = true;
      }
    expect(known, "WXA_SIM_CAPS: no capability named '%s'", word.c_str());
    at = comma + 1;
  }
}

class SimPlatform final : public wxa::fuzz::Platform {
 public:
  SimPlatform() : notes_(std::getenv("WXA_FUZZ_TRACE") != nullptr) {
    apply_caps(sim_.capabilities_mut());
  }
  // Deterministic: a failing input replays to the same mismatch, so the
  // trace (a formatted line per operation) is kept only when asked for.
  bool notes() const noexcept override { return notes_; }
  wxa::detail::Pal& pal() noexcept override { return sim_; }
  void maps(std::vector<Vma>& out) override {
    sim_.maps(tmp_);
    out.resize(tmp_.size());
    for (std::size_t i = 0; i < tmp_.size(); ++i) {
      out[i].begin = tmp_[i].begin;
      out[i].end = tmp_[i].end;
      std::memcpy(out[i].perms, tmp_[i].perms, sizeof out[i].perms);
    }
  }
  bool maps_exact() override { return true; }
  std::size_t handles() override { return sim_.shared_objects(); }
  // Running the code means: its page is executable in the model, and it
  // holds the function that returns `value`.
  bool returns(std::uintptr_t rx, std::uint32_t value, unsigned& got) override {
    wxa::Access a = wxa::Access::none;
    const void* p = reinterpret_cast<const void*>(rx);
    expect(sim_.access_at(p, a) && a == wxa::Access::read_execute,
           "sim: calling %#lx, which is not executable",
           static_cast<unsigned long>(rx));
    std::byte code[wxa::test::return_imm_size];
    (void)wxa::test::write_return_imm(code, value);
    if (std::memcmp(p, code, sizeof code) == 0) {
      got = value;
      return true;
    }
    std::memcpy(&got, p, sizeof got);  // for the message
    return false;
  }
  std::size_t audit_every() const noexcept override { return 2; }
  void end_input(bool unmap_failed) override {
    expect(unmap_failed || sim_.reserved_pages() == 0,
           "sim: %zu pages still mapped after every arena was destroyed",
           sim_.reserved_pages());
    sim_.clear();
  }

 private:
  bool notes_;
  wxa::test::SimPal sim_;
  std::vector<wxa::test::SimVma> tmp_;
};

}  // namespace

wxa::fuzz::Platform& wxa::fuzz::sim_platform() {
  static SimPlatform platform;
  return platform;
}
