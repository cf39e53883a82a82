#!/usr/bin/env python3
"""Hostile VMMs against vcmad: each attaches with role VMM (4 MiB of RAM) and breaks
the VMM channel (proto/vcma_sim.h) one way. A malformed message gets the VMM cut off
(socket closed, ring DEAD) with the reason in the log; unsolicited PAUSED/REMAPPED are
ignored by design and a REPORT flood is not limited, so those VMMs stay served. vcmad
stays up throughout, and a well-behaved vcma-simvm beside them (checksumming vCPUs,
free page reporting, allocating regions that vacate lent pages) finishes with no error
and no corruption."""
import subprocess
import sys
import time

from vcmatest import Vcmad, check, log, set_tools, simvm, vm_summary, wait_until

VCMAD, HOSTILE, SIMVM = sys.argv[1], sys.argv[2], sys.argv[3]
set_tools(simvm=SIMVM)

# All of a VM's RAM on pool frames, and a pool small enough that the well-behaved VM's
# allocations vacate pages (its own or a hostile VMM's) while the others misbehave.
CONFIG = """
[daemon]
max_guests = 32
lend_share = 100%
relend_idle_ms = 100000
[machine]
memory = 256M
[limits]
max_ram_per_guest = 32M
[pool main]
size = 32M
"""

# scenario -> the reason vcmad must log when it cuts the VMM off
CUT_OFF = {
    "vmm-magic": "malformed VMM message",
    "vmm-version": "malformed VMM message",
    "vmm-short": "unexpected message on the attach socket",
    "vmm-length": "malformed VMM message",
    "vmm-count": "malformed VMM message",
    "vmm-oversized": "oversized message on the attach socket",
    "vmm-pad": "malformed VMM message",
    "vmm-type": "unknown VMM message type",
    "vmm-hosttype": "unknown VMM message type",
    "vmm-gfn": "VMM message run outside the VM's RAM",
    "vmm-tail": "VMM message run outside the VM's RAM",
    "vmm-zero": "VMM message run outside the VM's RAM",
    "vmm-wrap": "VMM message run outside the VM's RAM",
    "vmm-mfn": "VMM message run outside the VM's RAM",
    "vmm-pin-overlap": "VMM message runs overlap",
}


def hostile(sc):
    r = subprocess.run([HOSTILE, d.sock, sc], capture_output=True, text=True, timeout=60)
    sys.stdout.write(r.stdout + r.stderr)
    return r


def violations_logged(text, sc):
    """The protocol violations logged for VMM sc (each scenario attaches under its name)."""
    return [line for line in text.splitlines() if "(%s): protocol violation" % sc in line]


t0 = time.time()
d = Vcmad(VCMAD, CONFIG)
good = simvm(d, "good", "--ram", "16M", "--vcpus", "2", "--report", "20", "--alloc", "1M,2M,4M", "--max-regions", "4",
             "--duration", "4", "--seed", "7")

# not violations: the VMM stays attached and served (REPORT/REUSE answered, ring QUERY ok)
mark = d.log_mark()
r = hostile("vmm-unsolicited")
check(r.returncode == 0, "vmm-unsolicited: PAUSED/REMAPPED/TRACKING/DROPPED/DIRTY with seqs vcmad never sent are ignored, the VM "
      "is still served")
check(not violations_logged(d.log_since(mark), "vmm-unsolicited"), "vmm-unsolicited: no violation logged")
mark = d.log_mark()
r = hostile("vmm-flood")
check(r.returncode == 0, "vmm-flood: vcmad went on serving through a flood of whole-RAM REPORTs/REUSEs")
check(d.alive(), "vmm-flood: vcmad is still running")
check("still served" in r.stdout and not violations_logged(d.log_since(mark), "vmm-flood"),
      "vmm-flood: flooding with valid messages is no violation; the page budget per turn confines it")

for sc, reason in CUT_OFF.items():
    mark = d.log_mark()  # only what this scenario makes vcmad log counts for it
    r = hostile(sc)
    check(r.returncode == 0, "%s: vcmad cut the VMM off (ctrl.state DEAD, socket closed)" % sc)
    lines = wait_until(lambda: violations_logged(d.log_since(mark), sc), 10, "vcmad to log why it cut %s off" % sc)
    check(len(lines) == 1 and reason in lines[0], "%s: the log names the reason (%s)" % (sc, reason))
    check(d.alive(), "%s: vcmad is still running" % sc)

log("hostile VMMs done %.1f s after the well-behaved VM started (it runs 4 s)" % (time.time() - t0))
s = vm_summary(good, "the well-behaved VM", timeout=60)
check(s["corruptions"] == 0 and s["pattern_errors"] == 0 and s["errors"] == 0,
      "the well-behaved VM beside them: no corruption in RAM or regions, no unexpected error")
check(sum(z["ok"] for z in s["sizes"]) > 0 and s["vcpu_pages_verified"] > 0,
      "the well-behaved VM allocated regions and its vCPUs verified pages")
log("the well-behaved VM meanwhile: %d pauses, %d pages remapped, %d REPORTs, %d REUSEs, refusals %s" %
      (s["pauses"]["count"], s["remapped_pages"], s["reports"], s["reuses"],
       [z["refused"] for z in s["sizes"]]))
text = d.stop()
check(text.count("protocol violation") == len(CUT_OFF), "one logged violation per hostile VMM, none for the others")
print("PASS in %.1f s" % (time.time() - t0))
