// SPDX-License-Identifier: MIT
// The registry of backends: which exist, in which order automatic tries
// them, and freeing one. Adding a backend: a file of its own stating its
// BackendFacts, and one line in the list below.
#include "backend/backend.hpp"

#include <iterator>

namespace wxa::detail {

// One per backend file.
extern const BackendFacts kProtectFacts;
extern const BackendFacts kDualMapFacts;
extern const BackendFacts kKernelWriteFacts;

namespace {
// Best first. kernel_write first: no page changes protection to publish
// code, and no writable mapping of code exists at all; it needs only a
// memfd that may be mapped executable, which deny_execmem hosts allow.
// If the first cannot be created after all (no descriptor left, a policy
// the probe did not meet), the arena tries the next.
const BackendFacts* const kBackends[] = {
    &kKernelWriteFacts,
    &kProtectFacts,
    &kDualMapFacts,
};
static_assert(std::size(kBackends) <= kMaxBackends);
}  // namespace

Result<std::size_t> backend_candidates(Backend wanted, const Capabilities& caps,
                                       const BackendFacts** out) noexcept {
  std::size_t n = 0;
  if (wanted == Backend::automatic) {
    for (const BackendFacts* f : kBackends)
      if (f->refusal(caps) == Errc::ok) out[n++] = f;
    if (n == 0) return Error(Errc::not_supported);
    return n;
  }
  for (const BackendFacts* f : kBackends) {
    if (f->kind != wanted) continue;
    if (const Errc e = f->refusal(caps); e != Errc::ok) return Error(e);
    out[n++] = f;
    return n;
  }
  return Error(Errc::invalid_argument);
}

void destroy_backend(PageBackend* backend) noexcept {
  if (!backend) return;
  backend->~PageBackend();
  meta_free(backend);
}

}  // namespace wxa::detail
