// SPDX-License-Identifier: MIT
// An independent /proc/<pid>/maps reader and the auditor that compares an
// arena's tracked page states with the kernel's (DESIGN.md invariant 3).
//
// Deliberately shares no code with the library: it is the second opinion.
// Not thread-safe against concurrent mapping changes: /proc/<pid>/maps is a
// snapshot only as good as the moment each chunk of it is read.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace wxa {
class Arena;
}

namespace wxa::test {

/// One line of /proc/<pid>/maps.
struct Mapping {
  std::uintptr_t begin = 0;  ///< first byte
  std::uintptr_t end = 0;    ///< one past the last byte
  bool read = false, write = false, execute = false;
  bool shared = false;  ///< 's' (shared) rather than 'p' (private)
  std::uint64_t offset = 0;
  std::string dev;  ///< "major:minor", as printed (hex)
  std::uint64_t inode = 0;
  std::string name;  ///< path, "[heap]", "[anon:...]", or empty

  /// The protection as /proc prints it without the sharing flag: "r-x".
  [[nodiscard]] std::string protection() const;
  /// All four flags as printed: "r-xp".
  [[nodiscard]] std::string perms() const;
  [[nodiscard]] std::size_t size() const noexcept { return end - begin; }
  [[nodiscard]] bool contains(std::uintptr_t address) const noexcept {
    return begin <= address && address < end;
  }
};

/// Parses one line of a maps file. Throws std::runtime_error if malformed.
[[nodiscard]] Mapping parse_maps_line(std::string_view line);

/// Every mapping of a process (0: this one), in address order.
/// Throws std::system_error if the file cannot be read, std::runtime_error
/// if a line cannot be parsed.
[[nodiscard]] std::vector<Mapping> read_maps(pid_t pid = 0);

/// Every mapping of this process that is writable and executable at once.
[[nodiscard]] std::vector<Mapping> writable_and_executable();

/// How many mappings of this process intersect [begin, end).
[[nodiscard]] std::size_t count_vmas(const void* begin, const void* end);

/// The mapping of this process containing `address`, if any (the returned
/// mapping has begin == end == 0 when none does).
[[nodiscard]] Mapping mapping_at(const void* address);

/// Whether this process's /proc/self/maps tells read-only pages from
/// read-execute pages next to them. Linux does. qemu-user (7.2) builds the
/// file from its own host mappings, where the guest's r-- and r-x pages are
/// both r-- and merge into one VMA, and prints the first page's protection
/// for the whole merged range. Probed once, on a real two-page mapping.
/// Where false, the audits below take r-- and r-x as one class (readable,
/// not writable: the W^X checks stay exact) and VMA counts from this file
/// may be lower than the kernel's real ones.
[[nodiscard]] bool maps_tell_read_from_execute();

/// The reason to give when a test needs exact per-page protections or VMA
/// counts from /proc/self/maps and maps_tell_read_from_execute() is false.
inline constexpr const char* kMapsMergeReason =
    "/proc/self/maps merges adjacent r-- and r-x pages here (qemu-user "
    "builds it from its host mappings), so its protections and VMA counts "
    "cannot be compared exactly";

/// Whether /proc/self/maps lists every mapping of this process, as Linux's
/// does: probed by looking for the stack (a local variable's address).
/// qemu-user 7.2 run with a page size above the host's (-p 65536) leaves
/// out the stack and the heap.
[[nodiscard]] bool maps_list_every_mapping();

/// Whether madvise(MADV_DONTDUMP) keeps a page apart from neighbours of the
/// same protection, as Linux does (the flag differs, so the VMAs do not
/// merge): the arena's guard pages rely on it to keep its mappings from
/// merging with other arenas'. Probed once, on a real three-page mapping.
/// qemu-user 7.2 accepts the advice and ignores it.
[[nodiscard]] bool madvise_keeps_guard_pages_apart();

/// One expected protection over a byte range, for check_protection().
struct Expected {
  std::uintptr_t begin = 0, end = 0;
  std::string protection;  ///< "---", "r--", "rw-" or "r-x"
  std::string what;        ///< named in a failure message; may be empty
};

/// Compares `expected` (sorted by address, not overlapping) with `maps`
/// (sorted, as read_maps() returns them) in one merged walk. Unmapped bytes
/// inside an expected range are a mismatch. The failure names the first
/// mismatching address, the expected and the actual protection.
[[nodiscard]] ::testing::AssertionResult check_protection(
    const std::vector<Expected>& expected, const std::vector<Mapping>& maps);

/// The whole audit of an arena against one snapshot of /proc/self/maps:
/// arena.runs() must tile arena.range() in address order; every page of the
/// executable view must carry its run's rx_access and, when rw_range()
/// differs from range() (dual_map), every page of the writable view its
/// rw_access; and no mapping anywhere in the process may be writable and
/// executable. Use as EXPECT_TRUE(audit_arena(arena)).
[[nodiscard]] ::testing::AssertionResult audit_arena(const wxa::Arena& arena);
/// The same audit against a given snapshot (sorted, as read_maps() returns).
[[nodiscard]] ::testing::AssertionResult audit_arena(
    const wxa::Arena& arena, const std::vector<Mapping>& maps);

}  // namespace wxa::test
