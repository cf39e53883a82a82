#!/usr/bin/env bash
# Install what vcma needs on Debian 12, only what is missing.
# Every package the project uses is listed here and nowhere else.
#
#   setup-deps.sh [--for demo|tests|bench|all] [--list]
#
#   demo   build the daemon, the CLI and the simulated VMs (the main job)
#   tests  the whole test suite: unit tests, libFuzzer targets (clang), man pages,
#          real guests under QEMU (the guest kernel, its headers, make for Kbuild),
#          and real Xen under QEMU (the hypervisor, its tools and libxen-dev)
#   bench  the benchmarks, including the one that boots a real guest under QEMU, and
#          what builds vcmad's Xen backend (libxen-dev); the comparison's plots (matplotlib)
#   all    everything (the default)
#   --list print the packages the purpose needs and exit
set -euo pipefail

# build: compiler, meson, the control socket's JSON library; python3 runs the tests
# and the demo's JSON handling (meson pulls it in, but we name what we use)
BUILD=(gcc libc6-dev pkg-config meson ninja-build python3 libjson-c-dev)
MAN=(scdoc)                                        # man pages vcmactl(1), vcmad(8), vcma(4)
UNIT=(libcmocka-dev)                               # unit tests
FUZZ=(clang libclang-rt-14-dev)                    # libFuzzer targets
GUEST=(make qemu-system-x86 busybox-static          # real guests: Kbuild runs make; QEMU (TCG),
	linux-image-amd64 linux-headers-amd64)      # Debian's guest kernel and its headers
PLOT=(python3-matplotlib)                          # the comparison's plots (bench/compare)
XEN=(xen-hypervisor-4.17-amd64 xen-utils-4.17       # real Xen under QEMU (tests/xen): the hypervisor,
	libxen-dev)                                 # xl/xenstored/xenconsoled; vcmad's Xen backend links libxen

purpose=all list=false
while [ $# -gt 0 ]; do
	case "$1" in
	--for) purpose=${2:-}; shift 2 || { echo "setup-deps: --for needs demo, tests, bench or all" >&2; exit 2; } ;;
	--for=*) purpose=${1#--for=}; shift ;;
	--list) list=true; shift ;;
	-h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "setup-deps: unknown argument '$1' (try --help)" >&2; exit 2 ;;
	esac
done
case "$purpose" in
demo) PKGS=("${BUILD[@]}") ;;
tests) PKGS=("${BUILD[@]}" "${MAN[@]}" "${UNIT[@]}" "${FUZZ[@]}" "${GUEST[@]}" "${XEN[@]}") ;;
bench) PKGS=("${BUILD[@]}" "${GUEST[@]}" "${XEN[@]}" "${PLOT[@]}") ;;
all) PKGS=("${BUILD[@]}" "${MAN[@]}" "${UNIT[@]}" "${FUZZ[@]}" "${GUEST[@]}" "${XEN[@]}" "${PLOT[@]}") ;;
*) echo "setup-deps: --for must be demo, tests, bench or all, not '$purpose'" >&2; exit 2 ;;
esac
if $list; then
	echo "${PKGS[*]}"
	exit 0
fi

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { echo "setup-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
	SUDO=sudo
fi
echo "setup-deps ($purpose): installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp /tmp/vcma-setup-deps.XXXXXX)
trap 'rm -f "$log"' EXIT
# apt's progress goes to a log: a newcomer sees one line per step, and all of it on failure
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
	>"$log" 2>&1; then
	tail -n 40 "$log" >&2
	echo "setup-deps: apt-get could not install: ${missing[*]} (see above)" >&2
	exit 1
fi
echo "setup-deps ($purpose): done"
