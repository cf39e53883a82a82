#!/usr/bin/env bash
# Install what is missing, then build and run the whole test suite: under
# AddressSanitizer + UBSan, the libFuzzer targets for a bounded time (clang), then a
# -Werror build whose summary ends the run. Every pass runs even when an earlier one
# failed; the exit status is non-zero if any did. A test that had to leave part of
# itself out passes with a "PARTIAL: test: reasons" line (tests/integration/vcmatest.py):
# those lines of a pass are printed just above its meson summary.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh --for tests || exit 1

failed=()
# meson test's output, with the PARTIAL lines the tests appended to file $1 put in just
# before its summary ("Summary of Failures:" or "Ok:"), which stays the last thing said
partial_above_summary() {
	awk -v f="$1" '!done && /^(Summary of Failures:|Ok: )/ {
		while ((getline l < f) > 0) { print l; n++ }
		if (n) print ""
		done = 1
	}
	{ print; fflush() }'
}
pass() { # name, build dir, meson test options...; SETUP holds the meson setup options
	local name=$1 dir=$2 partial rc
	shift 2
	echo "== $name pass =="
	if ! scripts/build.sh "$dir" "${SETUP[@]}"; then
		failed+=("$name (build)")
		return
	fi
	partial=$(mktemp)
	VCMA_PARTIAL_LOG=$partial meson test -C "$dir" --print-errorlogs --num-processes 2 "$@" |
		partial_above_summary "$partial"
	rc=${PIPESTATUS[0]}
	rm -f "$partial"
	[ "$rc" -eq 0 ] || failed+=("$name")
}

# The xen tests that run no vcmad (the harness, vcma.ko against a fake backend) boot
# Xen for minutes with nothing to sanitize: they run in the last pass only. xen-e2e runs
# in both: in the sanitizer pass with the sanitized vcmad in dom0 (ASAN_OPTIONS do not
# reach it there; the test fails on any sanitizer report in its log or a non-zero exit).
# Likewise libvirt-without-vcmad (the libvirt harness test: guests under libvirt, no
# vcmad) runs in the last pass only.
SETUP=(-Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false)
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	pass "sanitizer (address,undefined)" build-asan --no-suite xen-without-vcmad \
	--no-suite libvirt-without-vcmad

SETUP=(-Dwerror=true -Dfuzz=enabled -Db_sanitize=address,undefined -Db_lundef=false
	-Dfuzz_seconds="${VCMA_FUZZ_SECONDS:-30}")
CC=clang pass "fuzz (clang libFuzzer, ${VCMA_FUZZ_SECONDS:-30} s per target)" build-fuzz --suite fuzz

# the last pass's summary ends the run: say first what failed before it
[ ${#failed[@]} -eq 0 ] || echo "run-tests: FAILED before the last pass: ${failed[*]}"
SETUP=(-Dwerror=true)
pass "test (-Werror)" build-test
[ ${#failed[@]} -eq 0 ]
