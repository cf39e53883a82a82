#!/usr/bin/env python3
"""Two overlapping PINs from one VMM (a raw VMM written here, answering PAUSE and
REMAP honestly): the pages both name are moved once, by whichever job gets to them
first, never again from the frames they left. Checked through machine memory: every
pinned page still holds what the VMM wrote into it before the PINs, sits on ordinary
memory, and when the VMM leaves, ordinary memory is exactly as free as before."""
import mmap
import os
import struct
import sys

import proto
from proto import SimMsg
from vcmatest import Vcmad, check, ctl, fail, set_tools, sim_attach_raw, wait_until

VCMAD, VCMACTL = sys.argv[1], sys.argv[2]
set_tools(vcmactl=VCMACTL)
PAGE = proto.PAGE

d = Vcmad(VCMAD, "[daemon]\nlend_share = 100%\nrelend_idle_ms = 100000\n[machine]\nmemory = 256M\n"
          "[limits]\nmax_ram_per_guest = 64M\n[pool main]\nsize = 64M\n")


def stats():
    return ctl(d, "stats")


before = stats()["daemon"]["ordinary_free_frames"]
s, rsp, fds = sim_attach_raw(d.sock, "pinner", role=proto.SimRole.VMM, ram_bytes=4 << 20)
if len(fds) != 4:
    fail("attached as a VMM with %d fds, not 4" % len(fds))
frames = rsp.ram_frames
machine = mmap.mmap(fds[proto.SIM_FD_MACHINE], rsp.machine_bytes)
p2m, got = {}, 0
while got < rsp.nruns:
    runs = proto.parse_p2m(s.recv(proto.SIM_P2M.size + proto.SIM_P2M_RUNS * proto.SIM_RUN.size))
    for g, mf, c in runs:
        for k in range(c):
            p2m[g + k] = mf + k
    got += len(runs)
pool = stats()["pools"][0]
check(pool["frames"]["lent_used"] == frames, "all %d pages of the VMM's RAM are on pool frames" % frames)


def pattern(gfn):
    return struct.pack("<QQ", 0x5049_4e00_0000_0000 | gfn, gfn * 0x9e3779b97f4a7c15 & (2**64 - 1)) * (PAGE // 16)


for gfn in range(24):
    machine[p2m[gfn] * PAGE:(p2m[gfn] + 1) * PAGE] = pattern(gfn)


def send(t, seq, status=0, runs=()):
    s.send(proto.sim_msg(t, seq=seq, status=status, runs=runs))


# PIN [0,16) and, before it is answered, PIN [8,24): gfns 8..15 are in both jobs
send(SimMsg.PIN, 1, runs=[(0, 0, 16)])
send(SimMsg.PIN, 2, runs=[(8, 0, 16)])
want, remaps = {1, 2}, 0
s.settimeout(10)
while want:
    h, runs = proto.parse_sim_msg(s.recv(proto.SIM_MSG.size + proto.SIM_MSG_RUNS * proto.SIM_RUN.size))
    if h.type == SimMsg.PAUSE:
        send(SimMsg.PAUSED, h.seq)
    elif h.type == SimMsg.REMAP:
        for g, mf, c in runs:
            for k in range(c):
                remaps += 1
                p2m[g + k] = mf + k
        send(SimMsg.REMAPPED, h.seq)
    elif h.type == SimMsg.PINNED:
        check(h.status == 0, "PIN %d answered OK" % h.seq)
        want.discard(h.seq)
check(remaps == 24, "each of the 24 pinned pages was remapped exactly once (%d remaps)" % remaps)
bad = [g for g in range(24) if machine[p2m[g] * PAGE:(p2m[g] + 1) * PAGE] != pattern(g)]
check(not bad, "every pinned page kept its contents through the moves (bad gfns: %s)" % bad)
base = stats()["pools"][0]
check(base["frames"]["lent_used"] == frames - 24, "the 24 pinned pages left the pool, the rest stayed")
machine.close()
s.close()
for fd in fds:
    try:
        os.close(fd)
    except OSError:
        pass
# the VMM's detach gives its ordinary memory back
after = wait_until(lambda free: free == before, 10, "the VMM's ordinary memory back (%d frames free before)" % before,
                   probe=lambda: stats()["daemon"]["ordinary_free_frames"])
check(after == before, "with the VMM gone, ordinary memory is as free as before (%d, %d)" % (before, after))
text = d.stop()
check("protocol violation" not in text, "no violation logged")
print("PASS")
