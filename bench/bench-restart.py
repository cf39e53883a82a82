#!/usr/bin/env python3
"""bench-restart: what taking guests back costs a restarted vcmad (issue 16). Time from
starting vcmad to READY=1 (every socket listening, the previous run taken back), for:

  fresh       the same configuration with nothing recorded: the baseline, same run
  restart     after kill -9 of a vcmad serving VMS simulated VMs of VM_MIB each (their RAM
              lent from the pool and ordinary memory) and a guest holding REGIONS
              regions: verify the record, rebuild guests, regions and each VM's p2m,
              zero every frame nobody owns, write the state anew

Each start is measured N times (a new crash before each restart). vcmad's own count of
what it took back is checked against what was there.

usage: bench-restart.py BUILD_DIR [--count N] [--quick]
  BUILD_DIR holds hv/vcmad, tools/vcmactl, tools/vcma-simvm and
  tests/integration/hold_regions (a release build: scripts/run-bench.sh).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from vcmatest import Vcmad, fail, frames, lent, set_tools, simvm, wait_until  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("build")
ap.add_argument("--count", type=int, default=10)
ap.add_argument("--quick", action="store_true")
args = ap.parse_args()
N = 3 if args.quick else args.count
B = args.build
VCMAD = os.path.join(B, "hv", "vcmad")
HOLD = os.path.join(B, "tests", "integration", "hold_regions")
set_tools(vcmactl=os.path.join(B, "tools", "vcmactl"), simvm=os.path.join(B, "tools", "vcma-simvm"))
VMS, VM_MIB, REGIONS = (2, 64, 16) if args.quick else (4, 256, 64)

CONFIG = """
[daemon]
lend_share = 50%%
relend_idle_ms = 3600000
reattach_grace_ms = 600000
[machine]
memory = %dM
[pool main]
size = %dM
""" % (VMS * VM_MIB + 1024, VMS * VM_MIB // 2 + REGIONS + 64)


def load(d):
    """The workload vcmad serves when it dies: VMS VMs and a guest holding REGIONS regions."""
    vms = [simvm(d, "vm%d" % i, "--ram", "%dM" % VM_MIB, "--alloc", "none", "--duration", "600", "--vcpus", "1")
           for i in range(VMS)]
    want = VMS * (VM_MIB << 8) // 2
    wait_until(lambda f: lent(f) >= want, 60, "the VMs' RAM lent", probe=lambda: frames(d))
    hold = subprocess.Popen([HOLD, d.sock, "holder", "main", "1M", str(REGIONS)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    for line in hold.stdout:
        if line.strip() == "ready":
            break
    else:
        fail("hold_regions did not get its regions")
    return vms + [hold]


def crash(d, procs):
    d.kill()
    for p in procs:
        p.kill()
        p.wait()


def timed_start(reuse=None):
    t0 = time.monotonic()
    d = Vcmad(VCMAD, CONFIG, reuse=reuse, timeout=120)
    return d, (time.monotonic() - t0) * 1000


fresh, restart = [], []
took = None
for i in range(N):
    d, ms = timed_start()
    fresh.append(ms)
    procs = load(d)
    crash(d, procs)
    d, ms = timed_start(reuse=d)
    restart.append(ms)
    m = re.search(r"restore: took back (\d+) guest\(s\) with (\d+) region\(s\) and (\d+) VM\(s\)", d.logtext())
    if not m or (int(m.group(1)), int(m.group(2)), int(m.group(3))) != (VMS + 1, REGIONS, VMS):
        fail("restart %d: vcmad did not take back %d guests, %d regions, %d VMs: %s"
             % (i, VMS + 1, REGIONS, VMS, m.group(0) if m else "no such line"))
    took = m.group(0)
    d.stop()


def row(name, v, what):
    print("%-10s %9.1f %9.1f %9.1f   %s" % (name, statistics.median(v), min(v), max(v), what))


print("bench-restart: vcmad start to READY=1 in ms (%d starts each; sim backend, release build)" % N)
print("%-10s %9s %9s %9s   %s" % ("start", "p50", "min", "max", "what it found"))
row("fresh", fresh, "nothing recorded")
row("restart", restart, "%d VMs x %d MiB, %d x 1 MiB regions (%s)" % (VMS, VM_MIB, REGIONS, took))
print("restart / fresh (p50): %.2fx, +%.1f ms" % (statistics.median(restart) / statistics.median(fresh),
                                                 statistics.median(restart) - statistics.median(fresh)))
