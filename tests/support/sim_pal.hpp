// SPDX-License-Identifier: MIT
// SimPal: a platform layer simulated in memory, for fuzzing and tests at
// thousands of inputs a second.
//
// Address space comes from one private read-write buffer mapped once per
// SimPal; reservations are placed in it top-down, as the kernel places
// mmap()s, and reused after unmap. Protections are tracked per page, never
// applied: every page stays readable and writable for the process, so the
// library's own stores (trap fill, writes through rw(), staging copies) land
// in ordinary memory, and SimPal's bookkeeping says what the kernel would
// allow. Shared objects (memfds) keep their contents in SimPal; a view's
// pages are copies, refreshed whenever the object changes (write_shared,
// discard_shared, mapping) and written back when a writable view is dropped
// or the object is read: coherent for every program that never reads one
// view while writing another (which strict W^X rules out). maps() returns
// what /proc/self/maps would show for the reservations; shared_objects()
// counts open handles (the descriptors a real layer would hold).
//
// Each call charges SyscallCounts as the Linux layer does and fails with
// the errno the kernel would give (EINVAL, ENOMEM, EACCES, EPERM, EBADF).
// Capabilities are the host's (the real probe) until changed with
// capabilities_mut(), so that a fuzzer can explore hardened hosts. Injected
// failures: wrap a SimPal in a FaultPal (FaultPal sim_fault(sim)).
//
// Thread safety: none; one thread at a time (arenas serialise their calls).
// Outlive every arena created on it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "pal/pal.hpp"

namespace wxa::test {

/// One mapping as /proc/self/maps would show it.
struct SimVma {
  std::uintptr_t begin = 0, end = 0;
  char perms[5] = {};  // "r-xs", "---p", ...
};

class SimPal final : public detail::Pal {
 public:
  /// Maps the buffer (`pages` pages of address space, placed near this
  /// program's code so that anchored arenas fit); aborts if it cannot.
  explicit SimPal(std::size_t pages = 16384) noexcept;
  ~SimPal() override;
  SimPal(const SimPal&) = delete;
  SimPal& operator=(const SimPal&) = delete;

  /// The capabilities reported from now on (switch features off here).
  [[nodiscard]] detail::Capabilities& capabilities_mut() noexcept {
    return caps_;
  }
  /// The host's capabilities, as the real probe reports them.
  void restore_capabilities() noexcept;

  /// The mappings of every reservation, merged as the kernel merges them,
  /// in address order (clears `out` first).
  void maps(std::vector<SimVma>& out) const;
  /// The access of the page holding `p`; false if it is not reserved.
  [[nodiscard]] bool access_at(const void* p, Access& out) const noexcept;
  /// Shared objects created and not closed.
  [[nodiscard]] std::size_t shared_objects() const noexcept { return open_; }
  /// Pages reserved (mapped in any way).
  [[nodiscard]] std::size_t reserved_pages() const noexcept;
  /// Drops every reservation and object (between fuzz inputs).
  void clear() noexcept;

  // --- detail::Pal ---------------------------------------------------------
  const detail::Capabilities& capabilities() noexcept override { return caps_; }
  Result<std::byte*> reserve(std::size_t bytes, std::uintptr_t lo,
                             std::uintptr_t hi,
                             SyscallCounts& n) noexcept override;
  Result<void> unmap(void* p, std::size_t bytes,
                     SyscallCounts& n) noexcept override;
  Result<void> protect(void* p, std::size_t bytes, Access access,
                       SyscallCounts& n) noexcept override;
  Result<void> reset(void* p, std::size_t bytes,
                     SyscallCounts& n) noexcept override;
  Result<void> decommit(void* p, std::size_t bytes,
                        SyscallCounts& n) noexcept override;
  Result<detail::SharedHandle> create_shared(
      std::size_t bytes, const char* name, SyscallCounts& n) noexcept override;
  Result<void> close_shared(detail::SharedHandle h,
                            SyscallCounts& n) noexcept override;
  Result<std::byte*> reserve_view(detail::SharedHandle h, std::size_t bytes,
                                  std::uintptr_t lo, std::uintptr_t hi,
                                  Access max,
                                  SyscallCounts& n) noexcept override;
  Result<void> unmap_view(void* p, std::size_t bytes,
                          SyscallCounts& n) noexcept override;
  Result<void> map_shared(void* p, std::size_t bytes, detail::SharedHandle h,
                          std::size_t offset, Access access,
                          SyscallCounts& n) noexcept override;
  Result<void> discard_shared(detail::SharedHandle h, std::size_t offset,
                              std::size_t bytes, void* view,
                              SyscallCounts& n) noexcept override;
  Result<void> write_shared(detail::SharedHandle h, std::size_t offset,
                            const detail::WritePiece* pieces, std::size_t count,
                            SyscallCounts& n) noexcept override;
  Result<void> populate(void* p, std::size_t bytes,
                        SyscallCounts& n) noexcept override;
  Result<void> small_pages(void* p, std::size_t bytes,
                           SyscallCounts& n) noexcept override;
  Result<void> name(void* p, std::size_t bytes, const char* label,
                    SyscallCounts& n) noexcept override;
  Result<void> register_barrier(SyscallCounts& n) noexcept override;
  Result<void> barrier(SyscallCounts& n) noexcept override;
  void flush_icache(void* p, std::size_t bytes) noexcept override;

 private:
  static constexpr std::uint32_t kNone = 0xFFFFFFFFu;
  static constexpr int kMaxViews = 4;  // views of one object page at once

  // One page of the buffer.
  struct Page {
    std::uint32_t obj = kNone;  // the shared object shown here, if any
    std::uint32_t obj_page = 0;
    Access access = Access::none;
    bool reserved = false;
    bool dirty = false;  // may hold non-zero bytes
    bool named = false;  // PR_SET_VMA_ANON_NAME
  };
  // One page of a shared object.
  struct ObjPage {
    std::byte* data = nullptr;  // null: all zero
    std::array<std::uint32_t, kMaxViews> views{kNone, kNone, kNone, kNone};
  };
  struct Object {
    bool live = false;
    bool open = false;
    std::size_t mapped = 0;  // buffer pages showing it
    std::vector<ObjPage> pages;
  };

  // Pages [first, last) of p + bytes; 0 or an errno.
  int span(const void* p, std::size_t bytes, std::size_t& first,
           std::size_t& last) const noexcept;
  [[nodiscard]] bool all_reserved(std::size_t first,
                                  std::size_t last) const noexcept;
  Object* object(detail::SharedHandle h) noexcept;
  std::byte* page_ptr(std::size_t i) const noexcept {
    return buffer_ + i * ps_;
  }
  std::byte* take_page() noexcept;
  void give_page(std::byte* p) noexcept;
  // Zeroes a buffer page if it may hold data.
  void zero(std::size_t i) noexcept;
  // Copies a writable view's bytes into its object.
  void write_back(std::size_t i) noexcept;
  // Writes back and detaches buffer page i from its object; zeroes it.
  void detach(std::size_t i) noexcept;
  void attach(std::size_t i, std::uint32_t obj, std::uint32_t obj_page,
              Access access) noexcept;
  // Object page j: every writable view's bytes written back.
  void gather(Object& o, std::size_t j) noexcept;
  // Object page j shown again in every view.
  void scatter(Object& o, std::size_t j) noexcept;
  void maybe_free(std::uint32_t id) noexcept;
  void claim(std::size_t first, std::size_t last) noexcept;
  void drop(std::size_t first, std::size_t last) noexcept;
  std::size_t place(std::size_t pages, std::uintptr_t lo,
                    std::uintptr_t hi) const noexcept;

  detail::Capabilities caps_;
  std::size_t ps_ = 0;
  std::byte* buffer_ = nullptr;
  std::size_t buffer_bytes_ = 0;
  std::vector<Page> pages_;
  // Reserved pages as maximal intervals: first page -> one past the last.
  std::map<std::size_t, std::size_t> ranges_;
  std::vector<Object> objects_;
  std::size_t open_ = 0;
  std::vector<std::byte*> free_pages_;
  std::vector<std::byte*> slabs_;
  bool barrier_registered_ = false;
};

}  // namespace wxa::test
