// SPDX-License-Identifier: MIT
// The wxarena strategies: whole chunks from an Arena sealed and released in
// one Batch per batch of functions (protect, dual_map and kernel_write
// backends), and small functions packed by a CodeHeap (on the automatic
// backend, and on protect).
#include <wxarena/wxarena.hpp>

#include "maps.hpp"
#include "strategy.hpp"

namespace wxb {
namespace {

// One arena per run, shared by the threads (the arena serialises them).
class ArenaShared final : public Shared {
 public:
  explicit ArenaShared(wxa::Arena arena) : arena_(std::move(arena)) {}
  wxa::Arena& arena() noexcept { return arena_; }

 private:
  wxa::Arena arena_;
};

template <wxa::Backend B>
std::unique_ptr<Shared> make_arena(const Request&, std::string& error) {
  wxa::Options options;
  options.backend = B;
  auto arena = wxa::Arena::create(options);
  if (!arena) {
    // A platform refusing the backend is a result; anything else a failure.
    // The options are the defaults, so invalid_argument for a backend asked
    // for by name means this build of the library does not implement it.
    const wxa::Errc code = arena.error().code();
    if (code == wxa::Errc::not_supported ||
        code == wxa::Errc::permission_denied ||
        (code == wxa::Errc::invalid_argument && B != wxa::Backend::automatic))
      error = kRefusedPrefix;
    error += "wxa::Arena::create (backend " + std::string(wxa::to_string(B)) +
             "): " + arena.error().to_string();
    if (code == wxa::Errc::invalid_argument)
      error += " (not implemented in this build)";
    return nullptr;
  }
  return std::make_unique<ArenaShared>(std::move(arena).value());
}

// What every wxarena strategy reports from its arena.
class ArenaAccounting : public Strategy {
 public:
  explicit ArenaAccounting(wxa::Arena& arena) : arena_(arena) {}

  Footprint footprint() override {
    // The arena's mappings are exactly those inside its reservation (and
    // the writable-view reservation on dual_map).
    const auto rx = arena_.range();
    const auto rw = arena_.rw_range();
    const maps::Range ranges[2] = {
        {reinterpret_cast<std::uintptr_t>(rx.data()),
         reinterpret_cast<std::uintptr_t>(rx.data() + rx.size())},
        {reinterpret_cast<std::uintptr_t>(rw.data()),
         reinterpret_cast<std::uintptr_t>(rw.data() + rw.size())}};
    const bool one_view = static_cast<const void*>(rw.data()) ==
                          static_cast<const void*>(rx.data());
    Footprint f;
    f.vmas = maps::count_within({ranges, one_view ? 1u : 2u});
    const wxa::Stats stats = arena_.stats();
    f.tracked_vmas = static_cast<long>(stats.vmas);
    f.committed_bytes = static_cast<double>(stats.committed_bytes);
    f.reserved_bytes = static_cast<double>(stats.reserved_bytes);
    return f;
  }
  bool trim() override {
    auto r = arena_.trim();
    return r || fail_with("Arena::trim", r.error());
  }
  bool own_syscalls(SyscallCounts& out) override {
    const wxa::SyscallCounts s = arena_.stats().syscalls;
    out = {s.mmap,  s.munmap,     s.mprotect, s.madvise,
           s.memfd, s.membarrier, s.other,    s.write};
    return true;
  }

 protected:
  // Exceeding the VMA budget is the arena keeping its promise (invariant 7
  // of DESIGN.md), reported as a result rather than a failure.
  bool fail_with(const char* what, const wxa::Error& e) {
    const bool refused = e.code() == wxa::Errc::vma_budget;
    return fail((refused ? std::string(kRefusedPrefix) : std::string()) + what +
                ": " + e.to_string());
  }
  wxa::Arena& arena_;
};

// wxarena_protect / wxarena_dual / wxarena_kernel_write: one chunk per
// function. Releases wait in the Batch and go with the next publish's
// seals, as a JIT that frees code between compilations would queue them:
// one commit per round (on kernel_write, one pwritev while the retired and
// the new chunks are adjacent), as the CodeHeap strategies do.
class ArenaChunks final : public ArenaAccounting {
 public:
  explicit ArenaChunks(wxa::Arena& arena)
      : ArenaAccounting(arena), batch_(arena) {}

  bool allocate(std::size_t size, Slot& slot) override {
    auto chunk = arena_.allocate(size);
    if (!chunk) return fail_with("Arena::allocate", chunk.error());
    slot = {chunk->rw().data(), chunk->rx(), size, 0};
    return true;
  }
  bool publish(std::span<Slot> slots) override {
    for (const Slot& s : slots) batch_.seal(s.rx);
    return commit("Batch::commit (seal, and the releases queued before)");
  }
  bool release(std::span<const Slot> slots) override {
    for (const Slot& s : slots) batch_.release(s.rx);
    return true;
  }
  bool settle() override {
    return batch_.empty() || commit("Batch::commit (release)");
  }

 private:
  bool commit(const char* what) {
    auto report = batch_.commit();
    if (!report) {
      batch_.clear();
      return fail_with(what, report.error());
    }
    return true;
  }
  wxa::Batch batch_;  // reused: its queue keeps its capacity
};

// wxarena_heap / wxarena_heap_protect: functions packed by a CodeHeap;
// releases are committed by the next publish().
class Heap final : public ArenaAccounting {
 public:
  Heap(wxa::Arena& arena, wxa::CodeHeap heap)
      : ArenaAccounting(arena), heap_(std::move(heap)) {}

  bool allocate(std::size_t size, Slot& slot) override {
    auto fn = heap_.allocate(size);
    if (!fn) return fail_with("CodeHeap::allocate", fn.error());
    slot = {fn->rw.data(), fn->rx, size, 0};
    return true;
  }
  bool publish(std::span<Slot>) override { return commit(); }
  bool release(std::span<const Slot> slots) override {
    for (const Slot& s : slots) {
      auto r = heap_.release(s.rx);
      if (!r) return fail_with("CodeHeap::release", r.error());
    }
    return true;
  }
  bool settle() override { return commit(); }

 private:
  bool commit() {
    auto report = heap_.publish();
    if (!report) return fail_with("CodeHeap::publish", report.error());
    return true;
  }
  wxa::CodeHeap heap_;
};

std::unique_ptr<Strategy> make_chunks(Shared* shared, const Request&,
                                      std::string&) {
  return std::make_unique<ArenaChunks>(
      static_cast<ArenaShared*>(shared)->arena());
}

std::unique_ptr<Strategy> make_heap(Shared* shared, const Request&,
                                    std::string& error) {
  wxa::Arena& arena = static_cast<ArenaShared*>(shared)->arena();
  auto heap = wxa::CodeHeap::create(arena);
  if (!heap) {
    error = "wxa::CodeHeap::create: " + heap.error().to_string();
    return nullptr;
  }
  return std::make_unique<Heap>(arena, std::move(heap).value());
}

// wxarena_heap_own (threads only): wxarena_heap with an arena per thread
// instead of one shared by the threads, as a JIT that gives each compiler
// thread its own arena; nothing of wxarena is shared between them.
class OwnArenaHeap final : public Strategy {
 public:
  explicit OwnArenaHeap(std::unique_ptr<ArenaShared> arena)
      : arena_(std::move(arena)) {}
  bool init(std::string& error) {
    auto heap = wxa::CodeHeap::create(arena_->arena());
    if (!heap) {
      error = "wxa::CodeHeap::create: " + heap.error().to_string();
      return false;
    }
    heap_ = std::make_unique<Heap>(arena_->arena(), std::move(heap).value());
    return true;
  }
  bool allocate(std::size_t size, Slot& slot) override {
    return forward(heap_->allocate(size, slot));
  }
  bool publish(std::span<Slot> slots) override {
    return forward(heap_->publish(slots));
  }
  bool release(std::span<const Slot> slots) override {
    return forward(heap_->release(slots));
  }
  bool settle() override { return forward(heap_->settle()); }
  bool trim() override { return forward(heap_->trim()); }
  Footprint footprint() override { return heap_->footprint(); }
  bool own_syscalls(SyscallCounts& out) override {
    return heap_->own_syscalls(out);
  }

 private:
  bool forward(bool ok) { return ok || fail(heap_->error()); }
  std::unique_ptr<ArenaShared> arena_;  // outlives heap_
  std::unique_ptr<Heap> heap_;
};

std::unique_ptr<Strategy> make_own_heap(Shared*, const Request& request,
                                        std::string& error) {
  std::unique_ptr<Shared> shared =
      make_arena<wxa::Backend::automatic>(request, error);
  if (!shared) return nullptr;
  auto s = std::make_unique<OwnArenaHeap>(std::unique_ptr<ArenaShared>(
      static_cast<ArenaShared*>(shared.release())));
  if (!s->init(error)) return nullptr;
  return s;
}

}  // namespace

void add_wxarena_strategies(std::vector<Factory>& out) {
  out.push_back(
      {"wxarena_protect", make_arena<wxa::Backend::protect>, make_chunks});
  out.push_back(
      {"wxarena_dual", make_arena<wxa::Backend::dual_map>, make_chunks});
  out.push_back({"wxarena_kernel_write", make_arena<wxa::Backend::kernel_write>,
                 make_chunks});
  out.push_back(
      {"wxarena_heap", make_arena<wxa::Backend::automatic>, make_heap});
  out.push_back(
      {"wxarena_heap_protect", make_arena<wxa::Backend::protect>, make_heap});
  Factory own{"wxarena_heap_own", no_shared, make_own_heap};
  own.threads_only = true;
  out.push_back(own);
}

}  // namespace wxb
