#!/usr/bin/env bash
# Install what is missing, then build and run the whole test suite: under
# AddressSanitizer + UBSan, the libFuzzer targets for a bounded time (clang), then a
# -Werror build whose summary ends the run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh

setup() { # dir, options...
	local dir=$1
	shift
	if [ -d "$dir" ]; then
		meson setup --reconfigure "$dir" "$@" >/dev/null
	else
		meson setup "$dir" "$@" >/dev/null
	fi
}

echo "== sanitizer pass (address,undefined) =="
setup build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	meson test -C build-asan --print-errorlogs --num-processes 2

echo "== fuzz pass (clang libFuzzer, ${VCMA_FUZZ_SECONDS:-30} s per target) =="
CC=clang setup build-fuzz -Dwerror=true -Dfuzz=enabled -Db_sanitize=address,undefined -Db_lundef=false \
	-Dfuzz_seconds="${VCMA_FUZZ_SECONDS:-30}"
meson test -C build-fuzz --suite fuzz --print-errorlogs --num-processes 2

echo "== test pass (-Werror) =="
setup build-test -Dwerror=true
meson test -C build-test --print-errorlogs --num-processes 2
