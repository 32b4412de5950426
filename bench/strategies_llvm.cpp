// SPDX-License-Identifier: MIT
// The LLVM 14 strategies: llvm_smm, its SectionMemoryManager with the
// default mapper, one manager per batch (as ORC or MCJIT use one per
// object), finalizeMemory() once per batch, its memory back only when the
// whole manager is freed; and llvm_jitlink / llvm_jitlink_wxarena, ORC's
// ObjectLinkingLayer linking each batch as one pre-built object (a link
// graph of the written functions) with JITLink's InProcessMemoryManager or
// wxarena's JitLinkMemoryManager, freed with the batch's ResourceTracker.
#include <llvm/ExecutionEngine/JITLink/JITLink.h>
#include <llvm/ExecutionEngine/JITLink/JITLinkMemoryManager.h>
#include <llvm/ExecutionEngine/Orc/Core.h>
#include <llvm/ExecutionEngine/Orc/ExecutorProcessControl.h>
#include <llvm/ExecutionEngine/Orc/ObjectLinkingLayer.h>
#include <llvm/ExecutionEngine/SectionMemoryManager.h>
#include <llvm/Support/Host.h>

#include <optional>

#include "bench_config.h"
#include "maps.hpp"
#include "strategy.hpp"
#if WXB_HAVE_WXARENA
#include <wxarena/adapters/llvm_jitlink.hpp>
#include <wxarena/wxarena.hpp>
#endif

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

// One JITLink memory manager per run, shared by the threads (it is
// thread-safe); on wxarena, the arena under it too.
class JitLinkShared final : public Shared {
 public:
#if WXB_HAVE_WXARENA
  std::optional<wxa::Arena> arena;
#endif
  std::unique_ptr<llvm::jitlink::JITLinkMemoryManager> memory;
};

// One thread's ORC stack: an ExecutionSession, a JITDylib and an
// ObjectLinkingLayer on the shared memory manager. allocate() hands out
// space in a staging buffer (the "object file" the workload writes its
// code into); publish() makes the batch one link graph, one block and one
// symbol per function, adds it under a ResourceTracker of its own and
// materialises it with one lookup of all its symbols: JITLink copies the
// code into the manager's memory, finalizes it, and the lookup gives the
// addresses (slot.rx). A batch's memory goes back when all its functions
// are released (ResourceTracker::remove), as with llvm_smm.
class LlvmJitLink final : public Strategy {
 public:
  LlvmJitLink(JitLinkShared& shared,
              std::unique_ptr<llvm::orc::ExecutionSession> es)
      : shared_(shared),
        es_(std::move(es)),
        jd_(es_->createBareJITDylib("wxb")),
        layer_(std::make_unique<llvm::orc::ObjectLinkingLayer>(*es_,
                                                               *shared.memory)),
        baseline_(maps::count_all()) {}

  ~LlvmJitLink() override {
    // Ends the session: every batch still linked is deallocated.
    if (llvm::Error e = es_->endSession()) llvm::consumeError(std::move(e));
    layer_.reset();
  }

  bool allocate(std::size_t size, Slot& slot) override {
    if (current_ == kNone) {
      if (free_.empty()) {
        current_ = batches_.size();
        batches_.emplace_back();
      } else {
        current_ = free_.back();
        free_.pop_back();
      }
      staged_ = 0;
      pending_.clear();
    }
    const std::size_t at = (staged_ + 15) & ~std::size_t{15};
    if (staging_.size() < at + size) staging_.resize(2 * (at + size));
    staged_ = at + size;
    pending_.push_back(at);
    ++batches_[current_].live;
    slot = {reinterpret_cast<std::byte*>(staging_.data() + at), nullptr, size,
            current_};
    return true;
  }

  bool publish(std::span<Slot> slots) override {
    if (current_ == kNone) return true;
    if (slots.size() != pending_.size())
      return fail("publish: not the slots allocated since the last publish");
    auto graph = std::make_unique<llvm::jitlink::LinkGraph>(
        "wxb_batch", triple_, 8, llvm::support::endianness::little,
        llvm::jitlink::getGenericEdgeKindName);
    auto& text = graph->createSection(
        "text", static_cast<llvm::jitlink::MemProt>(
                    static_cast<unsigned>(llvm::jitlink::MemProt::Read) |
                    static_cast<unsigned>(llvm::jitlink::MemProt::Exec)));
    llvm::orc::SymbolLookupSet lookup;
    names_.clear();
    for (std::size_t i = 0; i < slots.size(); ++i) {
      auto& block = graph->createContentBlock(
          text, {staging_.data() + pending_[i], slots[i].size},
          llvm::orc::ExecutorAddr(), 16, 0);
      auto name = graph->allocateString("f" + llvm::Twine(next_name_++));
      const llvm::StringRef ref(name.data(), name.size());
      graph->addDefinedSymbol(block, 0, ref, slots[i].size,
                              llvm::jitlink::Linkage::Strong,
                              llvm::jitlink::Scope::Default, true, true);
      names_.push_back(es_->intern(ref));
      lookup.add(names_.back());
    }
    Batch& b = batches_[current_];
    current_ = kNone;
    b.tracker = jd_.createResourceTracker();
    if (llvm::Error e = layer_->add(b.tracker, std::move(graph)))
      return fail("ObjectLinkingLayer::add: " + llvm::toString(std::move(e)));
    auto symbols = es_->lookup(llvm::orc::makeJITDylibSearchOrder(&jd_),
                               std::move(lookup));
    if (!symbols)
      return fail("ExecutionSession::lookup: " +
                  llvm::toString(symbols.takeError()));
    for (std::size_t i = 0; i < slots.size(); ++i)
      slots[i].rx = reinterpret_cast<const void*>(
          static_cast<std::uintptr_t>((*symbols)[names_[i]].getAddress()));
    return true;
  }

  bool release(std::span<const Slot> slots) override {
    for (const Slot& s : slots) {
      Batch& b = batches_[s.tag];
      if (b.live == 0 || --b.live > 0) continue;
      if (s.tag == current_) current_ = kNone;  // never published
      if (b.tracker) {
        llvm::Error e = b.tracker->remove();
        b.tracker = nullptr;
        if (e)
          return fail("ResourceTracker::remove: " +
                      llvm::toString(std::move(e)));
      }
      free_.push_back(s.tag);
    }
    return true;
  }

  Footprint footprint() override {
    Footprint f;
#if WXB_HAVE_WXARENA
    if (shared_.arena) {
      const auto rx = shared_.arena->range();
      const auto rw = shared_.arena->rw_range();
      const maps::Range ranges[2] = {
          {reinterpret_cast<std::uintptr_t>(rx.data()),
           reinterpret_cast<std::uintptr_t>(rx.data() + rx.size())},
          {reinterpret_cast<std::uintptr_t>(rw.data()),
           reinterpret_cast<std::uintptr_t>(rw.data() + rw.size())}};
      const bool one_view = static_cast<const void*>(rw.data()) ==
                            static_cast<const void*>(rx.data());
      f.vmas = maps::count_within({ranges, one_view ? 1u : 2u});
      const wxa::Stats stats = shared_.arena->stats();
      f.tracked_vmas = static_cast<long>(stats.vmas);
      f.committed_bytes = static_cast<double>(stats.committed_bytes);
      f.reserved_bytes = static_cast<double>(stats.reserved_bytes);
      return f;
    }
#endif
    // InProcessMemoryManager maps anywhere: the growth of /proc/self/maps.
    const long now = maps::count_all();
    if (now >= 0 && baseline_ >= 0) f.vmas = now - baseline_;
    return f;
  }

  bool trim() override {
#if WXB_HAVE_WXARENA
    if (shared_.arena) {
      auto r = shared_.arena->trim();
      if (!r) return fail("Arena::trim: " + r.error().to_string());
    }
#endif
    return true;
  }

  bool own_syscalls(SyscallCounts& out) override {
#if WXB_HAVE_WXARENA
    if (shared_.arena) {
      const wxa::SyscallCounts s = shared_.arena->stats().syscalls;
      out = {s.mmap,  s.munmap,     s.mprotect, s.madvise,
             s.memfd, s.membarrier, s.other,    s.write};
      return true;
    }
#endif
    (void)out;
    return false;
  }

 private:
  struct Batch {
    llvm::orc::ResourceTrackerSP tracker;  // null until published
    std::size_t live = 0;                  // functions not yet released
  };
  static constexpr std::size_t kNone = ~std::size_t{0};

  JitLinkShared& shared_;
  std::unique_ptr<llvm::orc::ExecutionSession> es_;
  llvm::orc::JITDylib& jd_;
  std::unique_ptr<llvm::orc::ObjectLinkingLayer> layer_;
  const llvm::Triple triple_{llvm::sys::getProcessTriple()};
  long baseline_;
  std::vector<char> staging_;         // the batch's code, as written
  std::size_t staged_ = 0;            // bytes of staging_ in use
  std::vector<std::size_t> pending_;  // offsets of the batch's functions
  std::vector<llvm::orc::SymbolStringPtr> names_;
  std::vector<Batch> batches_;
  std::vector<std::size_t> free_;  // reusable indexes
  std::size_t current_ = kNone;    // the batch being written
  unsigned long next_name_ = 0;
};

std::unique_ptr<Shared> make_jitlink_in_process(const Request&,
                                                std::string& error) {
  auto memory = llvm::jitlink::InProcessMemoryManager::Create();
  if (!memory) {
    error =
        "InProcessMemoryManager::Create: " + llvm::toString(memory.takeError());
    return nullptr;
  }
  auto shared = std::make_unique<JitLinkShared>();
  shared->memory = std::move(*memory);
  return shared;
}

#if WXB_HAVE_WXARENA
std::unique_ptr<Shared> make_jitlink_wxarena(const Request&,
                                             std::string& error) {
  auto arena = wxa::Arena::create();
  if (!arena) {
    const wxa::Errc code = arena.error().code();
    if (code == wxa::Errc::not_supported ||
        code == wxa::Errc::permission_denied)
      error = kRefusedPrefix;
    error += "wxa::Arena::create: " + arena.error().to_string();
    return nullptr;
  }
  auto shared = std::make_unique<JitLinkShared>();
  shared->arena.emplace(std::move(arena).value());
  shared->memory =
      std::make_unique<wxa::llvm::JitLinkMemoryManager>(*shared->arena);
  return shared;
}
#endif

std::unique_ptr<Strategy> make_jitlink(Shared* shared, const Request&,
                                       std::string& error) {
  auto epc = llvm::orc::SelfExecutorProcessControl::Create();
  if (!epc) {
    error = "SelfExecutorProcessControl::Create: " +
            llvm::toString(epc.takeError());
    return nullptr;
  }
  return std::make_unique<LlvmJitLink>(
      *static_cast<JitLinkShared*>(shared),
      std::make_unique<llvm::orc::ExecutionSession>(std::move(*epc)));
}

}  // namespace

void add_llvm_strategies(std::vector<Factory>& out) {
  out.push_back(
      {"llvm_smm", no_shared,
       [](Shared*, const Request&, std::string&) -> std::unique_ptr<Strategy> {
         return std::make_unique<LlvmSmm>();
       }});
  out.push_back({"llvm_jitlink", make_jitlink_in_process, make_jitlink});
#if WXB_HAVE_WXARENA
  out.push_back({"llvm_jitlink_wxarena", make_jitlink_wxarena, make_jitlink});
#endif
}

}  // namespace wxb
