// SPDX-License-Identifier: MIT
// host/: the machine's cost of an empty system call and of a small pwrite()
// into a mapped memfd (see host_costs.cpp).
#pragma once

namespace wxb {

void register_host_costs();

}  // namespace wxb
