"""Linux's own migration engine as a peer: Debian's 6.1 kernel under QEMU (TCG) with a
ZONE_MOVABLE (movablecore=), a RAM workload filling most of it, and contig_mod.ko
calling alloc_contig_range() for 1/2/4/8 MiB ranges, without pins and with a pinned
share of the pages in use. Under TCG absolute times mean nothing; what is reported is
the success rate and the time per MiB as a ratio to the copy floor measured by the
same module in the same guest.

run() returns None (with the reason) when the guest kernel, its headers, make, QEMU or
busybox are not here."""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "qemu"))
import guestbuild  # noqa: E402
import mkinitramfs  # noqa: E402
import qemuvm  # noqa: E402

MEMORY_MIB = 512
MOVABLE_MIB = 256
WORKLOAD_MIB = 176   # most of ZONE_MOVABLE in use, as a guest's page cache and heaps keep it

INIT = r"""#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
/workload %(wl)d > /tmp/wl.log 2>&1 &
until grep -q WORKLOAD-READY /tmp/wl.log; do sleep 1; done
echo GUEST-WORKLOAD-READY
insmod /contig_mod.ko rounds=%(rounds)d tag=nopin
rmmod contig_mod
insmod /contig_mod.ko rounds=%(rounds)d pin_permille=%(pin)d tag=pin
rmmod contig_mod
echo VCMA-DMESG-BEGIN
dmesg
echo VCMA-DMESG-END
poweroff -f
"""


def _run(cmd, what):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError("%s failed:\n%s%s" % (what, r.stdout[-3000:], r.stderr[-3000:]))


def run(pin_share, rounds, progress):
    need = guestbuild.missing_packages()
    if need:
        return None, "not installed: " + " ".join(need)
    out = tempfile.mkdtemp(prefix="vcma-compare-guest-")
    try:
        kdir = sorted(glob.glob("/usr/src/linux-headers-*-amd64"), key=guestbuild._version_key)[-1]
        kmod = os.path.join(out, "kmod")
        os.mkdir(kmod)
        for f in ("contig_mod.c", "Kbuild"):
            shutil.copy(os.path.join(HERE, f), kmod)
        progress("kernel: building contig_mod.ko against %s" % os.path.basename(kdir))
        _run(["make", "-s", "-C", kdir, "M=" + kmod, "KCFLAGS=-Werror", "modules"], "building contig_mod.ko")
        wl = os.path.join(out, "workload")
        _run(["gcc", "-static", "-O2", "-Wall", "-Werror", "-o", wl, os.path.join(HERE, "workload.c")],
             "building the workload")
        init = os.path.join(out, "init.sh")
        with open(init, "w") as f:
            f.write(INIT % {"wl": WORKLOAD_MIB, "rounds": rounds, "pin": int(round(pin_share * 1000))})
        img = os.path.join(out, "initramfs.cpio.gz")
        mkinitramfs.build(img, [wl + ":/workload:0755", os.path.join(kmod, "contig_mod.ko") + ":/contig_mod.ko:0644"],
                          init)
        progress("kernel: booting Debian's kernel under QEMU (TCG), %d MiB, movablecore=%dM" %
                 (MEMORY_MIB, MOVABLE_MIB))
        vm = qemuvm.QemuVM(img, [], memory="%dM" % MEMORY_MIB, append="movablecore=%dM" % MOVABLE_MIB)
        try:
            vm.expect(r"GUEST-WORKLOAD-READY", 300)
            progress("kernel: workload of %d MiB running; alloc_contig_range() without and with pins" % WORKLOAD_MIB)
            lines = vm.dmesg(900)
            vm.wait_exit(60)
        finally:
            vm.kill()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    problems = guestbuild.dmesg_problems(lines)
    if problems:
        raise RuntimeError("the guest kernel complained:\n" + "\n".join(problems[:20]))
    res = {"nopin": {}, "pin": {}}
    for line in lines:
        m = re.search(r"CONTIG-FLOOR tag=(\w+) ns_per_mib=(\d+)", line)
        if m:
            res[m.group(1)]["floor_ns_per_mib"] = int(m.group(2))
        m = re.search(r"CONTIG-PINS tag=(\w+) used_pages=(\d+) pinned_pages=(\d+)", line)
        if m:
            res[m.group(1)]["used_pages"], res[m.group(1)]["pinned_pages"] = int(m.group(2)), int(m.group(3))
        m = re.search(r"CONTIG-ZONE tag=(\w+) start_pfn=(\d+) pages=(\d+) free_pages=(\d+)", line)
        if m:
            res[m.group(1)]["zone_pages"], res[m.group(1)]["zone_free"] = int(m.group(3)), int(m.group(4))
        m = re.search(r"CONTIG tag=(\w+) size_mib=(\d+) ok=(\d+) fail=(\d+) windows=(\d+) p50_ns=(\d+) "
                      r"p99_ns=(\d+) max_ns=(\d+) ns_per_mib_p50=(\d+) req_ns_per_mib_p50=(\d+)", line)
        if m:
            v = [int(x) for x in m.groups()[1:]]
            res[m.group(1)].setdefault("sizes", {})[v[0]] = dict(zip(
                ("ok", "fail", "windows", "p50_ns", "p99_ns", "max_ns", "ns_per_mib_p50", "req_ns_per_mib_p50"), v[1:]))
    for tag in res:
        if len(res[tag].get("sizes", {})) != 4 or "floor_ns_per_mib" not in res[tag]:
            raise RuntimeError("the guest printed no complete result for %s:\n%s" % (tag, "\n".join(lines[-40:])))
    res["kernel"] = os.path.basename(kdir).replace("linux-headers-", "")
    return res, None


if __name__ == "__main__":
    import json
    r, why = run(0.02, int(sys.argv[1]) if len(sys.argv) > 1 else 4, print)
    print(json.dumps(r, indent=1) if r else why)
