// SPDX-License-Identifier: MIT
// llvm_smm: LLVM 14's SectionMemoryManager with its default mapper, one
// manager per batch (as ORC or MCJIT use one per object), finalizeMemory()
// once per batch; its memory goes back only when the whole manager is freed.
#include <llvm/ExecutionEngine/SectionMemoryManager.h>

#include "maps.hpp"
#include "strategy.hpp"

namespace wxb {
namespace {

class LlvmSmm final : public Strategy {
 public:
  LlvmSmm() : baseline_(maps::count_all()) {}

  bool allocate(std::size_t size, Slot& slot) override {
    if (current_ == kNone) {
      if (free_.empty()) {
        current_ = managers_.size();
        managers_.emplace_back();
        live_.push_back(0);
      } else {
        current_ = free_.back();
        free_.pop_back();
      }
      managers_[current_] = std::make_unique<llvm::SectionMemoryManager>();
    }
    std::uint8_t* p = managers_[current_]->allocateCodeSection(
        size, /*Alignment=*/16, next_section_++, "wxa_bench");
    if (p == nullptr) return fail("allocateCodeSection returned null");
    ++live_[current_];
    slot = {reinterpret_cast<std::byte*>(p), p, size, current_};
    return true;
  }
  bool publish(std::span<Slot>) override {
    if (current_ == kNone) return true;
    std::string message;
    if (managers_[current_]->finalizeMemory(&message))  // true on error
      return fail("finalizeMemory: " + message);
    current_ = kNone;
    return true;
  }
  bool release(std::span<const Slot> slots) override {
    // A SectionMemoryManager frees nothing on its own: memory goes back when
    // the manager holding it is destroyed, i.e. its whole batch is freed.
    for (const Slot& s : slots) {
      if (--live_[s.tag] == 0 && s.tag != current_) {
        managers_[s.tag].reset();
        free_.push_back(s.tag);
      }
    }
    return true;
  }
  Footprint footprint() override {
    // Its blocks are anywhere in the address space, and a finalized block
    // is split between RX code and RW free space: count the growth of
    // /proc/self/maps since the strategy was created.
    Footprint f;
    const long now = maps::count_all();
    if (now >= 0 && baseline_ >= 0) f.vmas = now - baseline_;
    return f;
  }

 private:
  static constexpr std::size_t kNone = ~std::size_t{0};
  long baseline_;
  std::vector<std::unique_ptr<llvm::SectionMemoryManager>> managers_;
  std::vector<std::size_t> live_;  // live functions per manager
  std::vector<std::size_t> free_;  // reusable indexes
  std::size_t current_ = kNone;    // the manager of the unpublished batch
  unsigned next_section_ = 0;
};

}  // namespace

void add_llvm_strategies(std::vector<Factory>& out) {
  out.push_back(
      {"llvm_smm", no_shared,
       [](Shared*, const Request&, std::string&) -> std::unique_ptr<Strategy> {
         return std::make_unique<LlvmSmm>();
       }});
}

}  // namespace wxb
