#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds a tiny program against wxarena twice: against the installed package
# (meson install into a scratch root, then pkg-config) and as a subproject.
# Usage: run.sh SOURCE_ROOT SCRATCH_DIR
set -euo pipefail
src=$(cd "$1" && pwd)
work=$2
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work"
mkdir -p "$work"

echo "== installed package"
meson setup "$work/build" "$src" --prefix=/usr/local --libdir=lib \
  -Dtests=disabled -Dbench=disabled >"$work/setup.log"
meson install -C "$work/build" --destdir "$work/root" >"$work/install.log"
prefix=$work/root/usr/local
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
flags=$(pkg-config --define-variable=prefix="$prefix" --cflags --libs wxarena)
c++ -std=c++20 "$here/consumer.cpp" $flags -Wl,-rpath,"$prefix/lib" -o "$work/consumer"
"$work/consumer"

echo "== subproject"
mkdir -p "$work/sub/subprojects"
cp "$here/meson.build" "$here/consumer.cpp" "$work/sub/"
ln -s "$src" "$work/sub/subprojects/wxarena"
unset PKG_CONFIG_PATH
meson setup "$work/sub/build" "$work/sub" --force-fallback-for=wxarena \
  >"$work/sub-setup.log"
ninja -C "$work/sub/build" >"$work/sub-build.log"
"$work/sub/build/consumer"
