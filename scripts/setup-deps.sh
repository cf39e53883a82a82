#!/usr/bin/env bash
# Install what vcma needs to build and test on Debian 12, only what is missing.
# Every package the project uses is listed here and nowhere else.
set -euo pipefail

PKGS=(
	gcc libc6-dev pkg-config meson ninja-build   # build
	libjson-c-dev scdoc                           # control socket + vcmactl, man pages
	libcmocka-dev                                 # unit tests
	clang libclang-rt-14-dev                      # libFuzzer targets
	qemu-system-x86 busybox-static                # real guests: QEMU (TCG) and an initramfs
	linux-image-amd64 linux-headers-amd64         # Debian's guest kernel, and headers for vcma.ko
)

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
echo "setup-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
