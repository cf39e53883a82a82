"""A virtio-mem lender for tests and benchmarks: Debian's kernel under QEMU (TCG)
with a virtio-mem device (memfd-backed, requested size 0, 2 MiB blocks), its QMP
socket for vcmad and a second one for the test, the virtio modules and memhog in the
initramfs, and a shell loop on the console the host drives line by line:

    fill MIB   memhog fill MIB in the background (one at a time)
    kill       stop it
    copy MIB   the memcpy floor (memhog copy)
    mem        print MemTotal and the Movable zone's free pages
    quit       dmesg between VCMA-DMESG-BEGIN/-END, then power off
"""
import glob
import json
import os
import re
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import guestbuild  # noqa: E402
import mkinitramfs  # noqa: E402
import qemuvm  # noqa: E402
import vcmatest  # noqa: E402

MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_mem")

INIT = r"""#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in %(mods)s; do insmod /$m.ko || echo "VMEM-INSMOD-FAILED $m"; done
echo VMEM-BOOTED
HOG=
while read cmd n; do
  case "$cmd" in
  fill) /memhog fill $n & HOG=$! ;;
  kill) [ -n "$HOG" ] && kill $HOG; wait; HOG=; echo VMEM-KILLED ;;
  copy) /memhog copy $n ;;
  mem) echo "VMEM-MEM $(grep MemTotal /proc/meminfo) movable_free=$(grep -A3 'zone  *Movable' /proc/zoneinfo | grep 'pages free' | tr -s ' ' | cut -d' ' -f4)" ;;
  quit) break ;;
  esac
done
echo VCMA-DMESG-BEGIN
dmesg
echo VCMA-DMESG-END
poweroff -f
""" % {"mods": " ".join(MODULES)}


def prepare():
    """Build memhog and the initramfs; exits 77 when QEMU, the kernel or busybox cannot be had."""
    guestbuild.ensure_packages(os.path.join(HERE, "..", ".."),
                               lambda: guestbuild.missing_packages(kbuild=False), "the virtio-mem guest")
    kernel = qemuvm.newest_kernel()
    kver = os.path.basename(kernel)[len("vmlinuz-"):]
    out = vcmatest.tmpdir("vcma-vmem-")
    hog = os.path.join(out, "memhog")
    guestbuild._run(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", hog,
                     os.path.join(HERE, "guest", "memhog.c")], "building memhog")
    files = ["%s:/memhog:0755" % hog]
    for m in MODULES:
        found = glob.glob("/lib/modules/%s/kernel/drivers/virtio/%s.ko" % (kver, m))
        if not found:
            guestbuild._skip("no %s.ko for %s" % (m, kver))
        files.append("%s:/%s.ko:0644" % (found[0], m))
    init = os.path.join(out, "init.sh")
    with open(init, "w") as f:
        f.write(INIT)
    img = os.path.join(out, "initramfs.cpio.gz")
    mkinitramfs.build(img, files, init)
    return {"dir": out, "initrd": img, "kernel": kernel}


def boot(parts, vcmad_qmp, test_qmp, vmem_size="256M"):
    extra = ["-object", "memory-backend-memfd,id=vmem0,size=%s,share=on" % vmem_size,
             "-device", "virtio-mem-pci,id=vm0,memdev=vmem0,requested-size=0,block-size=2M",
             "-qmp", "unix:%s,server=on,wait=off" % vcmad_qmp,
             "-qmp", "unix:%s,server=on,wait=off" % test_qmp]
    return qemuvm.QemuVM(parts["initrd"], [], memory="512M,maxmem=2G,slots=1", kernel=parts["kernel"],
                         append="memhp_default_state=online_movable", extra=extra)


class Qmp:
    """The test's own QMP connection (blocking; the test is not vcmad)."""

    def __init__(self, path, timeout=30):
        import time
        deadline = time.time() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.s.connect(path)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        self.f = self.s.makefile("rwb")
        json.loads(self.f.readline())
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        self.f.flush()
        while True:
            m = json.loads(self.f.readline())
            if "return" in m:
                return m["return"]
            if "error" in m:
                raise RuntimeError(m["error"])

    def size(self, dev="vm0"):
        return self.cmd("qom-get", path=dev, property="size")


def memhog_lines(lines):
    return [(int(m.group(1)), int(m.group(2))) for m in (re.search(r"MEMHOG pass=(\d+) bad=(\d+)", x) for x in lines)
            if m]


def lender(stats, name):
    for entry in stats.get("balloon", {}).get("lenders", []):
        if entry["name"] == name:
            return entry
    return None


PAGE_ALLOC_FAILURE = re.compile(r"page allocation failure")


def problems(dmesg, allow_alloc_failure=False):
    """WARNING/BUG/Oops lines; with allow_alloc_failure, the call traces of the
    expected page-allocation-failure warning (an unplug that cannot migrate) are not."""
    bad = guestbuild.dmesg_problems(dmesg)
    if allow_alloc_failure and any(PAGE_ALLOC_FAILURE.search(x) for x in dmesg):
        bad = [x for x in bad if not re.search(r"Call Trace", x)]
    return bad


def kill(cmd):
    subprocess.run(cmd, check=False)
