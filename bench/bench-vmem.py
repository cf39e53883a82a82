#!/usr/bin/env python3
"""bench-vmem: how long vcmad takes to take back 8, 32 and 64 MiB from a virtio-mem
lender whose lent memory is in use (memhog fills the guest's ZONE_MOVABLE), beside
the copy floor measured in the same guest (memcpy of as many bytes, best of 5).
Debian's kernel under QEMU (TCG), one guest for all rows; per row a fresh vcmad with
a pool of the row's size, all of it lent (lend_max), then `vcmactl alloc` of the
whole pool. Columns: vcmactl's wall time, vcmad's own take-back time (stats
reclaim_ns_max), the guest's memcpy floor, and take-back / floor.

usage: bench-vmem.py VCMAD VCMACTL [--quick]
"""
import os
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "tests", "qemu"))

from vcmatest import Vcmad, ctl, set_tools, wait_until  # noqa: E402
import vmemguest  # noqa: E402

VCMAD, VCMACTL = sys.argv[1], sys.argv[2]
QUICK = "--quick" in sys.argv
set_tools(vcmactl=VCMACTL)
MiB = 1 << 20
SIZES = (8, 32) if QUICK else (8, 32, 64)

parts = vmemguest.prepare()
qmp_vcmad = os.path.join(parts["dir"], "qmp-vcmad.sock")
vm = vmemguest.boot(parts, qmp_vcmad, os.path.join(parts["dir"], "qmp-test.sock"))
vm.expect(r"VMEM-BOOTED", 180)
q = vmemguest.Qmp(os.path.join(parts["dir"], "qmp-test.sock"))
rows = []
for size in SIZES:
    d = Vcmad(VCMAD, """
[daemon]
relend_idle_ms = 100
[machine]
memory = 256M
[pool main]
size = %dM
lendable = yes
[guest ivi]
backend = qemu
lender = virtio-mem
qmp = %s
vmem_device = vm0
lend_max = %dM
reclaim_timeout_ms = 60000
""" % (size, qmp_vcmad, size))
    wait_until(lambda: q.size() == size * MiB, 120, "%d MiB plugged" % size)
    vm.send_line("fill %d" % (size + 64))
    vm.expect(r"MEMHOG pass=1 bad=0", 300)
    t0 = time.monotonic()
    ctl(d, "alloc", "--pool", "main", "%dM" % size, timeout=120)
    wall = time.monotonic() - t0
    st = vmemguest.lender(ctl(d, "stats"), "ivi")
    vm.send_line("kill")
    vm.expect(r"VMEM-KILLED", 60)
    vm.send_line("copy %d" % size)
    floor = int(vm.expect(r"MEMHOG-COPY mib=%d ns=(\d+)" % size, 120).group(1)) / 1e9
    bad = [b for _, b in vmemguest.memhog_lines(vm.lines) if b]
    if bad or st["reclaims_short"] or q.size():
        print("bench-vmem: %d MiB row is invalid: bad words %s, short %d, size %d" %
              (size, bad, st["reclaims_short"], q.size()))
        sys.exit(1)
    rows.append((size, wall, st["reclaim_ns_max"] / 1e9, floor))
    d.stop()
vm.send_line("quit")
vm.dmesg(120)
vm.wait_exit(60)

print("virtio-mem take-back, lent memory in use (QEMU TCG, Debian %s)" % os.path.basename(parts["kernel"]))
print("%8s %14s %16s %16s %12s" % ("MiB", "vcmactl (ms)", "vcmad take-back", "guest memcpy", "take-back/"))
print("%8s %14s %16s %16s %12s" % ("", "", "(ms)", "floor (ms)", "floor"))
for size, wall, took, floor in rows:
    print("%8d %14.1f %16.1f %16.2f %11.0fx" % (size, wall * 1e3, took * 1e3, floor * 1e3, took / floor))
