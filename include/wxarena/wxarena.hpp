// SPDX-License-Identifier: MIT
// The whole C++ API of wxarena: Arena, Batch, CodeHeap and their results.
#pragma once

#include "wxarena/arena.hpp"
#include "wxarena/code_heap.hpp"
#include "wxarena/perf_map.hpp"
#include "wxarena/result.hpp"
#include "wxarena/types.hpp"
