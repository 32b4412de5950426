// SPDX-License-Identifier: MIT
// FaultPal: counts, logs and fails platform calls, forwarding the rest.
#include "support/fault_pal.hpp"

namespace wxa::test {

std::string_view to_string(PalCall call) noexcept {
  switch (call) {
    case PalCall::reserve:
      return "reserve";
    case PalCall::unmap:
      return "unmap";
    case PalCall::protect:
      return "protect";
    case PalCall::reset:
      return "reset";
    case PalCall::decommit:
      return "decommit";
    case PalCall::create_shared:
      return "create_shared";
    case PalCall::close_shared:
      return "close_shared";
    case PalCall::map_shared:
      return "map_shared";
    case PalCall::discard_shared:
      return "discard_shared";
    case PalCall::name:
      return "name";
    case PalCall::register_barrier:
      return "register_barrier";
    case PalCall::barrier:
      return "barrier";
    case PalCall::write_shared:
      return "write_shared";
    case PalCall::populate:
      return "populate";
    case PalCall::flush_icache:
      return "flush_icache";
  }
  return "?";
}

void FaultPal::arm(std::size_t k, int err, unsigned mask) noexcept {
  reset_counts();
  mask_ = mask;
  fail_at_ = k;
  errno_ = err;
  persistent_ = false;
  fired_ = false;
}

void FaultPal::arm_persistent(std::size_t k, int err, unsigned mask) noexcept {
  arm(k, err, mask);
  persistent_ = true;
}

void FaultPal::disarm() noexcept {
  fail_at_ = 0;
  persistent_ = false;
}

void FaultPal::count_only(unsigned mask) noexcept {
  disarm();
  reset_counts();
  mask_ = mask;
}

void FaultPal::reset_counts() noexcept {
  failable_ = 0;
  for (std::size_t& c : per_call_) c = 0;
  log_.clear();
}

Result<void> FaultPal::intercept(PalCall c, const void* p, std::size_t bytes,
                                 Access access) noexcept {
  if (before_) before_(c);
  const std::lock_guard lock(mutex_);
  ++per_call_[static_cast<int>(c)];
  log_.push_back(PalEvent{c, p, bytes, access, false, false});
  if (!(mask_ & bit(c))) return {};
  ++failable_;
  if (fail_at_ == 0 || failable_ < fail_at_) return {};
  if (!persistent_ && failable_ != fail_at_) return {};
  fired_ = true;
  log_.back().failed = true;
  log_.back().injected = true;
  return detail::error_from_errno(errno_);
}

void FaultPal::note_failure(const Result<void>& r) noexcept {
  if (r) return;
  const std::lock_guard lock(mutex_);
  if (!log_.empty()) log_.back().failed = true;
}

const detail::Capabilities& FaultPal::capabilities() noexcept {
  return inner_->capabilities();
}

Result<std::byte*> FaultPal::reserve(std::size_t bytes, std::uintptr_t lo,
                                     std::uintptr_t hi,
                                     SyscallCounts& n) noexcept {
  if (Result<void> f = intercept(PalCall::reserve, nullptr, bytes); !f)
    return f.error();
  Result<std::byte*> r = inner_->reserve(bytes, lo, hi, n);
  if (!r) log_.back().failed = true;
  return r;
}

// A view's range is reserved and unmapped under the same kinds as a plain
// reservation: the tests see the same calls on every platform.
Result<std::byte*> FaultPal::reserve_view(detail::SharedHandle h,
                                          std::size_t bytes, std::uintptr_t lo,
                                          std::uintptr_t hi, Access max,
                                          SyscallCounts& n) noexcept {
  if (Result<void> f = intercept(PalCall::reserve, nullptr, bytes); !f)
    return f.error();
  Result<std::byte*> r = inner_->reserve_view(h, bytes, lo, hi, max, n);
  if (!r) log_.back().failed = true;
  return r;
}

Result<void> FaultPal::unmap_view(void* p, std::size_t bytes,
                                  SyscallCounts& n) noexcept {
  if (Result<void> f = intercept(PalCall::unmap, p, bytes); !f) return f;
  Result<void> r = inner_->unmap_view(p, bytes, n);
  note_failure(r);
  return r;
}

Result<void> FaultPal::unmap(void* p, std::size_t bytes,
                             SyscallCounts& n) noexcept {
  if (Result<void> f = intercept(PalCall::unmap, p, bytes); !f) return f;
  Result<void> r = inner_->unmap(p, bytes, n);
  note_failure(r);
  return r;
}

Result<void> FaultPal::protect(void* p, std::size_t bytes, Access access,
                               SyscallCounts& n) noexcept {
  if (Result<void> f = intercept(PalCall::protect, p, bytes, access); !f)
    return f;
  Result<void> r = inner_->protect(p, bytes, access, n);
  note_failure(r);
  return r;
}

Result<void> FaultPal::reset(void* p, std::size_t bytes,
                             SyscallCounts& n) noexcept {
  if (Result<void> f = intercept(PalCall::reset, p, bytes); !f) return f;
  Result<void> r = inner_->reset(p, bytes, n);
  note_failure(r);
  return r;
}

Result<void> FaultPal::decommit(void* p, std::size_t bytes,
                                SyscallCounts& n) noexcept {
  if (Result<void> f = intercept(PalCall::decommit, p, bytes); !f) return f;
  Result<void> r = inner_->decommit(p, bytes, n);
  note_failure(r);
  return r;
}

Result<detail::SharedHandle> FaultPal::create_shared(
    std::size_t bytes, const char* label, SyscallCounts& n) noexcept {
  if (Result<void> f = intercept(PalCall::create_shared, nullptr, bytes); !f)
    return f.error();
  Result<detail::SharedHandle> r = inner_->create_shared(bytes, label, n);
  if (!r) log_.back().failed = true;
  return r;
}

Result<void> FaultPal::close_shared(detail::SharedHandle h,
                                    SyscallCounts& n) noexcept {
  if (Result<void> f = intercept(PalCall::close_shared, nullptr, 0); !f) {
    // Do not leak the descriptor of an arena being destroyed: the injected
    // failure is reported, the real close still happens.
    SyscallCounts ignored;
    (void)inner_->close_shared(h, ignored);
    return f;
  }
  Result<void> r = inner_->close_shared(h, n);
  note_failure(r);
  return r;
}

Result<void> FaultPal::map_shared(void* p, std::size_t bytes,
                                  detail::SharedHandle h, std::size_t offset,
                                  Access access, SyscallCounts& n) noexcept {
  if (Result<void> f = intercept(PalCall::map_shared, p, bytes, access); !f)
    return f;
  Result<void> r = inner_->map_shared(p, bytes, h, offset, access, n);
  note_failure(r);
  return r;
}

Result<void> FaultPal::discard_shared(detail::SharedHandle h,
                                      std::size_t offset, std::size_t bytes,
                                      void* view, SyscallCounts& n) noexcept {
  if (Result<void> f = intercept(PalCall::discard_shared, nullptr, bytes); !f)
    return f;
  Result<void> r = inner_->discard_shared(h, offset, bytes, view, n);
  note_failure(r);
  return r;
}

Result<void> FaultPal::small_pages(void* p, std::size_t bytes,
                                   SyscallCounts& n) noexcept {
  Result<void> r = inner_->small_pages(p, bytes, n);
  note_failure(r);
  return r;
}

Result<void> FaultPal::name(void* p, std::size_t bytes, const char* label,
                            SyscallCounts& n) noexcept {
  if (Result<void> f = intercept(PalCall::name, p, bytes); !f) return f;
  Result<void> r = inner_->name(p, bytes, label, n);
  note_failure(r);
  return r;
}

Result<void> FaultPal::write_shared(detail::SharedHandle h, std::size_t offset,
                                    const detail::WritePiece* pieces,
                                    std::size_t count,
                                    SyscallCounts& n) noexcept {
  std::size_t bytes = 0;
  for (std::size_t k = 0; k < count; ++k) bytes += pieces[k].bytes;
  if (Result<void> f = intercept(PalCall::write_shared, nullptr, bytes); !f) {
    // A failure part way: the first piece (of one piece, its first half)
    // has reached the object. The caller must restore it like any other
    // partial write.
    SyscallCounts ignored;
    if (count > 1) {
      (void)inner_->write_shared(h, offset, pieces, 1, ignored);
    } else if (count == 1 && pieces[0].bytes > 1) {
      const detail::WritePiece half{pieces[0].data, pieces[0].bytes / 2};
      (void)inner_->write_shared(h, offset, &half, 1, ignored);
    }
    return f;
  }
  Result<void> r = inner_->write_shared(h, offset, pieces, count, n);
  note_failure(r);
  return r;
}

Result<void> FaultPal::populate(void* p, std::size_t bytes,
                                SyscallCounts& n) noexcept {
  if (Result<void> f = intercept(PalCall::populate, p, bytes); !f) return f;
  Result<void> r = inner_->populate(p, bytes, n);
  note_failure(r);
  return r;
}

Result<void> FaultPal::register_barrier(SyscallCounts& n) noexcept {
  if (Result<void> f = intercept(PalCall::register_barrier, nullptr, 0); !f)
    return f;
  Result<void> r = inner_->register_barrier(n);
  note_failure(r);
  return r;
}

Result<void> FaultPal::barrier(SyscallCounts& n) noexcept {
  if (Result<void> f = intercept(PalCall::barrier, nullptr, 0); !f) return f;
  Result<void> r = inner_->barrier(n);
  note_failure(r);
  return r;
}

void FaultPal::flush_icache(void* p, std::size_t bytes) noexcept {
  {
    const std::lock_guard lock(mutex_);
    ++per_call_[static_cast<int>(PalCall::flush_icache)];
    log_.push_back(
        PalEvent{PalCall::flush_icache, p, bytes, Access::none, false});
  }
  inner_->flush_icache(p, bytes);
}

}  // namespace wxa::test
