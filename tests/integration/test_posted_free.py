#!/usr/bin/env python3
"""libvcma's posted FREEs against a real vcmad (posted_free.c): a FREE posted then an
ALLOC that needs the same memory succeeds, stray and double frees fail at once,
200 frees back to back wait for room in an 8-slot ring without overflowing it, and
vcma_detach() returns only after its FREEs were answered; vcmad sees no violation.

Then PROTOCOL.md §4.9, FREEs published without a kick while vcmad's req_poll window is
open: another guest's ALLOC right after such a FREE finds its memory (vcmad takes the
FREE first), a FREE nobody follows is taken when the window ends, and a guest doing
alloc+free pairs kicks once per pair instead of twice."""
import os
import subprocess
import sys
import time

from vcmatest import Vcmad, check, ctl, log, set_tools

VCMAD, POSTED, VCMACTL = sys.argv[1], sys.argv[2], sys.argv[3]
set_tools(vcmactl=VCMACTL)

POOLS = """
[limits]
ring_slots = 8
[machine]
memory = 256M
[pool tight]
size = 4M
[pool many]
size = 64M
"""

d = Vcmad(VCMAD, POOLS)
p = subprocess.run([POSTED, d.sock], capture_output=True, text=True, timeout=120)
sys.stderr.write(p.stderr)
check(p.returncode == 0, "posted_free exited %d" % p.returncode)
log_text = d.stop()
check("violation" not in log_text, "vcmad saw no protocol violation" + ("" if "violation" not in log_text
                                                                     else ":\n" + log_text))
print("ok: posted frees against vcmad")

# ---- §4.9: the window is 1 s here, so a loaded host cannot close it mid-test
d = Vcmad(VCMAD, "[daemon]\nlazy_free_ms = 1000\n" + POOLS)


def daemon_stats():
    return ctl(d, "stats")["daemon"]


def guest(name):
    for g in ctl(d, "guests")["guests"]:
        if g["name"] == name:
            return g
    return None


before = daemon_stats()
p = subprocess.run([POSTED, d.sock, "pingpong"], capture_output=True, text=True, timeout=120)
sys.stderr.write(p.stderr)
check(p.returncode == 0, "400 ALLOCs of the whole pool, each right after the other guest's unkicked FREE, "
      "all served (posted_free pingpong exited %d)" % p.returncode)
early = daemon_stats()["lazy_takes_early"] - before["lazy_takes_early"]
check(early >= 350, "vcmad took the other guest's FREE before the ALLOC's turn (%d early takes for 399)" % early)


def kicks_for(npairs, env):
    """Kicks vcmad counted for npairs alloc+free pairs of one guest."""
    q = subprocess.Popen([POSTED, d.sock, "pairs", str(npairs)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=dict(os.environ, **env))
    line = q.stdout.readline()
    g = guest("lazy-a")
    q.stdin.close()
    q.wait(timeout=60)
    check(q.returncode == 0 and line.strip() == "done" and g, "%d alloc+free pairs (%s)" % (npairs, env))
    return g["kicks"], g["frees"]


N = 2000
lazy_kicks, frees = kicks_for(N, {"VCMA_LAZY_FREE": "1"})
kicked, _ = kicks_for(N, {"VCMA_LAZY_FREE": "0"})
log("kicks for %d alloc+free pairs: %d with §4.9, %d with every posted FREE kicked" % (N, lazy_kicks, kicked))
check(frees == N, "vcmad took all %d FREEs published without a kick (%d)" % (N, frees))
# the ALLOCs' kicks (HELLO and QUERYs: a few more); with VCMA_LAZY_FREE=0 the FREEs' kicks
# add to them, less what coalesces in the eventfd while vcmad is busy (not asserted)
check(lazy_kicks <= N + 4, "no kick for FREEs while the window was open: %d kicks for %d pairs" % (lazy_kicks, N))

# a FREE nobody follows: nothing but the window's end takes it
before = daemon_stats()
q = subprocess.Popen([POSTED, d.sock, "linger"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
check(q.stdout.readline().strip() == "freed", "linger: region allocated and its FREE posted")
time.sleep(1.5)  # the window (lazy_free_ms = 1000) must run out: that is what is tested
after = daemon_stats()
g = guest("lazy-a")
check(after["lazy_takes_closed"] == before["lazy_takes_closed"] + 1 and
      after["lazy_takes_early"] == before["lazy_takes_early"],
      "the window's end took the FREE (closed takes %d -> %d, early %d -> %d)" %
      (before["lazy_takes_closed"], after["lazy_takes_closed"], before["lazy_takes_early"],
       after["lazy_takes_early"]))
check(g and g["regions"] == 0 and g["frees"] == 1, "the lingering guest holds no region (%s)" % g)
q.stdin.close()
q.wait(timeout=30)
check(q.returncode == 0, "linger exited %d" % q.returncode)
log_text = d.stop()
check("violation" not in log_text, "no protocol violation with §4.9")

# lazy_free_ms = 0: the feature is not offered, so libvcma kicks for every FREE
d = Vcmad(VCMAD, "[daemon]\nlazy_free_ms = 0\n" + POOLS)
off_kicks, frees = kicks_for(N, {"VCMA_LAZY_FREE": "1"})
st = daemon_stats()
# (a FREE's kick and the next ALLOC's coalesce when vcmad is slow to wake: the count is
# logged, not asserted; libvcma's unit test proves the kick per FREE against a fake host)
log("lazy_free_ms = 0: %d kicks for %d pairs" % (off_kicks, N))
check(frees == N, "lazy_free_ms = 0: all %d FREEs taken" % N)
check(st["lazy_takes_early"] == 0 and st["lazy_takes_closed"] == 0, "lazy_free_ms = 0: no window ever opened")
d.stop()
