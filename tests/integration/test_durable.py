#!/usr/bin/env python3
"""Ownership recorded in the state directory (vcmad(8) STATE, hv/durable.h), with real
processes: a simulated VM lending pool frames and a guest holding regions.

  recorded     while vcmad runs, `vcmactl state verify` finds every region a guest was
               answered, the guests, and the VM's p2m, with no violation; `state show`
               lists exactly the handles the guest holds, the VM's every page, and a
               QEMU's identity (its pid and start time, what finds it after a restart)
  crash        after kill -9 the directory still holds exactly that: nothing answered
               was lost
  one vcmad    a second vcmad on the same state directory refuses to start
  restart      a restarted vcmad moves the previous run's state aside whole (it still
               verifies) and starts afresh
  full disk    the state directory on a small tmpfs that fills up: the allocations that
               cannot be recorded are answered NO_SPACE, vcmad keeps serving frees, what
               was recorded before is intact, and once there is room again allocations
               are served (the whole state written anew)"""
import json
import mmap
import os
import subprocess
import sys
import tempfile

import proto
from vcmatest import (RingClient, Vcmad, check, ctl, fail, lent, frames, log, partial, set_tools, sim_attach_raw, simvm,
                      wait_until)

VCMAD, SIMVM, VCMACTL = sys.argv[1], sys.argv[2], sys.argv[3]
set_tools(vcmactl=VCMACTL, simvm=SIMVM)

CONFIG = """
[daemon]
lend_share = 100%
relend_idle_ms = 50
[machine]
memory = 256M
[pool main]
size = 64M
[guest q0]
backend = qemu
"""
MiB = 1 << 20


PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ivshmem_peer.py")


def show(state_dir):
    r = subprocess.run([VCMACTL, "--json", "state", "show", state_dir], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        fail("state show %s: exit %d: %s" % (state_dir, r.returncode, r.stderr))
    return json.loads(r.stdout)


def start_time(pid):
    """field 22 of /proc/PID/stat, as vcmad records it"""
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def verify(state_dir):
    r = subprocess.run([VCMACTL, "--json", "state", "verify", state_dir], capture_output=True, text=True, timeout=60)
    try:
        return r.returncode, json.loads(r.stdout)
    except ValueError:
        fail("state verify %s: exit %d, not JSON: %r %r" % (state_dir, r.returncode, r.stdout, r.stderr))


class Guest:
    """A guest driver over the raw ring: allocations and frees by hand."""

    def __init__(self, d, name):
        self.s, rsp, self.fds = sim_attach_raw(d.sock, name)
        self.m = mmap.mmap(self.fds[proto.SIM_FD_SHM], rsp.shm_size)
        self.ring = RingClient(self.m, self.fds[proto.SIM_FD_KICK], self.fds[proto.SIM_FD_IRQ])
        check(self.ring.hello().status == proto.Status.OK, "%s: HELLO" % name)

    def alloc(self, size):
        return self.ring.call(proto.Op.ALLOC, length=size)

    def free(self, handle):
        return self.ring.call(proto.Op.FREE, handle=handle).status

    def close(self):
        self.m.close()
        for fd in self.fds:
            os.close(fd)
        self.s.close()


d = Vcmad(VCMAD, CONFIG)
state = d.state_dir
vm = simvm(d, "vm1", "--ram", "16M", "--alloc", "none", "--duration", "600", "--vcpus", "1")
wait_until(lambda f: lent(f) == 4096, 30, "the VM's 16 MiB lent from the pool", probe=lambda: frames(d))
g = Guest(d, "g1")
handles = []
for i in range(6):
    r = g.alloc((i % 3 + 1) * MiB)
    check(r.status == proto.Status.OK, "g1: ALLOC %d MiB answered (handle %#x)" % (i % 3 + 1, r.handle))
    handles.append(r.handle)
check(g.free(handles.pop(0)) == proto.Status.OK, "g1: one region freed")
q = subprocess.Popen([sys.executable, PEER, os.path.join(d.rundir, "q0.ivshmem"), "main", "1", "1"],
                     stdout=subprocess.PIPE, text=True)
check(q.stdout.readline().strip() == "ready", "q0: a QEMU stand-in holds a 1 MiB region")

rc, v = verify(state)
check(rc == 0 and v["ok"] and v["violations"] == 0, "recorded: verify finds no violation while vcmad runs (%s)" % v)
check(v["records"]["regions"] == 6 and v["records"]["guests"] == 3 and v["records"]["pools"] == 1,
      "recorded: the 5 regions g1 holds and q0's, 3 guests (vm1, g1, q0), 1 pool: %s" % v["records"])
check(v["records"]["p2m_runs"] >= 1, "recorded: vm1's p2m (%d run(s))" % v["records"]["p2m_runs"])
sh = show(state)
names = {x["name"]: x for x in sh["guests"]}
g1_id = names["g1"]["id"] if "g1" in names else None
check(sorted(r["handle"] for r in sh["regions"] if r["guest"] == g1_id) == sorted(handles),
      "recorded: state show lists exactly the handles g1 holds (%s)" % [hex(h) for h in sorted(handles)])
check([x["frames"] for x in sh["vms"]] == [4096], "recorded: vm1's 4096 pages, each backed once (%s)" % sh["vms"])
check(names.get("q0", {}).get("link") == "qemu" and names["q0"]["pid"] == q.pid
      and names["q0"]["start_time"] == start_time(q.pid),
      "recorded: q0 as a QEMU guest with its pid %d and start time (%s)" % (q.pid, names.get("q0")))

# one vcmad per state directory
other = tempfile.mkdtemp(prefix="vcma-test-other-")
with open(os.path.join(other, "vcmad.conf"), "w") as f:
    f.write(CONFIG)
r = subprocess.run([VCMAD, "-c", os.path.join(other, "vcmad.conf"), "-r", os.path.join(other, "run"), "-s", state],
                   capture_output=True, text=True, timeout=30)
check(r.returncode != 0 and "is in use by another vcmad, pid %d" % d.proc.pid in r.stdout + r.stderr,
      "one vcmad: a second one on the same state directory refuses to start, naming the first")

# crash: every answered region is still recorded
d.kill()
vm.kill()
vm.wait()
q.kill()
q.wait()
g.close()
rc, v2 = verify(state)
check(rc == 0 and v2["ok"] and v2["records"] == v["records"],
      "crash: after kill -9 the state directory holds what was answered: %s" % v2["records"])

# restart: the previous run is moved aside whole
d = Vcmad(VCMAD, CONFIG, reuse=d)
text = d.logtext()
prev = [p for p in os.listdir(state) if p.startswith("previous-")]
check(len(prev) == 1 and "taking guests back after a restart is not built yet" in text,
      "restart: vcmad says it keeps the previous run's state aside (%s)" % prev)
rc, vp = verify(os.path.join(state, prev[0]))
check(rc == 0 and vp["records"]["regions"] == 6 and vp["records"]["guests"] == 3,
      "restart: the previous run's state verifies: %s" % vp["records"])
rc, vn = verify(state)
check(rc == 0 and vn["records"]["regions"] == 0 and vn["records"]["guests"] == 0 and vn["records"]["pools"] == 1,
      "restart: vcmad starts afresh: %s" % vn["records"])
# a second crash: its copy is kept beside the first, whatever their transaction numbers
g = Guest(d, "g3")
check(g.alloc(MiB).status == proto.Status.OK, "restart: g3 holds a region")
d.kill()
g.close()
txn = verify(state)[1]["last_txn"]
taken = os.path.join(state, "previous-%d" % txn)  # as if an earlier run had ended on the same number
os.makedirs(taken, exist_ok=True)
with open(os.path.join(taken, "marker"), "w") as f:
    f.write("an earlier copy\n")
d = Vcmad(VCMAD, CONFIG, reuse=d)
prev = sorted(p for p in os.listdir(state) if p.startswith("previous-") and os.path.exists(os.path.join(state, p,
                                                                                                     "data.mdb")))
counts = sorted(verify(os.path.join(state, p))[1]["records"]["regions"] for p in prev)
check(len(prev) == 2 and counts == [1, 6] and os.path.exists(os.path.join(taken, "marker"))
      and os.path.exists(os.path.join(taken + ".1", "data.mdb")),
      "restart: a second crash's copy goes beside the others, never over one of the same name (%s: %s regions)"
      % (prev, counts))
d.stop()

# full disk: a state directory on a tmpfs of 256 KiB, the rest of it taken by a file
if os.geteuid() != 0:
    partial("full disk: not root, cannot mount a small tmpfs")
else:
    mnt = tempfile.mkdtemp(prefix="vcma-test-full-")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", mnt]).returncode != 0:
        partial("full disk: cannot mount a tmpfs")
    else:
        try:
            sd = os.path.join(mnt, "state")
            d = Vcmad(VCMAD, CONFIG, args=("-s", sd))
            g = Guest(d, "g2")
            kept = []
            for i in range(3):
                r = g.alloc(MiB)
                check(r.status == proto.Status.OK, "full disk: a region recorded while there is room")
                kept.append(r.handle)
            filler = os.path.join(mnt, "filler")
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                while True:
                    os.write(fd, b"\xff" * 4096)
            except OSError:
                pass  # full
            os.close(fd)
            refused = served = 0
            for i in range(240):  # held, so the store grows until a commit finds no room
                r = g.alloc(2 * 4096)
                if r.status == proto.Status.NO_SPACE:
                    refused += 1
                    break
                if r.status != proto.Status.OK:
                    fail("full disk: ALLOC answered %d, not OK or NO_SPACE" % r.status)
                served += 1
                kept.append(r.handle)
            check(refused == 1, "full disk: an ALLOC that cannot be recorded is answered NO_SPACE (after %d served)"
                  % served)
            r = g.alloc(MiB)
            check(r.status == proto.Status.NO_SPACE, "full disk: allocations are refused while nothing can be recorded")
            check(g.free(kept.pop()) == proto.Status.OK, "full disk: frees go on")
            check(d.alive() and "allocations are refused (NO_SPACE) until the whole state is recorded again"
                  in d.logtext(), "full disk: vcmad says so and keeps running")
            os.unlink(filler)
            r = g.alloc(MiB)
            check(r.status == proto.Status.OK, "full disk: with room again the whole state is recorded and the "
                  "allocation served")
            kept.append(r.handle)
            check("the whole state is recorded again" in d.logtext(), "full disk: vcmad says it serves again")
            st = ctl(d, "stats")["daemon"]
            check(st["state_failures"] >= 1 and st["state_resyncs"] >= 1 and st["state_commits"] > served
                  and st["state_stale"] is False,
                  "full disk: vcmactl stats counts it: %d commit(s), %d failed, %d rewrite(s), now served"
                  % (st["state_commits"], st["state_failures"], st["state_resyncs"]))
            rc, vf = verify(sd)
            check(rc == 0 and vf["records"]["regions"] == len(kept),
                  "full disk: the store holds the %d regions g2 has: %s" % (len(kept), vf["records"]))
            g.close()
            d.stop()
        finally:
            if d.alive():
                d.kill()
            subprocess.run(["umount", mnt])
            os.rmdir(mnt)
print("PASS")
