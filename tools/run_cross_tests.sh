#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the test suite for another platform with a cross compiler and runs it
# under that platform's emulator: configures build-TARGET/ if needed, builds,
# and runs every test (extra arguments go to `meson test`). Installs nothing
# (.ci/run installs the packages the README names; aarch64-system downloads
# Debian's arm64 packages it needs into its build directory, unpacked there).
#   tools/run_cross_tests.sh windows   x86-64 Windows (mingw-w64), under Wine
#   tools/run_cross_tests.sh aarch64   Linux AArch64, under qemu-user, with
#                                      4 KiB and with 64 KiB pages
#   tools/run_cross_tests.sh aarch64-system
#                                      Linux AArch64 on Debian's own arm64
#                                      kernel, under qemu-system-aarch64
#                                      (extra arguments go to wxa_tests,
#                                      e.g. a --gtest_filter)
# Built without debug information (a third of the build's time); for a
# debugger, configure build-TARGET/ yourself first.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?"usage: $0 windows|aarch64|aarch64-system [test arguments]"}
shift

# Linux AArch64 on a real arm64 kernel: Debian 12's own (the image package
# linux-image-arm64 depends on, unpacked, not installed) boots under
# qemu-system-aarch64 (-M virt -cpu max, 2 vCPUs, no disk) into an initramfs
# that holds the cross-built test programs, the AArch64 C and C++ runtime
# (Debian's cross packages, /usr/aarch64-linux-gnu), a static busybox and
# cross/aarch64-system/init, which runs the programs and powers off; the
# guest's status comes back through the console. Unlike qemu-user, the
# guest's kernel copies into executable pages and the emulator drops the
# code it translated from them, so kernel_write is offered and chosen; and
# seccomp filters load, so the runs under the W^X, execmem, nomembarrier,
# nomemfdexec, nopopulate and onlydual filters and under a foreign one are
# made (with libseccomp for arm64, unpacked from its Debian packages into
# the build directory).
# Needs the arm64 architecture in dpkg (dpkg --add-architecture arm64;
# apt-get update), qemu-system-arm and cpio: .ci/run installs them.
# WXA_SYSTEM_TIMEOUT (seconds, default 3600) bounds the guest's run.
aarch64_system() {
  local build=build-aarch64-system
  local debs=$build/debs sysroot=$PWD/$build/sysroot root=$build/initramfs
  local cross_lib=/usr/aarch64-linux-gnu/lib
  local limit=${WXA_SYSTEM_TIMEOUT:-3600}
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "$0: dpkg has no arm64 packages: dpkg --add-architecture arm64 &&" \
      "apt-get update" >&2
    return 2
  fi
  # The kernel Debian 12 ships today: the image the metapackage depends on.
  local kernel
  kernel=$(apt-cache depends linux-image-arm64:arm64 |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*-arm64\).*/\1/p')
  kernel=${kernel%%$'\n'*}
  if [ -z "$kernel" ]; then
    echo "$0: apt-cache names no image for linux-image-arm64:arm64" >&2
    return 2
  fi
  local pkg deb
  mkdir -p "$debs"
  for pkg in "$kernel" busybox-static libseccomp2 libseccomp-dev; do
    if ! ls "$debs/${pkg}_"*_arm64.deb >/dev/null 2>&1; then
      (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root \
        "$pkg:arm64")
    fi
  done
  if [ ! -f "$sysroot/usr/lib/aarch64-linux-gnu/pkgconfig/libseccomp.pc" ]; then
    for deb in "$debs"/libseccomp*_arm64.deb; do dpkg-deb -x "$deb" "$sysroot"; done
  fi
  # qemu boots an arm64 Image; a gzip'd vmlinuz is decompressed first.
  local image=$build/Image-${kernel#linux-image-} vmlinuz
  if [ ! -f "$image" ]; then
    rm -rf "$build/kernel" && mkdir -p "$build/kernel"
    dpkg-deb --fsys-tarfile "$debs/${kernel}_"*_arm64.deb |
      tar -x -C "$build/kernel" --wildcards './boot/vmlinuz-*'
    vmlinuz=$(echo "$build"/kernel/boot/vmlinuz-*)
    if [ "$(head -c 2 "$vmlinuz" | od -An -tx1 | tr -d ' ')" = 1f8b ]; then
      gzip -dc "$vmlinuz" >"$image.tmp"
    else
      cp "$vmlinuz" "$image.tmp"
    fi
    mv "$image.tmp" "$image" && rm -rf "$build/kernel"
  fi

  # The cross build, with seccomp; only what the guest runs.
  if [ ! -f "$build/build.ninja" ]; then
    cat >"$build/system.ini" <<INI
# tools/run_cross_tests.sh aarch64-system: libseccomp for arm64, unpacked here.
[properties]
sys_root = '$sysroot'
pkg_config_libdir = ['$sysroot/usr/lib/aarch64-linux-gnu/pkgconfig']

[project options]
seccomp = 'enabled'
INI
    meson setup "$build" --cross-file cross/aarch64-linux-gnu.ini \
      --cross-file "$build/system.ini" -Ddebug=false
  fi
  local programs=(tests/wxa_tests tests/rwx_probe tests/test_c_api
    tests/foreign_filter examples/wxa-c-example fuzz/fuzz_transitions_replay
    tools/wxa-seccomp-run)
  ninja -C "$build" "${programs[@]}"
  aarch64-linux-gnu-gcc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude \
    cross/aarch64-system/automatic.c -L"$build/src" -lwxarena \
    -o "$build/automatic"

  # The initramfs: the programs under /wxa as in the build directory, every
  # library they need in /lib (the dynamic linker's default path).
  rm -rf "$root"
  mkdir -p "$root"/{bin,lib,proc,sys,dev,tmp} "$root"/wxa/{tests,tools,examples,fuzz}
  dpkg-deb --fsys-tarfile "$debs"/busybox-static_*_arm64.deb |
    tar -x -O ./bin/busybox >"$root/bin/busybox"
  chmod 755 "$root/bin/busybox"
  cp cross/aarch64-system/init "$root/init"
  local p
  for p in "${programs[@]}"; do cp "$build/$p" "$root/wxa/$p"; done
  cp "$build/automatic" "$root/wxa/"
  cp -r fuzz/corpus "$root/wxa/corpus"
  : >"$root/wxa/gtest-args"
  [ $# -eq 0 ] || printf '%s\n' "$@" >"$root/wxa/gtest-args"
  cp -L "$cross_lib/ld-linux-aarch64.so.1" "$root/lib/"
  local lib dir more=1
  while [ "$more" = 1 ]; do
    more=0
    for lib in $(aarch64-linux-gnu-readelf -d "$root"/wxa/*/* \
        "$root/wxa/automatic" "$root"/lib/* 2>/dev/null |
        sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p' | sort -u); do
      [ ! -e "$root/lib/$lib" ] || continue
      for dir in "$build/src" "$cross_lib" "$sysroot/usr/lib/aarch64-linux-gnu"; do
        if [ -e "$dir/$lib" ]; then
          cp -L "$dir/$lib" "$root/lib/" && more=1 && break
        fi
      done
      if [ ! -e "$root/lib/$lib" ]; then
        echo "$0: $lib, which the guest's programs need, is nowhere" >&2
        return 1
      fi
    done
  done
  (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) \
    >"$build/initramfs.cpio"

  local log=$build/console.log start=$SECONDS status
  echo "booting Linux ${kernel#linux-image-} (arm64, $image) under" \
    "qemu-system-aarch64; the console is kept in $log"
  # pauth-impdef: the emulator's own pointer-authentication hash, much
  # faster to emulate than the architected QARMA one (the kernel signs its
  # return addresses); the guest sees the same instructions.
  timeout "$limit" qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on \
    -smp 2 -m 1024 -nographic -no-reboot -net none -kernel "$image" \
    -initrd "$build/initramfs.cpio" \
    -append "console=ttyAMA0 rdinit=/init panic=-1 quiet" </dev/null |
    tr -d '\r' | tee "$log" || true
  status=$(sed -n 's/^wxa-system: status \([0-9][0-9]*\)$/\1/p' "$log" | tail -n 1)
  if [ -z "$status" ]; then
    echo "$0: the guest stopped without a status (it crashed, or ran over" \
      "$limit s)" >&2
    return 1
  fi
  echo "aarch64-system: status $status, $((SECONDS - start)) s from boot to" \
    "power-off"
  return "$status"
}


case "$target" in
  windows)
    build=build-windows
    [ -f "$build/build.ninja" ] || meson setup "$build" \
      --cross-file cross/x86_64-w64-mingw32.ini -Ddebug=false -Dbench=disabled \
      -Dseccomp=disabled -Dmimalloc=disabled -Dllvm=disabled \
      -Dasmjit=disabled -Dxbyak=disabled -Dlibffi=disabled
    # A Wine prefix of the build's own. The server is started and the prefix
    # made before the first test (otherwise the first tests hang while Wine
    # sets itself up), and no debugger is started for a crashing death test.
    export WINEPREFIX="$PWD/$build/wineprefix" WINEDEBUG=-all
    mkdir -p "$WINEPREFIX"
    wineserver -p
    trap 'wineserver -k || true' EXIT
    wine cmd /c exit
    wine reg add 'HKLM\Software\Microsoft\Windows NT\CurrentVersion\AeDebug' \
      /v Debugger /t REG_SZ /d '' /f >/dev/null
    ;;
  aarch64)
    build=build-aarch64
    # The cross file leaves out what needs x86-64 or seccomp.
    [ -f "$build/build.ninja" ] ||
      meson setup "$build" --cross-file cross/aarch64-linux-gnu.ini -Ddebug=false
    # The packaging test configures a native build of its own: the native
    # run covers it.
    set -- --no-suite packaging "$@"
    # With 64 KiB pages (qemu-user reports them through AT_PAGESZ and aligns
    # every mapping to them) side by side with the run below, which has the
    # host's 4 KiB: on two cores, about the time of one run. Its output
    # follows the other's; each run keeps its own log in meson-logs/.
    ninja -C "$build"
    QEMU_PAGESIZE=65536 meson test -C "$build" --no-rebuild --print-errorlogs \
      --logbase testlog-64k "$@" >"$build/testlog-64k.out" 2>&1 &
    pages64k=$!
    ;;
  aarch64-system)
    aarch64_system "$@"
    exit
    ;;
  *)
    echo "$0: unknown target '$target'" >&2
    exit 2
    ;;
esac

status=0
meson test -C "$build" --print-errorlogs "$@" || status=$?
if [ -n "${pages64k:-}" ]; then
  wait "$pages64k" || status=1
  echo "--- the same suite with 64 KiB pages:"
  cat "$build/testlog-64k.out"
fi
exit "$status"
