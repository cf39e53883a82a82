#!/usr/bin/env bash
# Install what vcma needs on Debian 12, only what is missing.
# Every package the project uses is listed here and nowhere else.
#
#   setup-deps.sh [--for demo|tests|bench|all] [--list]
#
#   demo   build the daemon, the CLI and the simulated VMs (the main job)
#   tests  the whole test suite: unit tests, libFuzzer targets (clang), man pages,
#          real guests under QEMU (the guest kernel, its headers, make for Kbuild),
#          real Xen under QEMU (the hypervisor, its tools and libxen-dev), and
#          libvirt's embedded QEMU driver (tests/libvirt), with the libvirt-qemu user
#   bench  the benchmarks, including the one that boots a real guest under QEMU, and
#          what builds vcmad's Xen backend (libxen-dev) and its libvirt support;
#          the comparison's plots (matplotlib)
#   all    everything (the default)
#   --list print the packages the purpose needs and exit
set -euo pipefail

# build: compiler, meson, the control socket's JSON library; python3 runs the tests
# and the demo's JSON handling (meson pulls it in, but we name what we use);
# liblmdb-dev: the durable ownership store (hv/store: vcmactl state verify today, vcmad's
# state directory once it is wired in; Debian 12 ships LMDB 0.9.24 with lmdb.pc)
BUILD=(gcc libc6-dev pkg-config meson ninja-build python3 libjson-c-dev liblmdb-dev)
MAN=(scdoc)                                        # man pages vcmactl(1), vcmad(8), vcma(4)
UNIT=(libcmocka-dev)                               # unit tests
FUZZ=(clang libclang-rt-14-dev)                    # libFuzzer targets
GUEST=(make qemu-system-x86 busybox-static          # real guests: Kbuild runs make; QEMU (TCG),
	linux-image-amd64 linux-headers-amd64)      # Debian's guest kernel and its headers
PLOT=(python3-matplotlib)                          # the comparison's plots (bench/compare)
XEN=(xen-hypervisor-4.17-amd64 xen-utils-4.17       # real Xen under QEMU (tests/xen): the hypervisor,
	libxen-dev)                                 # xl/xenstored/xenconsoled; vcmad's Xen backend links libxen
LIBVIRT=(libvirt-daemon libvirt-daemon-driver-qemu # libvirt guests (tests/libvirt): the embedded QEMU
	libvirt-clients libvirt-dev python3-libvirt) # driver (qemu:///embed, no daemon), virsh, vcmad's
	                                            # libvirt support links libvirt; the test's harness is
	                                            # Python. Not libvirt-daemon-system: it starts services

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
tests) PKGS=("${BUILD[@]}" "${MAN[@]}" "${UNIT[@]}" "${FUZZ[@]}" "${GUEST[@]}" "${XEN[@]}" "${LIBVIRT[@]}") ;;
bench) PKGS=("${BUILD[@]}" "${GUEST[@]}" "${XEN[@]}" "${LIBVIRT[@]}" "${PLOT[@]}") ;;
all) PKGS=("${BUILD[@]}" "${MAN[@]}" "${UNIT[@]}" "${FUZZ[@]}" "${GUEST[@]}" "${XEN[@]}" "${LIBVIRT[@]}" "${PLOT[@]}") ;;
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
# libvirt's QEMU driver run as root, embedded too (qemu:///embed?root=DIR, how the tests
# use it), resolves its built-in QEMU user and group, libvirt-qemu, before it reads
# DIR/etc/qemu.conf: without them it fails with "Failed to parse user 'libvirt-qemu'",
# and user = "root" in that qemu.conf does not help. libvirt-daemon-system's postinst
# creates them, but that package starts libvirtd and a NAT network, so we make them
# here as it does (a system group and user, no home created), only if missing. In the
# kvm group if there is one: libvirt probes /dev/kvm as that user, and a /dev/kvm it
# cannot open costs a capabilities re-probe (seconds) on every define.
NEED_QEMU_USER=false
case "$purpose" in
tests|bench|all) getent passwd libvirt-qemu >/dev/null && getent group libvirt-qemu >/dev/null ||
	NEED_QEMU_USER=true ;;
esac
[ ${#missing[@]} -eq 0 ] && ! $NEED_QEMU_USER && exit 0

SUDO=
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || {
		[ ${#missing[@]} -eq 0 ] || echo "setup-deps: need root (or sudo) to install: ${missing[*]}" >&2
		! $NEED_QEMU_USER || echo "setup-deps: need root (or sudo) to add the libvirt-qemu user" >&2
		exit 1
	}
	SUDO=sudo
fi
add_qemu_user() {
	getent group libvirt-qemu >/dev/null || $SUDO groupadd --system libvirt-qemu || return 1
	if ! getent passwd libvirt-qemu >/dev/null; then
		local groups=()
		getent group kvm >/dev/null && groups=(--groups kvm)
		$SUDO useradd --system --gid libvirt-qemu "${groups[@]}" --home-dir /var/lib/libvirt \
			--no-create-home --shell /usr/sbin/nologin --comment "Libvirt Qemu" libvirt-qemu || return 1
	fi
	echo "setup-deps ($purpose): added the libvirt-qemu system user and group (for libvirt's QEMU driver as root)"
}
if [ ${#missing[@]} -gt 0 ]; then
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
fi
# after the packages: installing them may be what creates the kvm group
if $NEED_QEMU_USER; then
	add_qemu_user || { echo "setup-deps: could not add the libvirt-qemu user and group" >&2; exit 1; }
fi
echo "setup-deps ($purpose): done"
