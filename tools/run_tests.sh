#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs the whole test suite: configures build/ if needed, builds, and runs
# every test (the plain run and the runs under the seccomp filters).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/build.ninja ] || meson setup build
meson test -C build --print-errorlogs "$@"
