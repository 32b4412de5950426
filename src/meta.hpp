// SPDX-License-Identifier: MIT
// Metadata containers: STL containers and arrays whose memory comes from
// meta_alloc.
//
// Layering: layer 1 helpers over the platform layer's allocator. Metadata
// never lives inside code pages.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
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

/// A growing run of bytes that are not cleared, grown with one memcpy.
/// (A MetaVector of bytes clears what it adds; one of a class type that
/// does not clear copies its bytes one by one when it grows: for the old
/// code a mass release saves for undo, megabytes, that was most of the
/// commit's time.)
class MetaBytes {
 public:
  MetaBytes() noexcept = default;
  MetaBytes(const MetaBytes&) = delete;
  MetaBytes& operator=(const MetaBytes&) = delete;
  ~MetaBytes() { meta_free(data_); }

  /// `n` more bytes at the end, not set; std::bad_alloc leaves it as it was.
  [[nodiscard]] std::byte* extend(std::size_t n) {
    if (n > capacity_ - size_) grow(std::max(n, capacity_));
    std::byte* p = data_ + size_;
    size_ += n;
    return p;
  }
  /// Room for `n` bytes in all (exactly, when it must grow): where the
  /// size is known beforehand, one allocation and no copy.
  void reserve(std::size_t n) {
    if (n > capacity_) grow(n - size_);
  }
  void clear() noexcept { size_ = 0; }
  /// Empty, its memory given back.
  void release() noexcept {
    meta_free(data_);
    data_ = nullptr;
    size_ = capacity_ = 0;
  }
  [[nodiscard]] const std::byte* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

 private:
  // To `n` bytes more than the size.
  void grow(std::size_t n) {
    if (n > std::size_t(-1) - size_) throw std::bad_alloc();
    const std::size_t want = size_ + n;
    auto* p = static_cast<std::byte*>(meta_alloc(want));
    if (!p) throw std::bad_alloc();  // caught at the API boundary
    if (size_) std::memcpy(p, data_, size_);
    meta_free(data_);
    data_ = p;
    capacity_ = want;
  }
  std::byte* data_ = nullptr;
  std::size_t size_ = 0, capacity_ = 0;
};

}  // namespace wxa::detail
