// SPDX-License-Identifier: MIT
// Metadata containers: STL containers and arrays whose memory comes from
// meta_alloc.
//
// Layering: layer 1 helpers over the platform layer's allocator. Metadata
// never lives inside code pages.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <new>
#include <vector>

#include "pal/pal.hpp"

namespace wxa::detail {

template <class T>
struct MetaAllocator {
  using value_type = T;
  MetaAllocator() noexcept = default;
  template <class U>
  MetaAllocator(const MetaAllocator<U>&) noexcept {}  // NOLINT
  T* allocate(std::size_t n) {
    if (n > std::size_t(-1) / sizeof(T)) throw std::bad_alloc();
    void* p = meta_alloc(n * sizeof(T));
    if (!p) throw std::bad_alloc();  // caught at the API boundary
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) noexcept { meta_free(p); }
  template <class U>
  bool operator==(const MetaAllocator<U>&) const noexcept {
    return true;
  }
};

template <class T>
using MetaVector = std::vector<T, MetaAllocator<T>>;

template <class K, class V>
using MetaMap =
    std::map<K, V, std::less<K>, MetaAllocator<std::pair<const K, V>>>;

/// An array in metadata memory, freed with it (meta_free).
struct MetaFree {
  void operator()(void* p) const noexcept { meta_free(p); }
};
template <class T>
using MetaArray = std::unique_ptr<T[], MetaFree>;

/// `count` zeroed elements of a trivial type, or an empty array when the
/// allocation fails.
template <class T>
[[nodiscard]] MetaArray<T> meta_zeroed(std::size_t count) noexcept {
  return MetaArray<T>(static_cast<T*>(meta_calloc(count, sizeof(T))));
}

}  // namespace wxa::detail
