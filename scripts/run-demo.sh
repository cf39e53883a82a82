#!/usr/bin/env bash
# The main job: install what is missing, build, and show vcma at work.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh
[ -d build ] || meson setup build >/dev/null
meson compile -C build >/dev/null
exec ./build/tools/vcma-demo "$@"
