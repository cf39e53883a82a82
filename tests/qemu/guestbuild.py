"""The parts of a real vcma guest, built for one test or benchmark run: vcma.ko and
vcma_kapi_test.ko against Debian's guest kernel headers, the static guest programs,
an initramfs around them, and a QEMU (TCG) booting Debian's stock kernel with it.

prepare() installs what is missing (scripts/setup-deps.sh, as root) and exits 77 only
when QEMU, the kernel, its headers, make or busybox cannot be had."""
import glob
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import mkinitramfs  # noqa: E402
import qemuvm  # noqa: E402
import vcmatest  # noqa: E402 (tests/integration: on the path of every test that builds a guest)

PROGRAMS = ("vcma-e2e", "vcma-hostile")
PROBLEMS = re.compile(r"WARNING:|BUG:|Oops|Call Trace|general protection|refcount_t|KASAN|UBSAN|kernel panic",
                      re.I)


def missing_packages(kbuild=True):
    """The Debian packages a QEMU guest needs that are not here: QEMU, the guest kernel,
    busybox, and with kbuild its headers and make (Kbuild runs it to build vcma.ko)."""
    need = []
    if not shutil.which("qemu-system-x86_64"):
        need.append("qemu-system-x86")
    if not glob.glob("/boot/vmlinuz-*-amd64"):
        need.append("linux-image-amd64")
    if kbuild and not glob.glob("/usr/src/linux-headers-*-amd64"):
        need.append("linux-headers-amd64")
    if not os.path.exists("/bin/busybox"):
        need.append("busybox-static")
    if kbuild and not shutil.which("make"):
        need.append("make")
    return need


def ensure_packages(root, missing, what):
    """missing() lists what is not installed. If anything is, install it as root with
    scripts/setup-deps.sh --for tests and ask again; exit 77 (skip), naming what is
    still missing, when it cannot be had."""
    need = missing()
    if need and os.geteuid() == 0:
        print("installing what %s needs: %s" % (what, " ".join(need)))
        subprocess.run([os.path.join(root, "scripts", "setup-deps.sh"), "--for", "tests"], check=False)
        need = missing()
    if need:
        _skip("cannot install %s (not root, or no package source); %s cannot run here" % (" ".join(need), what))


def _skip(msg):
    print("SKIP: " + msg)
    sys.exit(77)


def _run(cmd, what, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        from vcmatest import fail  # the test's temporary directories are kept
        fail("%s:\n%s%s" % (what, r.stdout[-4000:], r.stderr[-4000:]))
    return r


def prepare(root):
    """Build everything a guest needs into a temporary directory; returns a dict of paths."""
    ensure_packages(root, missing_packages, "the guest side")
    out = vcmatest.tmpdir("vcma-guest-")
    kdir = sorted(glob.glob("/usr/src/linux-headers-*-amd64"), key=_version_key)[-1]
    _run([os.path.join(root, "guest-driver", "linux", "build.sh"), os.path.join(out, "kmod"), kdir],
         "building vcma.ko against " + kdir, env=dict(os.environ, VCMA_WERROR="1"))
    parts = {"dir": out, "kdir": kdir,
             "vcma.ko": os.path.join(out, "kmod", "vcma.ko"),
             "vcma_kapi_test.ko": os.path.join(out, "kmod", "vcma_kapi_test.ko")}
    inc = ["-I", os.path.join(root, "guest-driver", "linux"), "-I", os.path.join(root, "proto")]
    for prog in PROGRAMS:
        src = os.path.join(HERE, "guest", prog.replace("-", "_") + ".c")
        dst = os.path.join(out, prog)
        _run(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", *inc, "-o", dst, src], "building " + prog)
        parts[prog] = dst
    return parts


def _version_key(path):
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", path)]


INIT_HEAD = """#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
"""


def boot(parts, init_script, devices, memory="512M", extra=(), append=""):
    """Boot Debian's kernel with an initramfs whose /init mounts /proc, /sys and /dev,
    then runs init_script (shell); devices is a list of (ivshmem socket path, PCI
    address); extra, more QEMU arguments; append, more kernel parameters. Returns a
    running qemuvm.QemuVM."""
    init = os.path.join(parts["dir"], "init.sh")
    with open(init, "w") as f:
        f.write(INIT_HEAD + init_script)
    img = os.path.join(parts["dir"], "initramfs.cpio.gz")
    files = ["%s:/%s:0755" % (parts[p], p) for p in PROGRAMS]
    files += ["%s:/%s:0644" % (parts[k], k) for k in ("vcma.ko", "vcma_kapi_test.ko")]
    mkinitramfs.build(img, files, init)
    return qemuvm.QemuVM(img, devices, memory=memory, extra=extra, append=append)


def splitmix64(x):
    x = (x + 0x9e3779b97f4a7c15) & 0xffffffffffffffff
    z = x
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & 0xffffffffffffffff
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & 0xffffffffffffffff
    return z ^ (z >> 31)


def pattern_fnv(size):
    """FNV-1a 64 of the guest programs' pattern for a region of size bytes."""
    seed = size ^ 0x9e3779b97f4a7c15
    h = 0xcbf29ce484222325
    for i in range(size // 8):
        for b in splitmix64((seed + i) & 0xffffffffffffffff).to_bytes(8, "little"):
            h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return h


def dmesg_problems(lines):
    return [line for line in lines if PROBLEMS.search(line)]
