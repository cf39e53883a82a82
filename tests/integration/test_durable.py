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
  restart      a restarted vcmad takes the previous run back (machine memory is a file
               that outlived it): every guest, region (same handle) and the VM's RAM;
               allocations wait (EBUSY) while the VM is not back; a guest reattaches
               with its token and gets its regions listed (a wrong token: NO_REGION);
               the VM that never comes back is reclaimed after reattach_grace_ms; the
               QEMU stand-in keeps its region until its process exits
  host reboot  without the machine memory file the state is moved aside whole (it still
               verifies), never over an earlier copy of the same name
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
from vcmatest import (RingClient, Vcmad, check, ctl, fail, lent, frames, log, partial, set_tools, sim_attach_raw,
                      sim_reattach_raw, simvm, tmpdir, vcmactl, wait_until)

VCMAD, SIMVM, VCMACTL = sys.argv[1], sys.argv[2], sys.argv[3]
set_tools(vcmactl=VCMACTL, simvm=SIMVM)

CONFIG = """
[daemon]
lend_share = 100%
relend_idle_ms = 50
reattach_grace_ms = 3000
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

    def __init__(self, d, name, flags=0):
        self.s, rsp, self.fds = sim_attach_raw(d.sock, name, flags=flags)
        self.id = rsp.guest_id
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
g = Guest(d, "g1", flags=proto.SIM_F_REATTACH)
check(g.s.token.guest_id == g.id and any(g.s.token.token) and g.s.token.grace_ms == 3000,
      "g1: asked for it, a reattach token comes with the answer (grace %d ms)" % g.s.token.grace_ms)
handles = []
for i in range(6):
    r = g.alloc((i % 3 + 1) * MiB)
    check(r.status == proto.Status.OK, "g1: ALLOC %d MiB answered (handle %#x)" % (i % 3 + 1, r.handle))
    handles.append(r.handle)
check(g.free(handles.pop(0)) == proto.Status.OK, "g1: one region freed")
q = subprocess.Popen([sys.executable, PEER, os.path.join(d.rundir, "q0.ivshmem"), "main", "1", "1", "outlive"],
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
other = tmpdir("vcma-test-other-")
with open(os.path.join(other, "vcmad.conf"), "w") as f:
    f.write(CONFIG)
r = subprocess.run([VCMAD, "-c", os.path.join(other, "vcmad.conf"), "-r", os.path.join(other, "run"), "-s", state],
                   capture_output=True, text=True, timeout=30)
check(r.returncode != 0 and "is in use by another vcmad, pid %d" % d.proc.pid in r.stdout + r.stderr,
      "one vcmad: a second one on the same state directory refuses to start, naming the first")

# crash: every answered region is still recorded (the QEMU stand-in lives on)
d.kill()
vm.kill()
vm.wait()
token = g.s.token.token
g.close()
rc, v2 = verify(state)
check(rc == 0 and v2["ok"] and v2["records"] == v["records"],
      "crash: after kill -9 the state directory holds what was answered: %s" % v2["records"])

# restart: the previous run is taken back
d = Vcmad(VCMAD, CONFIG, reuse=d)
text = d.logtext()
check("its machine memory was kept: taking it back" in text
      and "restore: took back 3 guest(s) with 6 region(s) and 1 VM(s)" in text,
      "restart: vcmad takes back the 3 guests, 6 regions and the VM it recorded")
check(not [p for p in os.listdir(state) if p.startswith("previous-")], "restart: nothing is set aside")
gl = {x["name"]: x for x in ctl(d, "guests")["guests"]}
check(set(gl) == {"vm1", "g1", "q0"}, "restart: vcmactl guests lists the guests taken back (%s)" % sorted(gl))
r = vcmactl(d, "alloc", "1M")
check(r.returncode != 0 and "busy" in (r.stdout + r.stderr).lower(),
      "restart: an allocation waits (EBUSY) while the VM taken back is not back (%s)" % (r.stdout + r.stderr).strip())
s_bad, rsp, fds, _, _ = sim_reattach_raw(d.sock, "g1", g.id, bytes(16))
check(rsp.status == proto.Status.NO_REGION and not fds, "reattach: a wrong token is answered NO_REGION, no fds")
s_bad.close()
s2, rsp, fds, tok, regions = sim_reattach_raw(d.sock, "g1", g.id, token)
check(rsp.status == proto.Status.OK and rsp.guest_id == g.id and len(fds) == 3,
      "reattach: g1 is back with its token, the same id %d, a new area and eventfds" % rsp.guest_id)
check(tok is not None and tok.token != token and any(tok.token), "reattach: a new token replaces the spent one")
check(sorted(h for h, _, _ in regions) == sorted(handles),
      "reattach: REGIONS lists exactly the handles g1 held (%s)" % [hex(h) for h, _, _ in regions])
s_again, rsp_again, _, _, _ = sim_reattach_raw(d.sock, "g1", g.id, token)
check(rsp_again.status == proto.Status.NO_REGION, "reattach: the spent token is refused")
s_again.close()
m2 = mmap.mmap(fds[proto.SIM_FD_SHM], rsp.shm_size)
ring2 = RingClient(m2, fds[proto.SIM_FD_KICK], fds[proto.SIM_FD_IRQ])
check(ring2.hello().status == proto.Status.OK, "reattach: HELLO on the new area")
check(ring2.call(proto.Op.FREE, handle=handles[0]).status == proto.Status.OK,
      "reattach: a region held before the restart is g1's: its FREE works")
handles.pop(0)
gone = wait_until(lambda t: "guest %d (vm1) detached (not taken back within reattach_grace_ms" % names["vm1"]["id"] in t,
                  15, "vm1, never back, reclaimed after the grace period", probe=d.logtext)
st = ring2.call(proto.Op.ALLOC, length=MiB).status
check(st == proto.Status.OK, "restart: with the VM reclaimed, allocations are served again (status %d)" % st)
sh = show(state)
check({x["name"] for x in sh["guests"]} == {"g1", "q0"} and not sh["vms"],
      "restart: the record now has g1 and q0 and no VM (%s)" % [x["name"] for x in sh["guests"]])
check(any(r["guest"] == names["q0"]["id"] for r in sh["regions"]),
      "restart: the QEMU stand-in, still running, keeps its region past the grace period")
q2 = subprocess.run([sys.executable, PEER, os.path.join(d.rundir, "q0.ivshmem"), "main", "1", "1"],
                    capture_output=True, text=True, timeout=30)
check(q2.returncode != 0 and "while the one from before vcmad's restart still runs" in d.logtext(),
      "restart: a second QEMU for q0 is refused while the first still holds its region (exit %d)" % q2.returncode)
q.kill()
q.wait()
wait_until(lambda t: "(q0) detached (its QEMU exited)" in t, 15, "q0 reclaimed once its process exits",
           probe=d.logtext)
check(not any(r["guest"] == names["q0"]["id"] for r in show(state)["regions"]),
      "restart: q0's region is gone from the record once its QEMU exited")
d.kill()  # with g1 attached: its regions stay recorded
m2.close()
for fd in fds:
    os.close(fd)
s2.close()

# host reboot: without the machine memory file nothing can be taken back; the state is
# moved aside, never over an earlier copy of the same name
os.unlink(os.path.join(d.rundir, "machine.mem"))
txn = verify(state)[1]["last_txn"]
taken = os.path.join(state, "previous-%d" % txn)  # as if an earlier run had ended on the same number
os.makedirs(taken, exist_ok=True)
with open(os.path.join(taken, "marker"), "w") as f:
    f.write("an earlier copy\n")
d = Vcmad(VCMAD, CONFIG, reuse=d)
text = d.logtext()
check("but the machine memory it describes was not kept" in text, "host reboot: vcmad says why it sets the state aside")
prev = sorted(p for p in os.listdir(state) if p.startswith("previous-") and os.path.exists(os.path.join(state, p,
                                                                                                     "data.mdb")))
check(len(prev) == 1 and os.path.exists(os.path.join(taken, "marker"))
      and os.path.exists(os.path.join(taken + ".1", "data.mdb")),
      "host reboot: the copy goes beside an earlier one of the same name, never over it (%s)" % prev)
rc, vp = verify(os.path.join(state, prev[0]))
check(rc == 0 and vp["records"]["regions"] == len(handles) + 1 and vp["records"]["guests"] == 1,
      "host reboot: the copy set aside verifies (g1's regions): %s" % vp["records"])
rc, vn = verify(state)
check(rc == 0 and vn["records"]["regions"] == 0 and vn["records"]["guests"] == 0 and vn["records"]["pools"] == 1,
      "host reboot: vcmad starts afresh: %s" % vn["records"])
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
