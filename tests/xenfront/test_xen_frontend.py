#!/usr/bin/env python3
"""vcma.ko's Xen frontend (PROTOCOL.md 9.3) under real Xen 4.17 in QEMU (TCG).

A PV domU loads vcma.ko. In dom0 the test plays the toolstack (9.3's nodes) and runs
fake_backend.c, a backend written from PROTOCOL.md alone, once per scenario; the
frontend connects to each in turn (the domU unbinds and rebinds the device between
them):

  good      HELLO; 1 and 4 MiB through /dev/vcma and 1 MiB through the in-kernel API:
            what the guest wrote is what dom0 reads from the machine frames the
            backend populated (dma = offset = their machine address); then the device
            is unbound under a mapped region: SIGBUS, ENODEV, the backend detaches,
            the domain keeps the region's frames until the holder lets go, then its
            memory is back where it was
  foreign   an ALLOC answered with frames that are not the domain's: EIO (Xen refused
            the M2P update), the handle FREEd
  twice     an ALLOC answered with a live region's frames: EIO
  misalign  an ALLOC answered off its alignment: EIO
  closing   the backend goes away under a mapped region: SIGBUS, ECONNRESET, the
            frontend closes
  2 pages   an area too small for the layout: the frontend refuses it (2.5) and closes
Any WARNING, BUG or Oops in any log fails the test.

usage: test_xen_frontend.py SOURCE_ROOT
Exit 77 (skip) when the Xen harness (tests/xen/xenvm.py) is not in this tree, or Xen,
QEMU, the guest kernel, its headers, busybox or libxen cannot be had.
"""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = sys.argv[1]
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "qemu"))
sys.path.insert(0, os.path.join(HERE, "..", "xen"))

from vcmatest import check, fail, log, skip, tmpdir  # noqa: E402

if not os.path.exists(os.path.join(HERE, "..", "xen", "xenvm.py")):
    skip("the Xen harness (tests/xen/xenvm.py) is not in this tree")
import guestbuild  # noqa: E402
import xenvm  # noqa: E402

EIO, ENODEV, ECONNRESET = 5, 19, 104

env = xenvm.prepare(ROOT)  # exits 77 when Xen or its tools cannot be had
parts = guestbuild.prepare(ROOT)
inc = ["-I", os.path.join(ROOT, "proto"), "-I", os.path.join(ROOT, "guest-driver", "linux")]
backend = os.path.join(parts["dir"], "vcma-fake-backend")
guest = os.path.join(parts["dir"], "xen-front-guest")
for cmd, what in ((["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter", *inc, "-o", backend,
                    os.path.join(HERE, "fake_backend.c"), "-lxenctrl", "-lxenstore", "-lxengnttab", "-lxenevtchn",
                    "-lxenforeignmemory"], "the fake backend"),
                  (["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", *inc, "-o", guest,
                    os.path.join(HERE, "xen_front_guest.c")], "the guest program")):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        fail("building %s:\n%s%s" % (what, r.stdout, r.stderr))

DOMU = r"""
(while true; do dmesg -c | sed 's/^/KMSG /'; sleep 0.3; done) &
insmod /vcma.ko; echo "VCMA-INSMOD $?"
waitdev() { n=0; while [ ! -e /dev/vcma ] && [ $n -lt 1500 ]; do sleep 0.1; n=$((n+1)); done; [ -e /dev/vcma ] && echo "VCMA-UP $1"; }
waitfile() { n=0; while ! grep -q "$2" "$1" 2>/dev/null && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done; }
unbind() { echo vcma-0 > /sys/bus/xen/drivers/vcma/unbind; echo "VCMA-UNBIND $?"; }
bind() { echo vcma-0 > /sys/bus/xen/drivers/vcma/bind; echo "VCMA-BIND $?"; }
waitdev good
/xen-front-guest alloc 1; /xen-front-guest alloc 4
insmod /vcma_kapi_test.ko; echo "VCMA-KAPI $?"; dmesg | grep 'vcma_kapi_test: handle='
rmmod vcma_kapi_test
/xen-front-guest hold 2 /tmp/go1 > /tmp/h1 2>&1 &
waitfile /tmp/h1 XG-HOLD
unbind
sleep 3; touch /tmp/go1; wait $!; cat /tmp/h1
bind; waitdev foreign
/xen-front-guest eio 1; /xen-front-guest alloc 1
unbind
bind; waitdev twice
/xen-front-guest hold 1 /tmp/go3 > /tmp/h3 2>&1 &
waitfile /tmp/h3 XG-HOLD
/xen-front-guest eio 1
unbind; touch /tmp/go3; wait $!
bind; waitdev misalign
/xen-front-guest eio 1
unbind
bind; waitdev closing
/xen-front-guest hold 1 /tmp/go5 > /tmp/h5 2>&1 &
waitfile /tmp/h5 XG-HOLD
n=0; while [ -e /dev/vcma ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done
touch /tmp/go5; wait $!; cat /tmp/h5
echo VCMA-WAIT-LAST
n=0; while ! grep -q Closed /sys/bus/xen/devices/vcma-0/state 2>/dev/null && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done
sleep 1
echo VCMA-DONE
"""

DOM0 = r"""
set -u
st() { xenstore-read $F/state 2>/dev/null; }
want() { xen_poll ${2:-120} sh -c "[ \"\$(xenstore-read $F/state 2>/dev/null)\" = $1 ]" || { echo "frontend state $(st), wanted $1"; return 1; }; }
xen_create g1 128 512 || exit 1
D=$(xen_domid g1)
B=/local/domain/0/backend/vcma/$D/0
F=/local/domain/$D/device/vcma/0
xenstore-write $B/frontend $F $B/frontend-id $D $B/online 1 $B/state 1
xenstore-chmod -r /local/domain/0/backend/vcma/$D n0 r$D
xenstore-write $F/backend $B $F/backend-id 0 $F/state 1
xenstore-chmod -r /local/domain/$D/device/vcma n$D r0
base=$(xen_mem_mib g1); echo "MEM-BASE $base"
echo "== good"; vcma-fake-backend $D 4 good 300
echo "MEM-DETACHED $(xen_mem_mib g1)"
n=0; while [ "$(xen_mem_mib g1)" -gt "$base" ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done
echo "MEM-BACK $(xen_mem_mib g1)"
want 1 || exit 3
echo "== foreign"; vcma-fake-backend $D 4 foreign 120
want 1 || exit 4
echo "== twice"; vcma-fake-backend $D 4 twice 120
want 1 || exit 5
echo "== misalign"; vcma-fake-backend $D 4 misalign 120
want 1 || exit 6
echo "== closing"; vcma-fake-backend $D 4 good 30
want 6 || exit 7
echo "== two pages"; vcma-fake-backend $D 2 good 60
echo "FRONTEND-STATE $(st)"
echo "FRONTEND-ERROR $(xenstore-read /local/domain/$D/error/device/vcma/0/error 2>&1)"
xen_wait_console g1 VCMA-DONE 120
"""

run = xenvm.XenRun(env, tmpdir("vcma-xenfront-"))
run.domU_image("g1", DOMU, files=[(parts["vcma.ko"], "/vcma.ko"), (parts["vcma_kapi_test.ko"], "/vcma_kapi_test.ko"),
                                  (guest, "/xen-front-guest")])
run.add_dom0_file(backend, "/usr/bin/vcma-fake-backend")
res = run.boot(DOM0, timeout=900)
if res.status != "exited" or res.rc != 0:
    fail(res.explain())
log("Xen, dom0 and the domU ran the scenarios in %.0f s" % res.seconds)
out = res.output
console = res.logs.get("domU:g1", "")


def section(text, start, end):
    """The part of text from the line holding start to the one holding end."""
    i = text.find(start)
    j = text.find(end, i + 1) if i >= 0 else -1
    return text[i:j if j >= 0 else len(text)] if i >= 0 else ""


def phase(name, nxt):
    return section(out, "== " + name, "== " + nxt if nxt else "FRONTEND-STATE"), \
        section(console, "VCMA-UP " + name, "VCMA-UP " + nxt if nxt else "VCMA-DONE")


check("VCMA-INSMOD 0" in console, "vcma.ko loads in a PV domU and waits for its backend")
back, guest_out = phase("good", "foreign")
check(re.search(r"BACK HELLO features 0x3", back), "the frontend connected: area granted, HELLO, EVENTS|NAMED_POOL")
allocs = {int(h, 16): int(m, 16) for h, m in re.findall(r"BACK ALLOC handle (0x[0-9a-f]+) mfn (0x[0-9a-f]+)", back)}
hashes = {int(h, 16): f for h, f in re.findall(r"BACK FREE handle (0x[0-9a-f]+) mfn \S+ fnv (0x[0-9a-f]+)", back)}
regions = re.findall(r"XG-REGION handle=(0x[0-9a-f]+) size=(\d+) dma=(0x[0-9a-f]+) offset=(0x[0-9a-f]+) "
                     r"fnv=(0x[0-9a-f]+) expect=(0x[0-9a-f]+)", guest_out)
for h, size, dma, offset, fnv, expect in regions[:2]:
    h = int(h, 16)
    check(fnv == expect and hashes.get(h) == fnv and int(dma, 16) == int(offset, 16) == allocs.get(h, -1) << 12,
          "%d MiB region %#x: written through its dma-buf mapping and re-read; dom0 reads the same bytes from "
          "machine frames %#x.. (dma = offset = their address)" % (int(size) >> 20, h, allocs.get(h, -1)))
check(len(regions) == 3, "/dev/vcma: 1 and 4 MiB allocated and freed, 2 MiB held (%d regions)" % len(regions))
m = re.search(r"vcma_kapi_test: handle=(0x[0-9a-f]+) size=\d+ dma=(0x[0-9a-f]+) fnv=(0x[0-9a-f]+)", console)
check(m and int(m.group(2), 16) == allocs.get(int(m.group(1), 16), -1) << 12 and hashes.get(int(m.group(1), 16))
      == m.group(3), "in-kernel API: vcma_region_alloc's region written through its vmap is what dom0 reads")
check("XG-AFTER mapping=sigbus" in guest_out and "pool_query=%d" % ENODEV in guest_out
      and "alloc=%d" % ENODEV in guest_out,
      "unbound under a mapped region: the mapping is revoked (SIGBUS), calls fail with ENODEV")
check("freed while the guest holds it" in back, "and the backend detached, freeing the held region at Xen")
base, detached, back_to = (int(re.search(r"%s (\d+)" % k, out).group(1)) for k in ("MEM-BASE", "MEM-DETACHED",
                                                                                    "MEM-BACK"))
check(detached > base and back_to == base,
      "the domain kept the held region's frames while mapped (%d MiB, base %d) and gave them back when the holder "
      "let go (%d MiB)" % (detached, base, back_to))

back, guest_out = phase("foreign", "twice")
check("XG alloc errno=%d" % EIO in guest_out and "FREE of unknown handle" in back
      and re.search(r"is not this domain's: Xen refused its M2P entry", console),
      "an ALLOC answered with frames that are not the domain's fails with EIO, and the handle is FREEd")
check(re.search(r"XG-REGION .* fnv=(\S+) expect=\1", guest_out), "and the ring works on: a region allocated after it")
back, guest_out = phase("twice", "misalign")
check("XG alloc errno=%d" % EIO in guest_out and "already a page of this domain" in console,
      "an ALLOC answered with a live region's frames fails with EIO")
back, guest_out = phase("misalign", "closing")
check("XG alloc errno=%d" % EIO in guest_out and "FREE handle" in back
      and "malformed ALLOC answer" in console,
      "an ALLOC answered off its alignment fails with EIO, and the handle is FREEd")
back, guest_out = phase("closing", "two pages")
check("XG-AFTER mapping=sigbus" in guest_out and "pool_query=%d" % ECONNRESET in guest_out
      and "alloc=%d" % ECONNRESET in guest_out and "backend closed the connection" in console,
      "the backend going away under a mapped region: SIGBUS, calls fail with ECONNRESET")
check("FRONTEND-STATE 6" in out and "attaching to vcmad's ring" in out
      and "fails the checks of PROTOCOL.md 2.5" in console,
      "an area too small for the layout: refused (2.5), the reason in xenstore, the frontend Closed")
check("VCMA-DONE" in console, "the domU ran every scenario")
bad = res.kernel_problems()
check(not bad, "no WARNING, BUG or Oops in Xen's, dom0's or the domU's log%s"
      % "".join("\n  %s: %s" % b for b in bad[:20]))
