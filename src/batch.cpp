// SPDX-License-Identifier: MIT
// The public Batch: a queue of transitions, handed to the arena's commit
// (commit.cpp) at once.
#include <cstring>
#include <limits>
#include <new>

#include "arena_impl.hpp"

namespace wxa {

// --- Batch -----------------------------------------------------------------

Batch::Batch(Arena& arena) noexcept : arena_(&arena) {}

Batch::Batch(Batch&& other) noexcept
    : arena_(other.arena_),
      ops_(other.ops_),
      size_(other.size_),
      capacity_(other.capacity_),
      overflow_(other.overflow_),
      refused_(other.refused_) {
  other.ops_ = nullptr;
  other.size_ = other.capacity_ = 0;
}

Batch& Batch::operator=(Batch&& other) noexcept {
  if (this != &other) {
    this->~Batch();
    ::new (static_cast<void*>(this)) Batch(std::move(other));
  }
  return *this;
}

Batch::~Batch() {
  free_patches();
  detail::meta_free(ops_);
}

void Batch::push(const void* rx, detail::OpKind kind) noexcept {
  if (size_ == capacity_) {
    const std::size_t want = capacity_ ? capacity_ * 2 : 64;
    auto* p = static_cast<Op*>(detail::meta_alloc(want * sizeof(Op)));
    if (!p) {
      overflow_ = true;  // reported by commit(), which then changes nothing
      return;
    }
    if (ops_) std::memcpy(p, ops_, size_ * sizeof(Op));
    detail::meta_free(ops_);
    ops_ = p;
    capacity_ = want;
  }
  ops_[size_++] = Op{rx, kind};
}

void Batch::seal(const void* rx, Seal to) noexcept {
  push(rx, to == Seal::execute ? detail::OpKind::seal_execute
                               : detail::OpKind::seal_read_only);
}
void Batch::unseal(const void* rx) noexcept {
  push(rx, detail::OpKind::unseal);
}
void Batch::release(const void* rx) noexcept {
  push(rx, detail::OpKind::release);
}
void Batch::patch(const void* at, std::span<const std::byte> bytes) noexcept {
  // The bytes are copied now: the caller's buffer may be gone at commit.
  if (bytes.size() > std::numeric_limits<std::uint32_t>::max()) {
    // Longer than any chunk: the answer Arena::patch gives, at commit.
    if (refused_ == Errc::ok) refused_ = Error(Errc::out_of_bounds, 0, at);
    return;
  }
  std::byte* copy = nullptr;
  if (!bytes.empty()) {
    copy = static_cast<std::byte*>(detail::meta_alloc(bytes.size()));
    if (!copy) {
      overflow_ = true;
      return;
    }
    std::memcpy(copy, bytes.data(), bytes.size());
  }
  const std::size_t before = size_;
  push(at, detail::OpKind::patch);
  if (size_ == before) {
    detail::meta_free(copy);
    return;
  }
  ops_[size_ - 1].size = static_cast<std::uint32_t>(bytes.size());
  ops_[size_ - 1].data = copy;
}

void Batch::free_patches() noexcept {
  for (std::size_t k = 0; k < size_; ++k)
    if (ops_[k].kind == detail::OpKind::patch)
      detail::meta_free(const_cast<std::byte*>(ops_[k].data));
}

Result<CommitReport> Batch::commit(CommitFlags flags) noexcept {
  if (!arena_->impl_) return Error(Errc::invalid_argument);  // moved from
  if (refused_ != Errc::ok) return refused_;
  if (overflow_) return Error(Errc::out_of_memory, detail::kNoMemory);
  Result<CommitReport> r = detail::impl_of(*arena_).commit(ops_, size_, flags);
  if (r) {
    free_patches();
    size_ = 0;
  }
  return r;
}

std::size_t Batch::size() const noexcept { return size_; }

void Batch::clear() noexcept {
  free_patches();
  size_ = 0;
  overflow_ = false;
  refused_ = Error();
}

}  // namespace wxa
