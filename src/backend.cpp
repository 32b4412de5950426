// SPDX-License-Identifier: MIT
// What every backend shares: making one by kind, trap fills, free-run maps.
#include "backend.hpp"

#include <cstring>
#include <iterator>
#include <new>

namespace wxa::detail {

// One per backend file: allocates (meta_alloc) and constructs, or nullptr.
PageBackend* new_protect_backend() noexcept;
PageBackend* new_dual_map_backend() noexcept;
PageBackend* new_kernel_write_backend() noexcept;

PageBackend* make_backend(Backend kind) noexcept {
  switch (kind) {
    case Backend::protect:
      return new_protect_backend();
    case Backend::dual_map:
      return new_dual_map_backend();
    case Backend::kernel_write:
      return new_kernel_write_backend();
    case Backend::automatic:
      break;
  }
  return nullptr;
}

std::size_t initial_vmas(Backend kind) noexcept {
  // protect: the reservation; dual_map: its two views; kernel_write: the
  // code view and the staging memory.
  return kind == Backend::protect ? 1 : 2;
}

void destroy_backend(PageBackend* backend) noexcept {
  if (!backend) return;
  backend->~PageBackend();
  meta_free(backend);
}

void fill_traps(std::byte* p, std::size_t bytes) noexcept {
#if defined(__x86_64__) || defined(__i386__)
  std::memset(p, 0xCC, bytes);  // int3
#elif defined(__aarch64__)
  const std::uint32_t brk = 0xD4200000;  // brk #0
  for (std::size_t off = 0; off + 4 <= bytes; off += 4)
    std::memcpy(p + off, &brk, 4);
#else
  std::memset(p, 0, bytes);
#endif
}

void insert_run(RunMap& runs, std::uint32_t a, std::uint32_t len) {
  auto next = runs.lower_bound(a);
  if (next != runs.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == a) {
      prev->second += len;
      if (next != runs.end() && prev->first + prev->second == next->first) {
        prev->second += next->second;
        runs.erase(next);
      }
      return;
    }
  }
  if (next != runs.end() && a + len == next->first) {
    auto node = runs.extract(next);
    node.key() = a;
    node.mapped() += len;
    runs.insert(std::move(node));
    return;
  }
  runs.emplace(a, len);
}

void carve_front(RunMap& runs, RunMap::iterator it,
                 std::uint32_t len) noexcept {
  if (it->second == len) {
    runs.erase(it);
    return;
  }
  auto node = runs.extract(it);
  node.key() += len;
  node.mapped() -= len;
  runs.insert(std::move(node));  // reuses the node: cannot throw
}

RunMap::iterator split_run(RunMap& runs, RunMap::iterator it, std::uint32_t a) {
  if (a == it->first) return it;
  auto tail = runs.emplace(a, it->first + it->second - a).first;
  it->second = a - it->first;
  return tail;
}

}  // namespace wxa::detail
