#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Writes the hand-made seed corpus of fuzz_transitions into fuzz/corpus/.
#
# Each seed is a short program in the byte language that the harness decodes
# (fuzz/harness.cpp's Harness::run, and the op_* functions in
# fuzz/arena_ops.cpp and fuzz/heap_ops.cpp): one byte picks the
# operation (low four bits, with bits 4 and 5 for patch) and the arena slot
# (0xC0 set: slot 1), the bytes after it are that operation's parameters. Run from anywhere:
#   python3 fuzz/make_corpus.py
import base64
import os
import struct

OP_CREATE, OP_ALLOC, OP_WRITE, OP_SEAL, OP_UNSEAL, OP_RELEASE, OP_BATCH = (
    0, 1, 3, 4, 5, 6, 7)
OP_HEAP_ALLOC, OP_HEAP_PUBLISH, OP_HEAP_RELEASE, OP_FIND, OP_TRIM = (
    8, 9, 10, 11, 12)
OP_ARM, OP_HEAP_CREATE, OP_DESTROY = 13, 14, 15
OP_PATCH = OP_FIND | 0x30
SLOT1 = 0xC0

AUTOMATIC, PROTECT, DUAL, KERNEL_WRITE = 0, 1, 2, 3
ERRNOS = {"ENOMEM": 0, "EACCES": 1, "EPERM": 2, "EINVAL": 3, "EAGAIN": 4}


def u16(v):
    return struct.pack("<H", v)


def u32(v):
    return struct.pack("<I", v)


def op(code, slot=0):
    return bytes([code | (SLOT1 if slot else 0)])


def create(backend=PROTECT, pages=32, quarantine=0, budget=None,
           open_pages=None, names=False, anchor_reach_pages=None, slot=0):
    """Options as in Harness::op_create; pages in 16..256."""
    f = backend
    tail = b""
    if budget is not None:
        f |= 4
    if open_pages is not None:
        f |= 8
    if names:
        f |= 16
    if anchor_reach_pages is not None:
        f |= 32
        if anchor_reach_pages:
            f |= 64
    out = op(OP_CREATE, slot) + bytes([f, pages - 16, quarantine])
    if budget is not None:
        out += bytes([budget - 1])
    if open_pages is not None:
        out += bytes([open_pages - 1])
    if anchor_reach_pages:
        out += u16(anchor_reach_pages)
    return out + tail


def alloc_pages(n, slot=0):
    """allocate(n pages): pick_size case 7."""
    return op(OP_ALLOC, slot) + bytes([7, n - 1])


def alloc_small(n, slot=0):
    """allocate(1 + n bytes), n < 64: pick_size case 0."""
    return op(OP_ALLOC, slot) + bytes([0, n])


def alloc_zero(slot=0):
    return op(OP_ALLOC, slot) + bytes([0x85])


def alloc_whole(plus_one=False, slot=0):
    return op(OP_ALLOC, slot) + bytes([0x86 if plus_one else 6])


def write(i, value, slot=0):
    """Writes `mov eax, value; ret` into the i-th writable chunk."""
    return op(OP_WRITE, slot) + bytes([i]) + u32(value)


def chunk(i):
    """pick_address: the i-th chunk the model knows, by address."""
    return bytes([0, i])


def interior(i, offset):
    return bytes([3, i]) + u16(offset - 1)


def rw_view(i):
    return bytes([4, i, 1])


def page(n):
    return bytes([5, n, 0])


def foreign(kind):
    """0 null, 1 a static, 2 the harness, 3 the other slot, 4 past the end,
    5 before the start, 6 past the writable view."""
    return bytes([6, kind]) + (b"\x00" if kind == 3 else b"")


def stale(i):
    return bytes([7, i])


def seal(target, read_only=False, slot=0):
    return op(OP_SEAL, slot) + bytes([1 if read_only else 0]) + target


def unseal(target, slot=0):
    return op(OP_UNSEAL, slot) + target


def release(target, slot=0):
    return op(OP_RELEASE, slot) + target


SEAL_X, SEAL_R, UNSEAL, RELEASE = 0, 1, 2, 3


def batch(entries, barrier=False, slot=0):
    """entries: (kind, target bytes) pairs; kind as above."""
    out = op(OP_BATCH, slot) + bytes([len(entries) - 1])
    for kind, target in entries:
        out += bytes([kind, 1]) + target  # 1: not a repeat of an earlier one
    return out + bytes([0 if barrier else 1])


def heap_create(alignment_index, slot=0):
    """kAlign in op_heap_create: 16 1 2 4 8 32 64 4096 0 3 24 8192."""
    return op(OP_HEAP_CREATE, slot) + bytes([alignment_index])


def heap_fn(size, value, emit=True, slot=0):
    """A function of 6 + size bytes (size < 250), default alignment."""
    return (op(OP_HEAP_ALLOC, slot) + bytes([1, size, 1]) + u32(value) +
            bytes([1 if emit else 0]))


def heap_big(extra, value, slot=0):
    """A function of one page + 1 + extra bytes: a chunk of its own."""
    return (op(OP_HEAP_ALLOC, slot) + bytes([6]) + u16(extra) + bytes([1]) +
            u32(value) + bytes([1]))


def heap_publish(barrier=False, slot=0):
    return op(OP_HEAP_PUBLISH, slot) + bytes([0 if barrier else 1])


def heap_release_fn(page_i, fn_i, inner=False, slot=0):
    out = op(OP_HEAP_RELEASE, slot) + bytes([2 if inner else 0, page_i, fn_i])
    return out + (b"\x00" if inner else b"")


def heap_release_null(slot=0):
    return op(OP_HEAP_RELEASE, slot) + bytes([5])


def find(target, slot=0):
    return op(OP_FIND, slot) + target


def patch_fn(target, value, slot=0):
    """Arena::patch with `mov eax, value; ret` at target."""
    return op(OP_PATCH, slot) + target + bytes([1]) + u32(value)


def patch_traps(target, n, slot=0):
    """Arena::patch with n (0..16) trap bytes at target."""
    return op(OP_PATCH, slot) + target + bytes([2 * n]) + u32(0)


def trim(slot=0):
    return op(OP_TRIM, slot)


def arm(k, err="ENOMEM", slot=0):
    """The k-th platform call (1..16) of the next operation fails."""
    return op(OP_ARM, slot) + bytes([k - 1, ERRNOS[err]])


def destroy_arena(slot=0):
    return op(OP_DESTROY, slot) + bytes([0])


def destroy_heap(slot=0):
    return op(OP_DESTROY, slot) + bytes([1])


def lifecycle(backend):
    return (create(backend, pages=32, quarantine=0) + alloc_pages(1) +
            alloc_pages(2) + alloc_small(40) + write(0, 0x11) + write(1, 0x22) +
            write(2, 0x33) + seal(chunk(0)) + seal(chunk(1), read_only=True) +
            unseal(chunk(0)) + write(0, 0x44) + seal(chunk(0)) +
            release(chunk(2)) + release(chunk(2)) + find(interior(1, 100)) +
            find(rw_view(0)) + trim() + alloc_pages(1))


SEEDS = {
    "lifecycle_protect": lifecycle(PROTECT),
    "lifecycle_dual_map": lifecycle(DUAL),
    "batch_mixed": (
        create(PROTECT, pages=48, quarantine=1) +
        b"".join(alloc_pages(1) for _ in range(5)) +
        b"".join(write(i, 0x100 + i) for i in range(5)) +
        batch([(SEAL_X, chunk(0)), (SEAL_X, chunk(1)), (SEAL_R, chunk(2)),
               (SEAL_X, chunk(4))], barrier=True) +
        batch([(UNSEAL, chunk(0)), (RELEASE, chunk(1)), (RELEASE, chunk(3))]) +
        batch([(SEAL_X, chunk(0)), (SEAL_X, chunk(0))])),
    "batch_dual_map_invalid": (
        create(DUAL, pages=24, quarantine=2) + alloc_pages(2) + alloc_pages(1) +
        write(0, 7) + batch([(SEAL_X, chunk(0)), (UNSEAL, chunk(1))]) +
        batch([(RELEASE, foreign(0)), (SEAL_X, interior(0, 5000))]) +
        batch([(SEAL_X, chunk(0)), (RELEASE, chunk(1))])),
    "code_heap": (
        create(PROTECT, pages=32, quarantine=0) +
        b"".join(heap_fn(10 * i, 0x5000 + i) for i in range(6)) +
        heap_big(100, 0x6000) + heap_publish() + heap_release_fn(0, 1) +
        heap_release_fn(0, 1) + heap_release_fn(0, 2, inner=True) +
        heap_fn(20, 0x7000) + heap_publish(barrier=True) +
        b"".join(heap_release_fn(0, i) for i in range(6)) + heap_publish() +
        heap_release_null() + destroy_heap()),
    "code_heap_dual_map": (
        create(DUAL, pages=20, quarantine=1) + heap_create(5) +
        heap_fn(30, 1, emit=False) + heap_fn(30, 2) + heap_publish() +
        heap_release_fn(0, 0) + heap_release_fn(0, 1) + heap_publish() +
        heap_fn(200, 3) + heap_publish() + trim()),
    "quarantine_recycle": (
        create(PROTECT, pages=16, quarantine=1, open_pages=4) +
        b"".join(alloc_pages(4) for _ in range(4)) + release(chunk(1)) +
        release(chunk(2)) + alloc_pages(4) + alloc_pages(4) + alloc_pages(1) +
        release(stale(0)) + trim() + alloc_pages(8)),
    "exhausted": (
        create(DUAL, pages=16, quarantine=3, open_pages=1) + alloc_pages(8) +
        alloc_pages(8) + alloc_pages(1) + alloc_whole(plus_one=True) +
        alloc_zero() + release(chunk(0)) + alloc_pages(1) + trim() +
        alloc_whole()),
    "vma_budget": (
        create(PROTECT, pages=32, quarantine=0, budget=4, open_pages=16) +
        b"".join(alloc_pages(1) for _ in range(6)) + seal(chunk(0)) +
        seal(chunk(2)) + seal(chunk(4)) + batch([(SEAL_R, chunk(1)),
                                                 (SEAL_X, chunk(3))]) +
        release(chunk(0)) + trim() + create(DUAL, pages=16, budget=1)),
    "faults_protect": (
        create(PROTECT, pages=32, quarantine=0, open_pages=2) +
        arm(1, "ENOMEM") + alloc_pages(1) + alloc_pages(1) + write(0, 9) +
        arm(1, "EACCES") + seal(chunk(0)) + seal(chunk(0)) + arm(1, "EAGAIN") +
        release(chunk(0)) + alloc_pages(3) + arm(2, "EINVAL") +
        batch([(SEAL_X, chunk(0)), (SEAL_R, chunk(1))], barrier=True) +
        arm(1, "EPERM") + trim() + arm(1, "ENOMEM") + create(DUAL, pages=16)),
    "faults_dual_map": (
        arm(1, "ENOMEM") + create(DUAL, pages=16) + arm(2, "EPERM") +
        create(DUAL, pages=16) + arm(3, "EINVAL") + create(DUAL, pages=16) +
        create(DUAL, pages=16, quarantine=0) + arm(1, "ENOMEM") +
        alloc_pages(1) + alloc_pages(2) + write(0, 5) + arm(2, "EACCES") +
        seal(chunk(0)) + seal(chunk(0)) + arm(1, "EAGAIN") + unseal(chunk(0)) +
        arm(1, "ENOMEM") + heap_fn(12, 3) + heap_fn(12, 4) + arm(2, "EINVAL") +
        heap_publish() + heap_publish()),
    "two_arenas": (
        create(PROTECT, pages=16, slot=0) + create(DUAL, pages=16, slot=1) +
        alloc_pages(1, slot=0) + alloc_pages(1, slot=1) + write(0, 1) +
        write(0, 2, slot=1) + seal(chunk(0)) + seal(chunk(0), slot=1) +
        find(foreign(3)) + release(foreign(3), slot=1) + find(page(3)) +
        destroy_arena(slot=1) + find(stale(1))),
    "anchor": (
        create(AUTOMATIC, pages=16, anchor_reach_pages=0) + alloc_pages(1) +
        write(0, 3) + seal(chunk(0)) +
        create(PROTECT, pages=64, anchor_reach_pages=8) +
        create(PROTECT, pages=16, anchor_reach_pages=1000, names=True) +
        alloc_small(1)),
    "bad_input": (
        create(PROTECT, pages=16) + seal(foreign(0)) + unseal(foreign(1)) +
        release(foreign(4)) + release(foreign(5)) + find(foreign(6)) +
        seal(page(2)) + alloc_pages(2) + release(interior(0, 4096)) +
        unseal(chunk(0)) + seal(rw_view(0)) + heap_create(8) + heap_create(9) +
        heap_create(11) + heap_create(1)),
    # Arena::patch and Backend::kernel_write, declared before they are
    # implemented: the model expects what the library does (arena_ops.cpp's
    # kPatchLanded, kKernelWriteLanded).
    "patch": (
        create(KERNEL_WRITE, pages=16) + create(PROTECT, pages=16) +
        alloc_pages(1) + alloc_pages(2) + write(0, 0x10) + write(1, 0x20) +
        seal(chunk(0)) + patch_fn(chunk(0), 0x11) + patch_traps(interior(0, 64), 4) +
        patch_fn(chunk(1), 0x21) + patch_traps(chunk(0), 0) +
        patch_fn(foreign(0), 1) + patch_traps(interior(0, 4094), 4) +
        create(DUAL, pages=16, slot=1) + alloc_pages(1, slot=1) +
        write(0, 0x30, slot=1) + seal(chunk(0), slot=1) +
        patch_fn(chunk(0), 0x31, slot=1) + release(chunk(0), slot=1) +
        patch_fn(stale(0), 0x32, slot=1) + create(KERNEL_WRITE, pages=32)),
    # Found by libFuzzer: an arena reserved right below another one, whose
    # placeholder merged with the other's (the kernel then kept two adjacent
    # writable mappings apart: the harness counts merged runs since).
    "found_adjacent_arenas": base64.b64decode(
        "AAIQAAEHnp4E/wAgAGEgAAgAcf8/AOgBAQABcnJycnJycnL///9ycnJycnJycnJycnJy"
        "cnJycnJycnJycnJycnJycnJycnJycnJycnJy"),
}


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"{len(SEEDS)} seeds written to {out}")


if __name__ == "__main__":
    main()
