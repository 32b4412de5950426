// SPDX-License-Identifier: MIT
// xbyak_rwx_probe: Xbyak as it comes, with its default allocator and protect
// mode (which ask the kernel for RWX), generating and calling one function:
// the negative test proving that the W^X filter really judges.
//
// Usage: xbyak_rwx_probe --expect ok|refused
//
//   ok       exit 0 iff the generator was created, its buffer is mapped
//            writable AND executable (/proc/self/maps says rwx), and the
//            generated function returned the right value. Run unfiltered.
//   refused  exit 0 iff creating the generator failed because the kernel
//            refused the RWX request: Xbyak::ERR_CANT_PROTECT with errno
//            EACCES (what wxa-seccomp-run --policy wx answers). Run filtered.
//
// Any other outcome prints what happened and exits 1. Deliberately free of
// wxarena and gtest: it judges the kernel (and the filter) only. Never link
// this into wxa_tests: the unfiltered run maps RWX on purpose.

#include <xbyak/xbyak.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace {

// Xbyak's constructor mmaps a buffer and mprotects it RWX (Xbyak's default
// "ready" protection), unless told otherwise.
struct AddSeven : Xbyak::CodeGenerator {
  AddSeven() {
    lea(eax, ptr[rdi + 7]);
    ret();
  }
};

// The permissions /proc/self/maps shows for the page holding `p` ("rwxp"),
// or "" if none.
std::string_view perms_at(const void* p, char (&buf)[8]) {
  std::FILE* f = std::fopen("/proc/self/maps", "r");
  if (!f) return {};
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  char line[512];
  std::string_view out;
  while (std::fgets(line, sizeof line, f)) {
    unsigned long lo = 0, hi = 0;
    char perms[8] = {};
    if (std::sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3) continue;
    if (lo <= a && a < hi) {
      std::memcpy(buf, perms, sizeof buf);
      out = std::string_view(buf);
      break;
    }
  }
  std::fclose(f);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || std::string_view(argv[1]) != "--expect" ||
      (std::string_view(argv[2]) != "ok" &&
       std::string_view(argv[2]) != "refused")) {
    std::fprintf(stderr, "usage: xbyak_rwx_probe --expect ok|refused\n");
    return 2;
  }
  const bool expect_ok = std::string_view(argv[2]) == "ok";

  try {
    AddSeven gen;
    char buf[8] = {};
    const std::string_view perms = perms_at(gen.getCode(), buf);
    const int got = gen.getCode<int (*)(int)>()(35);
    std::printf("xbyak: buffer %p mapped %.*s; generated code returned %d\n",
                static_cast<const void*>(gen.getCode()),
                static_cast<int>(perms.size()), perms.data(), got);
    if (!expect_ok) {
      std::printf("FAIL: expected the kernel to refuse RWX\n");
      return 1;
    }
    if (perms.substr(0, 3) != "rwx" || got != 42) {
      std::printf("FAIL: expected an rwx buffer and 42\n");
      return 1;
    }
    std::printf("PASS: Xbyak's defaults map RWX, and the kernel allowed it\n");
    return 0;
  } catch (const Xbyak::Error& e) {
    const int err = errno;  // mprotect's, as Xbyak left it
    std::printf("xbyak: %s (error %d), errno %d (%s)\n", e.what(),
                static_cast<int>(e), err, std::strerror(err));
    if (expect_ok) {
      std::printf("FAIL: expected Xbyak to work unfiltered\n");
      return 1;
    }
    if (static_cast<int>(e) != Xbyak::ERR_CANT_PROTECT || err != EACCES) {
      std::printf("FAIL: expected ERR_CANT_PROTECT with EACCES\n");
      return 1;
    }
    std::printf("PASS: the kernel refused Xbyak's RWX request\n");
    return 0;
  }
}
