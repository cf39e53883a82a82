#!/usr/bin/env python3
"""A real QEMU guest whose vcmad restarts (issue 16, vcmad(8) STATE): vcma.ko in Debian's
stock kernel under QEMU (TCG) holds a 2 MiB region with a pattern; vcmad is killed with
SIGKILL and started again. QEMU's ivshmem cannot handshake again, so the restarted vcmad
must keep that region reserved (never hand it out) for as long as that QEMU runs, found
by the pid and start time it recorded, past the sim guests' grace period, then reclaim
it when the QEMU exits. Restarting the guest (a new QEMU on the same socket) gives it a
working device, as vcmad(8) tells the operator.

usage: test_qemu_restart.py VCMAD VCMACTL SOURCE_ROOT
Exit 77 (skip) only when QEMU, the guest kernel, its headers or busybox cannot be had.
"""
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)

from vcmatest import Vcmad, check, ctl, frames, guests, poll_until, set_tools, vcmactl  # noqa: E402
import guestbuild  # noqa: E402

VCMAD, VCMACTL, ROOT = sys.argv[1], sys.argv[2], sys.argv[3]
set_tools(vcmactl=VCMACTL)
MiB = 1 << 20
GOOD = "0000:00:04.0"
GRACE_MS = 500

CONFIG = """
[daemon]
reattach_grace_ms = %d
[machine]
memory = 256M
[pool main]
size = 32M
[guest good]
backend = qemu
""" % GRACE_MS

HOLD = r"""echo VCMA-BOOTED
insmod /vcma.ko; echo "VCMA-EXIT insmod $?"
/vcma-e2e hold 2
"""

AGAIN = r"""echo VCMA-BOOTED
insmod /vcma.ko; echo "VCMA-EXIT insmod $?"
/vcma-e2e alloc 1; echo "VCMA-EXIT alloc $?"
poweroff -f
"""


def regions_of(d, name):
    return {int(r["handle"], 16): r for r in ctl(d, "regions")["regions"] if r["guest_name"] == name}


parts = guestbuild.prepare(ROOT)  # exits 77 when the parts cannot be had
d = Vcmad(VCMAD, CONFIG)
sock = os.path.join(d.rundir, "good.ivshmem")
vm = guestbuild.boot(parts, HOLD, [(sock, GOOD)])
vm2 = None
try:
    vm.expect(r"VCMA-BOOTED", 120)
    check(vm.expect(r"VCMA-EXIT insmod (\d+)", 60).group(1) == "0", "vcma.ko loads")
    m = vm.expect(r"VCMA-CHECK handle=(0x[0-9a-f]+) size=(\d+) offset=(0x[0-9a-f]+) dma=(0x[0-9a-f]+) "
                  r"fnv=(0x[0-9a-f]+) expect=(0x[0-9a-f]+)", 120)
    handle, fnv = int(m.group(1), 16), int(m.group(5), 16)
    vm.expect(r"VCMA-HOLDING", 60)
    before = regions_of(d, "good")
    check(handle in before and before[handle]["size_bytes"] == 2 * MiB
          and int(ctl(d, "hash", hex(handle))["fnv1a64"], 16) == fnv,
          "the guest holds a 2 MiB region %#x with its pattern, as vcmad sees it" % handle)
    free_before = frames(d)["free"]

    # vcmad dies; QEMU runs on with its BAR (and the region in it)
    d.kill()
    d = Vcmad(VCMAD, CONFIG, reuse=d)
    text = d.logtext()
    check("restore: took back 1 guest(s) with 1 region(s) and 0 VM(s)" in text,
          "restart: vcmad takes back the QEMU guest and its region")
    m = re.search(r"restore: guest \d+ \(good\): its QEMU \(pid (\d+)\) keeps 1 region\(s\) until it exits", text)
    check(m and int(m.group(1)) == vm.proc.pid,
          "restart: it found the QEMU by the pid it recorded (%s, QEMU is %d)" % (m and m.group(1), vm.proc.pid))
    g = guests(d).get("good", {})
    check(g.get("role") == "qemu" and g.get("link") == "restored" and g.get("configured"),
          "restart: vcmactl guests lists good as restored, a QEMU, its configuration known (%s)" % g)
    time.sleep(3 * GRACE_MS / 1000)
    after = regions_of(d, "good")
    check(handle in after and after[handle]["size_bytes"] == 2 * MiB,
          "restart: past the grace period the region is still good's, same handle (the QEMU still runs)")
    check(frames(d)["free"] == free_before, "restart: the pool counts its frames as held, as before the crash")
    r = vcmactl(d, "--json", "alloc", "--pool", "main", "31M")
    check(r.returncode != 0, "restart: the held frames are not handed out: 31 MiB of the 32 MiB pool cannot be had "
          "(%s)" % (r.stdout + r.stderr).strip())
    r = vcmactl(d, "--json", "alloc", "--pool", "main", "30M")
    got = json.loads(r.stdout) if r.returncode == 0 else {}
    held = after[handle]
    check(r.returncode == 0 and (got["mfn"] + got["frames"] <= held["mfn"] or held["mfn"] + held["frames"] <= got["mfn"]),
          "restart: the other 30 MiB are served, none of it on good's frames (%s)" % (r.stdout + r.stderr).strip())
    vcmactl(d, "free", got.get("handle", "0"))
    r = vcmactl(d, "--json", "hash", hex(handle))
    check(r.returncode != 0, "restart: vcmactl hash of it is refused: its bytes are in the QEMU's BAR, which the "
          "restarted vcmad does not map (%s)" % (r.stdout + r.stderr).strip())

    # the QEMU exits: its region is reclaimed
    vm.kill()
    poll_until(lambda: "(good) detached (its QEMU exited)" in d.logtext(), 10)
    check("(good) detached (its QEMU exited)" in d.logtext() and not regions_of(d, "good"),
          "the QEMU exited: vcmad reclaimed good's region")
    poll_until(lambda: frames(d)["free"] == frames(d)["total"], 10)
    check(frames(d)["free"] == frames(d)["total"], "and the pool is all free")

    # the operator restarts the guest: a new QEMU on the same socket works
    vm2 = guestbuild.boot(parts, AGAIN, [(sock, GOOD)])
    vm2.expect(r"VCMA-BOOTED", 120)
    check(vm2.expect(r"VCMA-EXIT insmod (\d+)", 60).group(1) == "0", "the restarted guest: vcma.ko loads")
    m = vm2.expect(r"VCMA-CHECK handle=(0x[0-9a-f]+) size=(\d+) offset=(0x[0-9a-f]+) dma=(0x[0-9a-f]+) "
                   r"fnv=(0x[0-9a-f]+) expect=(0x[0-9a-f]+)", 120)
    vm2.send_line("VCMA-OK" if m.group(5) == m.group(6) else "VCMA-FAIL")
    check(vm2.expect(r"VCMA-EXIT alloc (\d+)", 60).group(1) == "0",
          "the restarted guest allocates and frees a region: its device works again")
    vm2.wait_exit(60)
finally:
    vm.kill()
    if vm2:
        vm2.kill()
d.stop()
print("PASS")
