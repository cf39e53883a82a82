#!/usr/bin/env bash
# Build optimized and run the benchmarks; each prints a table against its baselines.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh
[ -d build-release ] || meson setup build-release --buildtype=release >/dev/null
meson compile -C build-release >/dev/null
./build-release/bench/bench-search "$@"
