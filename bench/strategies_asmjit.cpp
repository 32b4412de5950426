// SPDX-License-Identifier: MIT
// asmjit_rwx / asmjit_dual: asmjit's JitAllocator with default options (RWX
// blocks on Linux: no W^X at all) and with kUseDualMapping (an RX view and a
// persistent RW alias of every block).
#include <asmjit/core.h>

#include <mutex>

#include "maps.hpp"
#include "strategy.hpp"

namespace wxb {
namespace {

// One allocator per run, shared by the threads (alloc and release lock).
class AsmjitShared final : public Shared {
 public:
  explicit AsmjitShared(bool dual) : allocator_(params(dual)) {}
  asmjit::JitAllocator& allocator() noexcept { return allocator_; }

 private:
  static const asmjit::JitAllocator::CreateParams* params(bool dual) {
    static const asmjit::JitAllocator::CreateParams plain{};
    static const asmjit::JitAllocator::CreateParams dual_map = [] {
      asmjit::JitAllocator::CreateParams p{};
      p.options = asmjit::JitAllocatorOptions::kUseDualMapping;
      return p;
    }();
    return dual ? &dual_map : &plain;
  }
  asmjit::JitAllocator allocator_;
};

class Asmjit final : public Strategy {
 public:
  explicit Asmjit(asmjit::JitAllocator& allocator)
      : allocator_(allocator), baseline_(maps::count_all()) {}

  bool allocate(std::size_t size, Slot& slot) override {
    void* rx = nullptr;
    void* rw = nullptr;
    const asmjit::Error err = allocator_.alloc(&rx, &rw, size);
    if (err != asmjit::kErrorOk)
      return fail(std::string("JitAllocator::alloc: ") +
                  asmjit::DebugUtils::errorAsString(err));
    slot = {static_cast<std::byte*>(rw), rx, size, 0};
    return true;
  }
  // Nothing to do on x86-64: the code is already executable (RWX), or
  // executable through the RX view (dual mapping), and stores are coherent
  // with instruction fetch.
  bool publish(std::span<Slot>) override { return true; }
  bool release(std::span<const Slot> slots) override {
    for (const Slot& s : slots) {
      const asmjit::Error err = allocator_.release(const_cast<void*>(s.rx));
      if (err != asmjit::kErrorOk)
        return fail(std::string("JitAllocator::release: ") +
                    asmjit::DebugUtils::errorAsString(err));
    }
    return true;
  }
  Footprint footprint() override {
    // Blocks come and go inside asmjit, with a second view in dual mode:
    // count the growth of /proc/self/maps since the strategy was created.
    Footprint f;
    const long now = maps::count_all();
    if (now >= 0 && baseline_ >= 0) f.vmas = now - baseline_;
    f.committed_bytes =
        static_cast<double>(allocator_.statistics().reservedSize());
    return f;
  }

 private:
  asmjit::JitAllocator& allocator_;
  long baseline_;
};

template <bool Dual>
std::unique_ptr<Shared> make_shared(const Request&, std::string& error) {
  // Without dual mapping asmjit maps its blocks RWX; where the OS forbids
  // that, the strategy cannot run (alloc() would fail with OutOfMemory).
  std::string why;
  if (!Dual && !rwx_mapping_allowed(why)) {
    error = std::string(kRefusedPrefix) + why +
            "; asmjit's default JitAllocator needs RWX memory";
    return nullptr;
  }
  return std::make_unique<AsmjitShared>(Dual);
}

std::unique_ptr<Strategy> make(Shared* shared, const Request&, std::string&) {
  return std::make_unique<Asmjit>(
      static_cast<AsmjitShared*>(shared)->allocator());
}

}  // namespace

void add_asmjit_strategies(std::vector<Factory>& out) {
  out.push_back({"asmjit_rwx", make_shared<false>, make, /*frees_single=*/true,
                 Wx::none});
  // Each view is W^X, but the writable one lives as long as the code.
  out.push_back({"asmjit_dual", make_shared<true>, make, /*frees_single=*/true,
                 Wx::alias});
}

}  // namespace wxb
