// SPDX-License-Identifier: MIT
// raw_rwx_floor: the cost floor, one pre-mapped buffer that is readable,
// writable and executable at once, with memcpy + call and no allocation.
//
// THIS FILE MAKES THE ONLY RWX MAPPINGS IN THE PROJECT: the floor's buffer,
// and (through map_rwx()) the memory of example_jit_rwx, the example JIT on
// RWX memory. They exist to measure what no protection at all costs and are
// built into the benchmark only, never into the library or the examples.
// When the OS refuses them (e.g. under the W^X seccomp filter the test suite
// runs in, or SELinux deny_execmem), the benchmarks using them report a
// refusal and skip themselves.
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>

#include "maps.hpp"
#include "strategy.hpp"

namespace wxb {
namespace {

class RwxFloor final : public Strategy {
 public:
  // `round`: the most bytes live at once (one round of a workload).
  RwxFloor(std::byte* base, std::size_t bytes, std::size_t round)
      : base_(base), bytes_(bytes), round_(round) {}
  ~RwxFloor() override {
    // Nothing useful to do if this fails at teardown; the process exits soon.
    (void)::munmap(base_, bytes_);
  }

  // The buffer is used as a ring that wraps only when nothing is live, so
  // that code is not rewritten at an address that has just run (which
  // costs a self-modifying-code pipeline flush, not part of the floor).
  bool allocate(std::size_t size, Slot& slot) override {
    std::size_t at = (used_ + 15) & ~std::size_t{15};
    if (live_ == 0 && bytes_ - std::min(at, bytes_) < round_) at = 0;
    if (at + size > bytes_)
      return fail("buffer of " + std::to_string(bytes_) + " bytes is full");
    used_ = at + size;
    ++live_;
    slot = {base_ + at, base_ + at, size, 0};
    return true;
  }
  bool publish(std::span<Slot>) override { return true; }
  bool release(std::span<const Slot> slots) override {
    live_ -= slots.size();
    return true;
  }
  Footprint footprint() override {
    Footprint f;
    const maps::Range r{reinterpret_cast<std::uintptr_t>(base_),
                        reinterpret_cast<std::uintptr_t>(base_) + bytes_};
    f.vmas = maps::count_within({&r, 1});
    f.committed_bytes = static_cast<double>(bytes_);
    return f;
  }
  bool own_syscalls(SyscallCounts& out) override {
    out = {};  // none after the one mmap at creation
    return true;
  }

 private:
  std::byte* base_;
  std::size_t bytes_, round_;
  std::size_t used_ = 0, live_ = 0;
};

std::unique_ptr<Strategy> make_floor(Shared*, const Request& request,
                                     std::string& error) {
  // Room for one round (plus alignment slack) and 1 MiB more to run
  // through before wrapping, populated up front so that first-touch faults
  // are not part of the floor.
  const std::size_t round = request.capacity + request.capacity / 8;
  const std::size_t bytes = (round + (1u << 20) + 4095) & ~std::size_t{4095};
  std::byte* p = map_rwx(bytes, /*populate=*/true, error);
  if (!p) return nullptr;
  return std::make_unique<RwxFloor>(p, bytes, round);
}

}  // namespace

std::byte* map_rwx(std::size_t bytes, bool populate, std::string& error) {
  const int flags =
      MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : MAP_NORESERVE);
  void* p =
      ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE | PROT_EXEC, flags, -1, 0);
  if (p == MAP_FAILED) {
    error = std::string(kRefusedPrefix) +
            errno_message("mmap PROT_READ|PROT_WRITE|PROT_EXEC", errno) +
            "; RWX memory is not available under a W^X policy";
    return nullptr;
  }
  return static_cast<std::byte*>(p);
}

bool rwx_mapping_allowed(std::string& why) {
  void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    why = errno_message("mmap PROT_READ|PROT_WRITE|PROT_EXEC", errno);
    return false;
  }
  if (::munmap(p, 4096) != 0) {
    why = errno_message("munmap", errno);
    return false;
  }
  return true;
}

void add_rwx_floor_strategy(std::vector<Factory>& out) {
  out.push_back({"raw_rwx_floor", no_shared, make_floor, /*frees_single=*/false,
                 Wx::none});
}

}  // namespace wxb
