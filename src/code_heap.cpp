// SPDX-License-Identifier: MIT
// CodeHeap: small-function packing (implementation pending).
