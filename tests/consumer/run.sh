#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds a tiny program against wxarena three times: against the installed
# package (meson install into a scratch root) through pkg-config and through
# CMake's find_package(), and as a Meson subproject. Skipped (77) after the
# other two if cmake is missing.
# Usage: run.sh SOURCE_ROOT SCRATCH_DIR
set -euo pipefail
src=$(cd "$1" && pwd)
work=$2
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work"
mkdir -p "$work"

echo "== installed package"
meson setup "$work/build" "$src" --prefix=/usr/local --libdir=lib \
  -Dtests=disabled -Dbench=disabled -Dxbyak=disabled >"$work/setup.log"
meson install -C "$work/build" --destdir "$work/root" >"$work/install.log"
prefix=$work/root/usr/local
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
flags=$(pkg-config --define-variable=prefix="$prefix" --cflags --libs wxarena)
c++ -std=c++20 "$here/consumer.cpp" $flags -Wl,-rpath,"$prefix/lib" -o "$work/consumer"
"$work/consumer"

echo "== installed package, CMake"
have_cmake=0
if command -v cmake >/dev/null; then
  have_cmake=1
  cmake -S "$here/cmake" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" \
    >"$work/cmake.log" 2>&1 &&
    cmake --build "$work/cmake" >>"$work/cmake.log" 2>&1 ||
    { cat "$work/cmake.log"; exit 1; }
  "$work/cmake/consumer"
else
  echo "cmake not found"
fi

echo "== subproject"
mkdir -p "$work/sub/subprojects"
cp "$here/meson.build" "$here/consumer.cpp" "$work/sub/"
ln -s "$src" "$work/sub/subprojects/wxarena"
unset PKG_CONFIG_PATH
meson setup "$work/sub/build" "$work/sub" --force-fallback-for=wxarena \
  >"$work/sub-setup.log"
ninja -C "$work/sub/build" >"$work/sub-build.log"
"$work/sub/build/consumer"
if [ "$have_cmake" = 0 ]; then
  echo "SKIP: the CMake consumer needs cmake"
  exit 77
fi
