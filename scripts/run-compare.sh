#!/usr/bin/env bash
# vcma against the alternatives on one cockpit trace: vcma (vcmad + simulated guests),
# a static carve-out, in-guest CMA, and Linux's alloc_contig_range() in a QEMU guest.
# Builds optimized, prints the comparison table, writes it and its plots to
# bench/results/ (docs/BENCHMARKS.md shows the latest run). Under 10 minutes.
#   run-compare.sh [--quick] [--no-kernel] [--out DIR] [--pin SHARE]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh --for bench
scripts/build.sh build-release --buildtype=release
# Debian's interpreter, which has python3-matplotlib (another python3 may come first in PATH)
py=/usr/bin/python3
[ -x "$py" ] || py=python3
exec "$py" bench/compare/compare.py build-release "$@"
