#!/usr/bin/env python3
"""A VMM reattaching to a restarted vcmad (PROTOCOL.md 9.1 "Restart and reattach"), by hand
over the raw protocol, and the same from hostile clients.

  hostile      after kill -9 and a restart, REATTACH messages that are malformed (flags,
               name, no p2m for a VMM, a short or mistyped p2m message) or that do not
               match the guest taken back (RAM size, role, token) are answered INVALID or
               NO_REGION and change nothing: the VMs stay taken back, vcmad serves on
  adopted      VM a reattaches with a p2m where one page sits on an ordinary frame the
               record does not give it (a remap it applied just before vcmad died): vcmad
               takes it as the VMM has it; the pool frame the record had is free again,
               and the record says so
  refused      VM b reattaches with a page on a frame VM a holds: INVALID, and b is
               reclaimed (its pool frames free), a untouched
  serving      with every VM back or reclaimed, allocations are served again; until then
               they were refused with EBUSY
  libvcma      a real libvcma guest (hold_regions) holding regions across the restart
               reattaches on its own at its next call and frees them all"""
import json
import re
import os
import socket
import subprocess
import sys

import proto
from vcmatest import (Vcmad, check, ctl, frames, lent, set_tools, sim_attach_raw, vcmactl, wait_until)

VCMAD, VCMACTL, HOLD = sys.argv[1], sys.argv[2], sys.argv[3]
set_tools(vcmactl=VCMACTL)

CONFIG = """
[daemon]
lend_share = 50%
relend_idle_ms = 3600000
reattach_grace_ms = 60000
[machine]
memory = 64M
[pool main]
size = 16M
"""
MiB = 1 << 20
RAM = 4 * MiB
P2M_MSG = proto.SIM_P2M.size + proto.SIM_P2M_RUNS * proto.SIM_RUN.size


def attach_vmm(d, name):
    """A VMM asking for a reattach token: (socket, response, fds, p2m runs)."""
    s, rsp, fds = sim_attach_raw(d.sock, name, role=proto.SimRole.VMM, ram_bytes=RAM, flags=proto.SIM_F_REATTACH)
    runs = []
    while len(runs) < rsp.nruns:
        runs += proto.parse_p2m(s.recv(P2M_MSG))
    return s, rsp, fds, runs


def p2m_msgs(runs):
    out = []
    for i in range(0, len(runs), proto.SIM_P2M_RUNS):
        part = runs[i:i + proto.SIM_P2M_RUNS]
        msg = proto.SIM_P2M.pack(nruns=len(part)) + b"".join(proto.SIM_RUN.pack(gfn=g, mfn=m, count=c)
                                                             for g, m, c in part)
        out.append(msg + bytes(P2M_MSG - len(msg)))
    return out


def reattach(d, name, guest_id, token, runs, role=proto.SimRole.VMM, ram=RAM, flags=proto.SIM_F_REATTACH,
             nruns=None, msgs=None):
    """REATTACH with a p2m: the response status (-1 if vcmad closed without one), and
    the socket."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(d.sock)
    s.settimeout(10)
    s.send(proto.SIM_REATTACH.pack(role=role, flags=flags, guest_id=guest_id,
                                   nruns=len(runs) if nruns is None else nruns, ram_bytes=ram, token=token,
                                   name=name.encode() if isinstance(name, str) else name))
    try:
        for m in (p2m_msgs(runs) if msgs is None else msgs):
            s.send(m)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before the p2m: the answer is queued
    try:
        msg, fds, _, _ = socket.recv_fds(s, 256, 8)
    except (ConnectionResetError, socket.timeout):
        return -1, s, []
    if not msg:
        return -1, s, []
    return proto.SIM_ATTACH_RSP.unpack(msg).status, s, fds


def split(runs):
    """Runs as one (gfn, mfn, 1) per page."""
    return [(g + k, m + k, 1) for g, m, c in runs for k in range(c)]


def merge(pages):
    out = []
    for g, m, _ in pages:
        if out and out[-1][0] + out[-1][2] == g and out[-1][1] + out[-1][2] == m:
            out[-1] = (out[-1][0], out[-1][1], out[-1][2] + 1)
        else:
            out.append((g, m, 1))
    return out


d = Vcmad(VCMAD, CONFIG)
sa, ra, fa, runs_a = attach_vmm(d, "a")
sb, rb, fb, runs_b = attach_vmm(d, "b")
check(sa.token.guest_id == ra.guest_id and sb.token.guest_id == rb.guest_id,
      "two VMMs attached with reattach tokens (ids %d, %d)" % (ra.guest_id, rb.guest_id))
lent_before = lent(frames(d))
# a's page copied to an ordinary frame nobody holds, as a vacate does before its remap,
# and bytes left in another free frame, as a vacate that never remapped leaves them
held = {m for g_, m, c in runs_a + runs_b for m in range(m, m + c)}
free_ord = [m for m in range(4096, (64 - 16) * MiB // 4096) if m not in held][:2]
PAGE_A, JUNK = b"\x5a" * 4096, b"\xa7" * 4096
with open(os.path.join(d.rundir, "machine.mem"), "r+b") as f:
    f.seek(free_ord[0] * 4096)
    f.write(PAGE_A)
    f.seek(free_ord[1] * 4096)
    f.write(JUNK)


def frame(mfn):
    with open(os.path.join(d.rundir, "machine.mem"), "rb") as f:
        f.seek(mfn * 4096)
        return f.read(4096)

check(lent_before == 2 * (RAM // 4096) // 2, "half of each VM's RAM is lent from the pool (%d frames)" % lent_before)
hold = subprocess.Popen([HOLD, d.sock, "h", "main", "1M", "3"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        text=True)
hold_handles = []
for line in hold.stdout:
    if line.startswith("region "):
        hold_handles.append(int(line.split()[1], 16))
    if line.strip() == "ready":
        break
check(len(hold_handles) == 3, "libvcma: hold_regions holds 3 regions (%s)" % [hex(h) for h in hold_handles])
# handles issued and freed before the crash, one slot's generation run up past every
# live region's: none may be issued again after the restart (PROTOCOL.md 6)
issued = set(hold_handles)
for _ in range(3):
    r = vcmactl(d, "--json", "alloc", "--pool", "main", "1M")
    h = int(json.loads(r.stdout)["handle"], 16)
    issued.add(h)
    vcmactl(d, "free", hex(h))
d.kill()
for s in (sa, sb):
    s.close()
d = Vcmad(VCMAD, CONFIG, reuse=d)
check("restore: took back 3 guest(s) with 3 region(s) and 2 VM(s)" in d.logtext(),
      "restart: both VMs and hold_regions with its 3 regions taken back")
check(lent(frames(d)) == lent_before, "restart: the pool frames they had are theirs again (%d lent)" % lent(frames(d)))
r = vcmactl(d, "alloc", "1M")
check(r.returncode != 0 and "EBUSY" in r.stderr and "restarted" in r.stderr,
      "restart: allocations wait (EBUSY) for the VMs, and vcmactl says why (%s)" % r.stderr.strip())

# hostile: nothing of these takes a VM or changes anything
ta, tb = sa.token.token, sb.token.token
cases = [
    # refused on the REATTACH alone: no p2m follows (a close with it unread would reset
    # the connection, and the answer with it)
    ("garbage flags", dict(name="a", guest_id=ra.guest_id, token=ta, runs=runs_a, flags=0x80, msgs=[]),
     proto.Status.INVALID),
    ("a bad name", dict(name=b"a b", guest_id=ra.guest_id, token=ta, runs=runs_a, msgs=[]), proto.Status.INVALID),
    ("a VMM without a p2m", dict(name="a", guest_id=ra.guest_id, token=ta, runs=[]), proto.Status.INVALID),
    ("another RAM size", dict(name="a", guest_id=ra.guest_id, token=ta, runs=[(0, 0, 2 * RAM // 4096)],
                              ram=2 * RAM), proto.Status.NO_REGION),
    ("a p2m not covering the RAM it names", dict(name="a", guest_id=ra.guest_id, token=ta, runs=runs_a[:1]),
     proto.Status.INVALID),
    ("a p2m run past machine memory", dict(name="a", guest_id=ra.guest_id, token=ta,
                                          runs=[(0, (1 << 64) - 16, 16), (16, 0, RAM // 4096 - 16)]),
     proto.Status.INVALID),
    ("the GUEST role for a VM", dict(name="a", guest_id=ra.guest_id, token=ta, runs=[], role=proto.SimRole.GUEST,
                                     ram=0), proto.Status.NO_REGION),
    ("b's token for a", dict(name="a", guest_id=ra.guest_id, token=tb, runs=runs_a), proto.Status.NO_REGION),
    ("a's name for b", dict(name="a", guest_id=rb.guest_id, token=tb, runs=runs_b), proto.Status.NO_REGION),
    ("an unknown guest id", dict(name="a", guest_id=999, token=ta, runs=runs_a), proto.Status.NO_REGION),
    ("a p2m message of another type", dict(name="a", guest_id=ra.guest_id, token=ta, runs=runs_a,
                                          msgs=[proto.SIM_P2M.pack(type=proto.SimMsg.REGIONS, nruns=1) +
                                                bytes(P2M_MSG - proto.SIM_P2M.size)]), proto.Status.INVALID),
    ("a short p2m message", dict(name="a", guest_id=ra.guest_id, token=ta, runs=runs_a,
                                 msgs=[p2m_msgs(runs_a)[0][:100]]), proto.Status.INVALID),
]
for what, kw, want in cases:
    st, s, fds = reattach(d, **kw)
    check(st == want and not fds, "hostile: %s is answered %s with no fds (%s)" % (what, want.name, st))
    s.close()
g = {x["name"]: x for x in ctl(d, "guests")["guests"]}
check(set(g) == {"a", "b", "h"} and lent(frames(d)) == lent_before,
      "hostile: both VMs are still taken back and waiting, their frames theirs (%s)" % sorted(g))

# adopted: a moved one page off the pool onto an ordinary frame nobody holds
check(frame(free_ord[0]) == PAGE_A and frame(free_ord[1]) == JUNK,
      "restart: frames nobody holds are not zeroed while a VM may still claim one")
pages_a = split(runs_a)
pool_pages = [p for p in pages_a if p[1] >= (64 - 16) * MiB // 4096]
gfn, old_mfn, _ = pool_pages[0]
moved = [(gg, free_ord[0] if gg == gfn else mm, 1) for gg, mm, _ in pages_a]
st, sa2, fds = reattach(d, "a", ra.guest_id, ta, merge(moved))
check(st == proto.Status.OK and len(fds) == 4, "adopted: a is back (status %d, %d fds)" % (st, len(fds)))
check("VM %d (a): 1 page(s) were moved before vcmad restarted and not recorded" % ra.guest_id in d.logtext(),
      "adopted: vcmad says it took the one page as the VMM has it")
check(lent(frames(d)) == lent_before - 1, "adopted: the pool frame the record had for it is free again (%d lent)"
      % lent(frames(d)))
r = vcmactl(d, "--json", "state", "verify", d.state_dir)
print("info: state verify: exit %d %s %s" % (r.returncode, r.stdout[:400], r.stderr[:400]))
check(r.returncode == 0 and json.loads(r.stdout)["violations"] == 0,
      "adopted: the record verifies after it (no frame owned twice, every page of a backed once)")
r = vcmactl(d, "alloc", "1M")
check(r.returncode != 0 and "busy" in (r.stdout + r.stderr).lower(), "adopted: allocations still wait for b")

# refused: b claims one of a's frames
pages_b = split(runs_b)
stolen = [(gg, pages_a[5][1] if gg == pages_b[0][0] else mm, 1) for gg, mm, _ in pages_b]
st, sb2, fds = reattach(d, "b", rb.guest_id, tb, merge(stolen))
check(st == proto.Status.INVALID and not fds, "refused: b's p2m with a page on a's frame is answered INVALID")
wait_until(lambda t: "(b) detached (its p2m puts a page on a frame someone else holds)" in t, 10,
           "b reclaimed for it", probe=d.logtext)
g = {x["name"]: x for x in ctl(d, "guests")["guests"]}
check(set(g) == {"a", "h"}, "refused: a and h stay, b is gone (%s)" % sorted(g))
check(lent(frames(d)) == lent_before - 1 - (RAM // 4096) // 2,
      "refused: b's pool frames are free, a's are a's (%d lent)" % lent(frames(d)))

check(frame(free_ord[0]) == PAGE_A, "adopted: the page a moved is intact on its frame, now a's")
check(frame(free_ord[1]) == bytes(4096), "every VM back or reclaimed: the bytes in a frame nobody holds are zeroed")

st = ctl(d, "stats")["daemon"]
check((st["restored_guests"], st["restored_regions"], st["restored_vms"], st["restore_back"], st["restore_reclaimed"],
       st["restore_waiting"], st["restore_vms_waiting"]) == (3, 3, 2, 1, 1, 1, 0),
      "stats: 3 guests, 3 regions and 2 VMs taken back, 1 back, 1 reclaimed, h waiting, no VM (%s)"
      % {k: v for k, v in st.items() if k.startswith("restore")})
r = vcmactl(d, "stats", "--prometheus")
check(r.returncode == 0 and "vcmad_restore_back_total 1" in r.stdout and "vcmad_restored_vms_total 2" in r.stdout,
      "stats --prometheus: the restore counters")

# serving again
r = vcmactl(d, "--json", "alloc", "1M")
check(r.returncode == 0, "serving: with a back and b reclaimed, an allocation is served (%s)" % r.stdout.strip())
again = int(json.loads(r.stdout)["handle"], 16)
check(again not in issued, "serving: its handle %#x is none issued before the restart (%s)"
      % (again, sorted(hex(h) for h in issued)))
# libvcma: hold_regions finds the host gone at its next call, reattaches and frees
out, _ = hold.communicate("free\n", timeout=30)
check(hold.returncode == 0, "libvcma: hold_regions freed its 3 regions after reattaching on its own (exit %d)"
      % hold.returncode)
check(re.search(r"guest \d+ \(h\) reattached \d+ ms after the restart: 3 region\(s\) kept", d.logtext()),
      "libvcma: vcmad logged h's reattach with its 3 regions")
check(not [r for r in ctl(d, "regions")["regions"] if r.get("guest") == "h"], "libvcma: h holds no region now")
st = ctl(d, "stats")["daemon"]
check(st["restore_back"] == 2 and st["restore_waiting"] == 0, "stats: 2 back, none waiting")
sa2.close()
sb2.close()
d.stop()
print("PASS")
