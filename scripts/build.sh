#!/usr/bin/env bash
# build.sh DIR [MESON SETUP OPTION]... : configure (or reconfigure) DIR and compile it.
# Quiet on success; on failure it prints meson's or the compiler's own error and a
# one-line hint, and exits non-zero. The run-* scripts build through it.
set -uo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: scripts/build.sh DIR [MESON SETUP OPTION]...}
shift
log=$(mktemp /tmp/vcma-build.XXXXXX)
trap 'rm -f "$log"' EXIT

if [ -f "$dir/build.ninja" ]; then
	meson setup --reconfigure "$dir" "$@" >"$log" 2>&1
else
	rm -rf "$dir" # a half-made directory from an earlier failure
	meson setup "$dir" "$@" >"$log" 2>&1
fi
rc=$?
if [ $rc -ne 0 ]; then
	tail -n 40 "$log" >&2
	echo "build: 'meson setup $dir $*' failed (above); is every package there? scripts/setup-deps.sh --list" >&2
	exit $rc
fi
# say what is left out of the build, e.g. vcma.ko without kernel headers
grep -E '^Message: ' "$log" | sed 's/^Message: /build: /'
meson compile -C "$dir" >"$log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then
	# ninja prints each failed step from a "FAILED:" line: show those with the
	# compiler's messages, else the end of the log
	if grep -q '^FAILED:' "$log"; then
		sed -n '/^FAILED:/,$p' "$log" | grep -v '^ninja: build stopped' | head -n 80 >&2
	else
		tail -n 40 "$log" >&2
	fi
	echo "build: compiling $dir failed (the error is above); fix it, or start over with rm -rf $dir" >&2
	exit $rc
fi
exit 0
