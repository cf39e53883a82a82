#!/usr/bin/env python3
"""bench-reclaim: how long a guest that dies holds on to its memory (issue 16: reclaimed
within 100 ms). Measured from outside vcmad: from just before SIGKILL to the first
answer of vcmad's control socket (`pools`, polled every POLL_MS on a raw connection, as
vcmactl --json pools would) showing pool main's frame counts back to what they were
before the guest came: every region freed, every lent frame FREE. Kinds, N deaths each,
one vcmad for all:

  libvcma client   hold_regions holding 8 x 8 MiB regions, killed
  simvm            vcma-simvm with 256 MiB of RAM, all of it lent pool frames, a
                   checksumming vCPU writing it, its driver holding up to 8 x 8 MiB regions
                   (allocating and freeing one every 20 ms), killed
  QEMU stand-in    tests/integration/ivshmem_peer.py: QEMU's ivshmem-doorbell side of the wire
                   and a driver's ring use, 8 x 8 MiB regions written through BAR2, killed
                   (no real QEMU: its own teardown is not in this row)

Baseline measured in the same run (the observation floor): vcmactl's own 8 MiB region
freed (the `free` sent on a second connection), from the send to the same poll seeing
the frames back. Beside each row: SIGKILL to the process reaped (the kernel's share:
the socket hangs up only once the process's memory is torn down), vcmad's own count
from the loop turn that saw the hang-up to the frames free (stats reclaim_last_ns), and
the time until the scrubber has zeroed them all (stats scrub_pending_frames 0; polled
after the reclaim, so it is an upper bound).

usage: bench-reclaim.py BUILD_DIR [--vcmad PATH] [--count N] [--quick]
  BUILD_DIR holds hv/vcmad, tools/vcmactl, tools/vcma-simvm and
  tests/integration/hold_regions (a release build: scripts/run-bench.sh).
  --vcmad runs another vcmad binary (an older build: the columns it cannot give are -).
"""
import argparse
import os
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from vcmatest import CtlConn, Vcmad, fail, set_tools, simvm, wait_until  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("build")
ap.add_argument("--vcmad")
ap.add_argument("--count", type=int, default=50)
ap.add_argument("--quick", action="store_true")
ap.add_argument("--poll-ms", type=float, default=1.0)
ap.add_argument("--samples", action="store_true", help="print every death's times too")
args = ap.parse_args()
N = 5 if args.quick else args.count
B = args.build
VCMAD = args.vcmad or os.path.join(B, "hv", "vcmad")
HOLD = os.path.join(B, "tests", "integration", "hold_regions")
set_tools(vcmactl=os.path.join(B, "tools", "vcmactl"), simvm=os.path.join(B, "tools", "vcma-simvm"))
POLL_MS = args.poll_ms
polls = [0, 0.0]  # answers, seconds from one poll's start to the next's
MiB = 1 << 20

CONFIG = """
[daemon]
max_guests = 16
lend_share = 100%
[machine]
memory = 2G
[limits]
max_ram_per_guest = 512M
[pool main]
size = 512M
[guest q0]
backend = qemu
"""

d = Vcmad(VCMAD, CONFIG)
poll = CtlConn(d, timeout=30)
seq = [0]


def ask(conn, cmd, **kw):
    seq[0] += 1
    extra = "".join(',"%s":%s' % (k, v if isinstance(v, int) else '"%s"' % v) for k, v in kw.items())
    r = conn.ask(b'{"version":1,"id":%d,"cmd":"%s"%s}' % (seq[0], cmd.encode(), extra.encode()))
    if not r or not r.get("ok"):
        fail("%s: %r" % (cmd, r))
    return r["result"]


def frames():
    return ask(poll, "pools")["pools"][0]["frames"]


def daemon_stats():
    return ask(poll, "stats")["daemon"]


def until_frames(target):
    """Poll until pool main's frames equal target; returns when they were seen so."""
    deadline = time.monotonic() + 30
    last = None
    while True:
        start = time.monotonic()
        if last is not None:
            polls[0] += 1
            polls[1] += start - last
        last = start
        f = frames()
        now = time.monotonic()
        if f == target:
            return now
        if now > deadline:
            fail("frames not back in 30 s: %s, want %s" % (f, target))
        time.sleep(POLL_MS / 1000)


def kill(p):
    """SIGKILL p; returns (when it was sent, a thread that notes when p is reaped in
    .reaped): a waiter of its own, so the poll's pace does not blur it."""
    w = threading.Thread(target=lambda: (p.wait(), setattr(w, "reaped", time.monotonic())))
    w.start()
    t0 = time.monotonic()
    os.kill(p.pid, signal.SIGKILL)
    return t0, w


def after_reclaim(t0, rows):
    """vcmad's own reclaim time and the time until the scrubber is done."""
    st = daemon_stats()
    inside = st.get("reclaim_last_ns")
    while "scrub_pending_frames" in st and st["scrub_pending_frames"]:
        time.sleep(POLL_MS / 1000)
        st = daemon_stats()
    rows["zeroed"].append(time.monotonic() - t0 if "scrub_pending_frames" in st else None)
    rows["inside"].append(inside / 1e9 if inside is not None else None)


def new_rows():
    return {"reclaimed": [], "reaped": [], "inside": [], "zeroed": [], "held": []}


# ---- baseline: vcmactl's own 8 MiB region freed, seen by the same poll
base = new_rows()
other = CtlConn(d, timeout=30)
empty = frames()
for i in range(N):
    h = ask(other, "alloc", bytes=8 * MiB, pool="main")["handle"]
    held = frames()
    seq[0] += 1
    t0 = time.monotonic()
    other.send(b'{"version":1,"id":%d,"cmd":"free","handle":"%s"}\n' % (seq[0], h.encode()))
    t1 = until_frames(empty)
    if not other.line().get("ok"):
        fail("free %s refused" % h)
    base["reclaimed"].append(t1 - t0)
    base["held"].append(held["region"] // 2048)



def holder(name):
    p = subprocess.Popen([HOLD, d.sock, name, "main", "8M", "8"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    for line in p.stdout:
        if line.strip() == "ready":
            return p
    fail("hold_regions exited %s before holding its regions" % p.wait())


# ---- baseline: a libvcma client frees its 8 x 8 MiB and exits, as a live guest does
normal = new_rows()
for i in range(N):
    before = frames()
    p = holder("normal%d" % i)
    normal["held"].append((frames()["region"] - before["region"]) // 2048)
    t0 = time.monotonic()
    p.stdin.write("free\n")
    p.stdin.flush()
    t1 = until_frames(before)
    if p.wait() != 0:
        fail("hold_regions could not free its regions")
    normal["reclaimed"].append(t1 - t0)

# ---- a libvcma client holding 8 x 8 MiB, killed
client = new_rows()
for i in range(N):
    before = frames()
    p = holder("client%d" % i)
    client["held"].append((frames()["region"] - before["region"]) // 2048)
    t0, w = kill(p)
    t1 = until_frames(before)
    w.join()
    client["reclaimed"].append(t1 - t0)
    client["reaped"].append(w.reaped - t0)
    after_reclaim(t0, client)

# ---- a simvm on 256 MiB of lent RAM with up to 8 x 8 MiB regions, killed
vmrows = new_rows()
for i in range(N):
    before = frames()
    p = simvm(d, "vm%d" % i, "--ram", "256M", "--vcpus", "1", "--alloc", "8M", "--max-regions", "8",
              "--interval-ms", "20", "--duration", "600", "--pool", "main", as_json=False,
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda f: f["lent_used"] + f["lent_free"] - before["lent_used"] - before["lent_free"] == 65536
               and f["region"] - before["region"] >= 7 * 2048, 60, "vm%d's RAM lent and regions held" % i,
               probe=frames)
    vmrows["held"].append((frames()["region"] - before["region"]) // 2048)
    t0, w = kill(p)
    t1 = until_frames(before)
    w.join()
    vmrows["reclaimed"].append(t1 - t0)
    vmrows["reaped"].append(w.reaped - t0)
    after_reclaim(t0, vmrows)

# ---- a QEMU stand-in on the ivshmem link holding 8 x 8 MiB it wrote, killed
PEER = os.path.join(ROOT, "tests", "integration", "ivshmem_peer.py")
qrows = new_rows()
for i in range(N):
    before = frames()
    p = subprocess.Popen([sys.executable, PEER, os.path.join(d.rundir, "q0.ivshmem"), "main", "8", "8"],
                         stdout=subprocess.PIPE, text=True)
    if p.stdout.readline().strip() != "ready":
        fail("the QEMU stand-in exited %s before holding its regions" % p.wait())
    qrows["held"].append((frames()["region"] - before["region"]) // 2048)
    t0, w = kill(p)
    t1 = until_frames(before)
    w.join()
    qrows["reclaimed"].append(t1 - t0)
    qrows["reaped"].append(w.reaped - t0)
    after_reclaim(t0, qrows)
    # the link takes a new QEMU once the old one is detached
    wait_until(lambda g: not any(x["name"] == "q0" for x in g), 10, "q0 detached",
               probe=lambda: ask(poll, "guests")["guests"])

poll.close()
other.close()
d.stop()


def pct(xs, q):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    return xs[min(len(xs) - 1, max(0, int(round(q * len(xs) + 0.5)) - 1))]


def ms(x):
    return "%8.2f" % (x * 1e3) if x is not None else "%8s" % "-"


print("death to reclaimed, %d of each (ms; SIGKILL, or the FREE sent, to vcmad's `pools` answer showing the frames "
      "back, polled every %g ms: one poll every %.2f ms measured)" % (N, POLL_MS, polls[1] / max(1, polls[0]) * 1e3))
print("%-44s %8s %8s %8s | %8s %8s %8s %8s" % ("", "p50", "p99", "max", "reaped", "vcmad", "vcmad", "zeroed"))
print("%-44s %8s %8s %8s | %8s %8s %8s %8s" % ("", "", "", "", "p50", "p50", "max", "p50"))
for name, r in (("floor: vcmactl FREE of 8 MiB, seen", base),
                ("floor: libvcma client FREEs 8 x 8 MiB, exits", normal),
                ("libvcma client, 8 x 8 MiB regions", client),
                ("simvm, 256 MiB lent RAM + %.1f x 8 MiB avg" % (sum(vmrows["held"]) / len(vmrows["held"])), vmrows),
                ("QEMU stand-in (ivshmem), 8 x 8 MiB written", qrows)):
    x = r["reclaimed"]
    print("%-44s %s %s %s | %s %s %s %s" % (name, ms(pct(x, 0.5)), ms(pct(x, 0.99)), ms(max(x)),
                                          ms(pct(r["reaped"], 0.5)), ms(pct(r["inside"], 0.5)),
                                          ms(pct(r["inside"], 1.0)), ms(pct(r["zeroed"], 0.5))))
if args.samples:
    for name, r in (("client", client), ("simvm", vmrows), ("qemu", qrows)):
        for k in range(len(r["reclaimed"])):
            print("%s %2d: reclaimed %s reaped %s vcmad %s zeroed %s held %d" % (
                name, k, ms(r["reclaimed"][k]), ms(r["reaped"][k]), ms(r["inside"][k]), ms(r["zeroed"][k]),
                r["held"][k]))
worst = max(max(client["reclaimed"]), max(vmrows["reclaimed"]), max(qrows["reclaimed"]))
print("issue 16 asks for 100 ms: the slowest death here took %.1f ms (%s)"
      % (worst * 1e3, "met" if worst < 0.1 else "NOT met"))
