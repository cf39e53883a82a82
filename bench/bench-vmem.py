#!/usr/bin/env python3
"""bench-vmem: how long vcmad takes to take back 8, 32 and 64 MiB from a virtio-mem
lender whose lent memory is in use (memhog fills the guest's ZONE_MOVABLE), beside
the copy floor measured in the same guest (memcpy of as many bytes, best of 5).
Debian's kernel under QEMU (TCG), one guest for all rows; per row a fresh vcmad with
a pool of the row's size, all of it lent (lend_max), then `vcmactl alloc` of the
whole pool. Columns: vcmactl's wall time, vcmad's own take-back time (stats
reclaim_ns_max), the guest's memcpy floor, and take-back / floor.

Beside it, the same amounts vacated from a simulated VM (vcma-simvm, checksumming
vCPUs on RAM all backed by lent pool frames: pause, copy, remap, resume), against the
host's memcpy floor measured in the same run.

usage: bench-vmem.py VCMAD VCMACTL [--quick]
"""
import ctypes
import json
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
SIMVM = os.path.join(os.path.dirname(os.path.abspath(VCMACTL)), "vcma-simvm")
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



def host_floor(size):
    """memcpy of size MiB on the host, warm, best of 5 (seconds)."""
    n = size * MiB
    a, b = ctypes.create_string_buffer(b"\x5a" * n, n), ctypes.create_string_buffer(n)
    ctypes.memmove(b, a, n)
    best = None
    for _ in range(5):
        t0 = time.perf_counter()
        ctypes.memmove(b, a, n)
        t = time.perf_counter() - t0
        best = t if best is None or t < best else best
    return best


def simvm_row(size):
    """The same amount vacated from a simvm whose RAM sits on lent pool frames in use."""
    d = Vcmad(VCMAD, """
[daemon]
relend_idle_ms = 100
lend_share = 100%%
[machine]
memory = %dM
[pool main]
size = %dM
lendable = yes
""" % (4 * size + 256, size))
    vm = subprocess.Popen([SIMVM, "--socket", d.sock, "--name", "vm0", "--ram", "%dM" % size, "--vcpus", "1",
                           "--workload", "checksum", "--alloc", "none", "--duration", "600", "--json"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    wait_until(lambda: ctl(d, "pool", "show", "main")["frames"]["lent_used"] * 4096 >= size * MiB * 9 // 10, 120,
               "%d MiB of pool frames lent and in use by the simvm" % size)
    t0 = time.monotonic()
    ctl(d, "alloc", "--pool", "main", "%dM" % size, timeout=120)
    wall = time.monotonic() - t0
    st = ctl(d, "stats")
    vm.terminate()
    out, _ = vm.communicate(timeout=60)
    d.stop()
    summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    if summary.get("errors", summary.get("verify_errors", 0)):
        print("bench-vmem: simvm %d MiB row is invalid: %s" % (size, summary))
        sys.exit(1)
    took = [p for p in st["pools"] if p["name"] == "main"][0]["alloc_latency"]["max_ns"] / 1e9
    pause = st["daemon"]["pause_latency"]
    return took, host_floor(size), pause


sim_rows = [(size,) + simvm_row(size) for size in SIZES]

print("virtio-mem take-back, lent memory in use (QEMU TCG, Debian %s)" % os.path.basename(parts["kernel"]))
print("%8s %14s %16s %16s %12s" % ("MiB", "vcmactl (ms)", "vcmad take-back", "guest memcpy", "take-back/"))
print("%8s %14s %16s %16s %12s" % ("", "", "(ms)", "floor (ms)", "floor"))
for size, wall, took, floor in rows:
    print("%8d %14.1f %16.1f %16.2f %11.0fx" % (size, wall * 1e3, took * 1e3, floor * 1e3, took / floor))
print()
print("the same amounts vacated from a simvm (pause, copy, remap, resume; checksumming vCPUs)")
print("%8s %14s %16s %12s %14s %14s" % ("MiB", "vcmad ALLOC", "host memcpy", "vacate/", "pause p99", "virtio-mem /"))
print("%8s %14s %16s %12s %14s %14s" % ("", "(ms)", "floor (ms)", "floor", "(ms)", "simvm ratio"))
for (size, took_s, floor, pause), (_, _, took, gfloor) in zip(sim_rows, rows):
    print("%8d %14.1f %16.2f %11.1fx %14.2f %13.1fx" % (size, took_s * 1e3, floor * 1e3, took_s / floor,
                                                         pause.get("p99_ns", 0) / 1e6,
                                                         (took / gfloor) / (took_s / floor)))
