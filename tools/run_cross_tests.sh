#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the test suite for another platform with a cross compiler and runs it
# under that platform's emulator: configures build-TARGET/ if needed, builds,
# and runs every test (extra arguments go to `meson test`). Installs nothing
# (.ci/run installs the packages the README names).
#   tools/run_cross_tests.sh windows   x86-64 Windows (mingw-w64), under Wine
#   tools/run_cross_tests.sh aarch64   Linux AArch64, under qemu-user, with
#                                      4 KiB and with 64 KiB pages
# Built without debug information (a third of the build's time); for a
# debugger, configure build-TARGET/ yourself first.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?"usage: $0 windows|aarch64 [meson test arguments]"}
shift

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
