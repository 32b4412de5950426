// SPDX-License-Identifier: MIT
// Free runs of pages: inserting with merges, carving and splitting.
#include "run_map.hpp"

#include <iterator>
#include <utility>

namespace wxa::detail {

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
