#!/usr/bin/env python3
"""Two overlapping PINs from one VMM (a raw VMM written here, answering PAUSE and
REMAP honestly): the pages both name are moved once, by whichever job gets to them
first, never again from the frames they left. Checked through machine memory: every
pinned page still holds what the VMM wrote into it before the PINs, sits on ordinary
memory, and when the VMM leaves, ordinary memory is exactly as free as before."""
import json
import mmap
import socket
import struct
import subprocess
import sys
import time

from vcmatest import Vcmad, check, fail

VCMAD, VCMACTL = sys.argv[1], sys.argv[2]
MAGIC, PAGE = 0x4d495356, 4096
PAUSE, REMAP, RESUME, PINNED = 10, 11, 12, 14
PAUSED, REMAPPED, PIN = 20, 21, 24

d = Vcmad(VCMAD, "[daemon]\nlend_share = 100%\nrelend_idle_ms = 100000\n[machine]\nmemory = 256M\n"
          "[limits]\nmax_ram_per_guest = 64M\n[pool main]\nsize = 64M\n")
CTL = d.sock.replace("vcmad.sock", "vcmad-ctl.sock")


def stats():
    r = subprocess.run([VCMACTL, "--socket", CTL, "--json", "stats"], capture_output=True, text=True, timeout=30)
    return json.loads(r.stdout)


before = stats()["daemon"]["ordinary_free_frames"]
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(d.sock)
s.send(struct.pack("<IHHIIQ32s32s", MAGIC, 1, 1, 2, 0, 4 << 20, b"pinner", b""))
msg, fds, _, _ = socket.recv_fds(s, 256, 8)
_, _, _, st, gid, shm, frames, mbytes, wgpa, nruns, nfds = struct.unpack("<IHHiIQQQQII", msg)
if st != 0 or len(fds) != 4:
    fail("attach refused: status %d, %d fds" % (st, len(fds)))
machine = mmap.mmap(fds[3], mbytes)
p2m, got = {}, 0
while got < nruns:
    m = s.recv(8192)
    n = struct.unpack_from("<I", m, 8)[0]
    for i in range(n):
        g, mf, c = struct.unpack_from("<QQQ", m, 16 + 24 * i)
        for k in range(c):
            p2m[g + k] = mf + k
    got += n
pool = stats()["pools"][0]
check(pool["frames"]["lent_used"] == frames, "all %d pages of the VMM's RAM are on pool frames" % frames)


def pattern(gfn):
    return struct.pack("<QQ", 0x5049_4e00_0000_0000 | gfn, gfn * 0x9e3779b97f4a7c15 & (2**64 - 1)) * (PAGE // 16)


for gfn in range(24):
    machine[p2m[gfn] * PAGE:(p2m[gfn] + 1) * PAGE] = pattern(gfn)


def send(t, seq, status, runs):
    s.send(struct.pack("<IHHIiII", MAGIC, 1, t, seq, status, len(runs), 0)
           + b"".join(struct.pack("<QQQ", *r) for r in runs))


# PIN [0,16) and, before it is answered, PIN [8,24): gfns 8..15 are in both jobs
send(PIN, 1, 0, [(0, 0, 16)])
send(PIN, 2, 0, [(8, 0, 16)])
want, remaps = {1, 2}, 0
s.settimeout(10)
while want:
    m = s.recv(8192)
    t, seq, status, cnt = struct.unpack_from("<HIiI", m, 6)
    if t == PAUSE:
        send(PAUSED, seq, 0, [])
    elif t == REMAP:
        for i in range(cnt):
            g, mf, c = struct.unpack_from("<QQQ", m, 24 + 24 * i)
            for k in range(c):
                remaps += 1
                p2m[g + k] = mf + k
        send(REMAPPED, seq, 0, [])
    elif t == PINNED:
        check(status == 0, "PIN %d answered OK" % seq)
        want.discard(seq)
check(remaps == 24, "each of the 24 pinned pages was remapped exactly once (%d remaps)" % remaps)
bad = [g for g in range(24) if machine[p2m[g] * PAGE:(p2m[g] + 1) * PAGE] != pattern(g)]
check(not bad, "every pinned page kept its contents through the moves (bad gfns: %s)" % bad)
base = stats()["pools"][0]
check(base["frames"]["lent_used"] == frames - 24, "the 24 pinned pages left the pool, the rest stayed")
machine.close()
s.close()
for fd in fds:
    try:
        __import__("os").close(fd)
    except OSError:
        pass
time.sleep(0.5)
after = stats()["daemon"]["ordinary_free_frames"]
check(after == before, "with the VMM gone, ordinary memory is as free as before (%d, %d)" % (before, after))
log = d.stop()
check("protocol violation" not in log, "no violation logged")
print("PASS")
