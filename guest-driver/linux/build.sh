#!/bin/sh
# build.sh OUTDIR [KDIR] - build vcma.ko and vcma_kapi_test.ko out of tree into OUTDIR.
# KDIR defaults to the newest /usr/src/linux-headers-*-amd64 (Debian's guest kernel):
# the build machine may run another kernel, so `uname -r` is not used.
# VCMA_MAKE names the make to run (meson passes the one it found).
# VCMA_WERROR=1 turns the modules' warnings into errors (meson -Dwerror, the tests).
set -eu
src=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUTDIR [KDIR]}
kdir=${2:-$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$kdir" ] || [ ! -f "$kdir/Makefile" ]; then
	echo "build.sh: no kernel headers (apt-get install linux-headers-amd64)" >&2
	exit 1
fi
make=${VCMA_MAKE:-make}
if ! command -v "$make" >/dev/null; then
	echo "build.sh: no make: Kbuild needs it (apt-get install make)" >&2
	exit 1
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
# Kbuild builds in M=; sources are linked there so the tree stays clean
for f in "$src"/*.c "$src"/*.h "$src"/Kbuild; do
	ln -sf "$f" "$out/"
done
set -- -s -C "$kdir" M="$out" VCMA_PROTO="$src/../../proto" VCMA_SRC="$src"
[ "${VCMA_WERROR:-0}" = 1 ] && set -- "$@" KCFLAGS=-Werror
exec "$make" "$@" modules
