// SPDX-License-Identifier: MIT
// Runs a scenario once per failable platform call of its last step: first
// on a fresh arena with nothing failing (the scenario counts the step's
// calls into `calls` when `fail_at` is 0), then once more for each call,
// each on a fresh arena whose FaultPal fails that call; the arena must pass
// the audit afterwards.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>

#include "support/arena_util.hpp"
#include "support/fault_pal.hpp"
#include "support/maps.hpp"
#include "wxarena/arena.hpp"

namespace wxa::test {

template <class Scenario>
void for_each_failing_call(const Options& options, const std::size_t& calls,
                           Scenario run) {
  {
    FaultPal pal;
    Result<Arena> made = detail::create_arena(options, pal);
    ASSERT_TRUE(Ok(made));
    run(pal, *made, 0);
  }
  ASSERT_GE(calls, 1u);
  for (std::size_t k = 1; k <= calls; ++k) {
    SCOPED_TRACE(::testing::Message()
                 << "failing call " << k << " of " << calls);
    FaultPal pal;
    Result<Arena> made = detail::create_arena(options, pal);
    ASSERT_TRUE(Ok(made));
    run(pal, *made, k);
    EXPECT_TRUE(audit_arena(*made));
  }
}

}  // namespace wxa::test
