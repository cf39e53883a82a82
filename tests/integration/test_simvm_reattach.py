#!/usr/bin/env python3
"""vcma-simvm across a vcmad restart (PROTOCOL.md 9.1, "sim: restart and reattach"),
against a fake vcmad in this process: the sim socket (SOCK_SEQPACKET, fds in
SCM_RIGHTS), a shared area laid out as vcmad lays it out with a ring that answers HELLO,
ALLOC and FREE, machine memory in a memfd, and the VMM channel. No vcmad runs.

ok        attach with a token; a vacate (PAUSE, copy, REMAP_RESUME) moves a run; all RAM
          tracked (DIRTY_LOG); REUSEs left unanswered; then the host "dies" with the VM
          paused. The vCPUs
          must keep writing RAM while no host is there. The restarted host refuses the
          first REATTACH with BUSY; every REATTACH must carry the token, the attach's
          flags and the VM's p2m as remapped, in P2M messages of the exact size. The
          host answers OK with a new ring, the same machine memory, a new token and the
          regions it kept; then the guest part must say HELLO on the new ring, the VM
          PIN again, REPORT its reported pages again, log no writes (a DIRTY_READ finds
          nothing), have answered the waiting REUSEs itself, and run
          to the end with no corruption, every region freed, 'reattaches 1' counted.
no-region the restarted host answers NO_REGION: simvm exits 3 saying its memory is gone.
cut-off   the host sets DEAD and closes (a violation, PROTOCOL.md 8.2): no reattach.
refused   the host dies while the VM is parked after refusing a REMAP_RESUME, the old
          frames cleared: simvm applies the REMAP_RESUME before unparking, its p2m
          names the new frames, and no page is lost.
grace     the restarted host answers BUSY (once SHUTDOWN) to every try: the tries follow
          the backoff (10 ms doubling to 500 ms), and simvm gives up (exit 3) once the
          token's grace period after the loss is over.
no-token  a host that sends no TOKEN (a vcmad without restart support): simvm runs as
          before and stops when the host goes; a host that refuses the REATTACH flag
          (INVALID) gets the attach again without it; --no-reattach does not ask for a
          token and never connects again.

The TOKEN and REATTACH layouts are described here (proto.py does not have them yet);
their sizes are held against proto/vcma_sim.h's _Static_asserts.
"""
import hashlib
import json
import mmap
import os
import select
import socket
import subprocess
import sys
import threading
import time

import proto
from proto import PAGE, CTRL, RING_HDR, REQ, RSP, SIM_ATTACH, SIM_ATTACH_RSP, SIM_P2M, SIM_RUN, SIM_MSG
from vcmatest import check, fail, log, partial, poll_until, wait_until, tmpdir

SIMVM = sys.argv[1]

# ---- proto/vcma_sim.h: restart and reattach ----
MSG_TOKEN, MSG_REATTACH, MSG_REGIONS = 4, 5, 6
F_ONE_TRIP, F_DIRTY_LOG, F_REATTACH = 0x1, 0x2, 0x4
PAUSE, REMAP, RESUME, REUSED, PINNED, REMAP_RESUME, DROP, TRACK, UNTRACK, DIRTY_READ = range(10, 20)
PAUSED, REMAPPED, REPORT, REUSE, PIN, DIRTY, TRACKING, DROPPED = range(20, 28)
_HDR = {"magic": proto.SIM_MAGIC, "version": proto.SIM_VERSION}
TOKEN = proto.Layout("vcma_sim_token", [
    ("magic", "I"), ("version", "H"), ("type", "H"), ("guest_id", "I"), ("grace_ms", "I"), ("token", "16s"),
], defaults=dict(_HDR, type=MSG_TOKEN))
REATTACH = proto.Layout("vcma_sim_reattach", [
    ("magic", "I"), ("version", "H"), ("type", "H"), ("role", "I"), ("flags", "I"), ("guest_id", "I"),
    ("nruns", "I"), ("ram_bytes", "Q"), ("token", "16s"), ("name", "32s"),
], defaults=dict(_HDR, type=MSG_REATTACH))
P2M_SIZE = SIM_P2M.size + proto.SIM_P2M_RUNS * SIM_RUN.size
assert TOKEN.size == 32 and REATTACH.size == 80 and P2M_SIZE == 3088  # vcma_sim.h's _Static_asserts

# ---- the fake host's geometry ----
GUEST_ID = 7
RAM = 4 << 20
RAM_FRAMES = RAM // PAGE
MACHINE = 16 << 20
MACHINE_FRAMES = MACHINE // PAGE
WINDOW_GPA = 1 << 30
# RAM scattered over machine frames [0, 2048): four runs that do not merge
P2M0 = [(0, 1024, 256), (256, 256, 256), (512, 1536, 256), (768, 0, 256)]
VACATE_TO = 600            # frames [512, 1024) are free: a vacate moves a run there
REGION_FRAMES = (2048, MACHINE_FRAMES)  # regions come from here
REQ_OFF, SLOTS, EVT_OFF, SHM = 4096, 64, 3 * 4096, 4 * 4096

tmp = tmpdir("vcma-reattach-")
SOCK = os.path.join(tmp, "vcmad.sock")


def merged(p2m):
    """[(gfn, mfn, count)] maximal runs of a per-gfn list of frames."""
    runs = []
    for g, m in enumerate(p2m):
        if runs and runs[-1][1] + runs[-1][2] == m:
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((g, m, 1))
    return runs


def p2m_msgs(runs, type=proto.SimMsg.P2M):
    """runs as P2M (or REGIONS) messages of exactly P2M_SIZE bytes."""
    out = []
    for i in range(0, len(runs), proto.SIM_P2M_RUNS):
        part = runs[i:i + proto.SIM_P2M_RUNS]
        m = SIM_P2M.pack(type=type, nruns=len(part)) + b"".join(SIM_RUN.pack(gfn=a, mfn=b, count=c)
                                                               for a, b, c in part)
        out.append(m + bytes(P2M_SIZE - len(m)))
    return out


def recv(conn, timeout=5, what="a message"):
    if not select.select([conn], [], [], timeout)[0]:
        fail("no %s within %g s" % (what, timeout))
    return conn.recv(65536)


class Ring:
    """vcmad's side of one shared area (PROTOCOL.md 2, 4): HELLO, ALLOC (regions from
    the host's machine memory), FREE. Stops answering at stop(), as a dead host does."""

    def __init__(self, host):
        self.host = host
        self.shm = os.memfd_create("fake-ring", os.MFD_CLOEXEC)
        os.ftruncate(self.shm, SHM)
        self.m = mmap.mmap(self.shm, SHM)
        CTRL.pack_into(self.m, 0, state=proto.State.READY, host_features=proto.FEATURES_KNOWN, generation=1,
                       guest_id=GUEST_ID, req_off=REQ_OFF, req_slots=SLOTS, evt_off=EVT_OFF, evt_slots=SLOTS,
                       max_outstanding=32, max_regions=64, max_bytes=(1 << 64) - 1)
        RING_HDR.put(self.m, REQ_OFF, "req_event", 1)
        proto.EVT_HDR.put(self.m, EVT_OFF, "evt_event", 1)
        self.kick = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.irq = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.req_cons = self.rsp_prod = 0
        self.hellos = 0
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def fds(self):
        return [self.shm, self.kick, self.irq]

    def _respond(self, rid, **rsp):
        RSP.pack_into(self.m, proto.slot_offset(REQ_OFF, self.rsp_prod, SLOTS), id=rid, **rsp)
        self.rsp_prod += 1
        RING_HDR.put(self.m, REQ_OFF, "rsp_prod", self.rsp_prod)

    def _take(self, q):
        if q.op == proto.Op.HELLO:
            self.hellos += 1
            CTRL.put(self.m, 0, "guest_features", q.arg1 & proto.FEATURES_KNOWN)
            CTRL.put(self.m, 0, "state", proto.State.CONNECTED)
            self._respond(q.id, val0=q.arg1 & proto.FEATURES_KNOWN, val1=proto.VERSION)
        elif q.op == proto.Op.ALLOC:
            r = self.host.alloc(q.length)
            if r is None:
                self._respond(q.id, status=proto.Status.NO_SPACE)
            else:
                handle, mfn, n = r
                self._respond(q.id, handle=handle, gpa=WINDOW_GPA + mfn * PAGE, bus=mfn * PAGE, length=n * PAGE)
        elif q.op == proto.Op.FREE:
            ok = self.host.free(q.handle)
            self._respond(q.id, status=proto.Status.OK if ok else proto.Status.NO_REGION, handle=q.handle)
        else:
            self._respond(q.id, status=proto.Status.INVALID)

    def _serve(self):
        while not self.stopped:
            if not select.select([self.kick], [], [], 0.02)[0]:
                continue
            try:
                os.read(self.kick, 8)
            except BlockingIOError:
                continue
            while not self.stopped:
                prod = RING_HDR.get(self.m, REQ_OFF, "req_prod")
                while self.req_cons != prod and not self.stopped:
                    q = REQ.unpack(self.m, proto.slot_offset(REQ_OFF, self.req_cons, SLOTS))  # copied once
                    self.req_cons += 1
                    with self.host.lock:
                        self._take(q)
                RING_HDR.put(self.m, REQ_OFF, "req_event", self.req_cons + 1)
                if RING_HDR.get(self.m, REQ_OFF, "req_prod") == self.req_cons:
                    break
            if not self.stopped:
                os.write(self.irq, (1).to_bytes(8, "little"))

    def stop(self):
        self.stopped = True
        self.thread.join()


class Channel:
    """The host's end of one VMM connection after the attach: a thread takes simvm's
    messages; REUSE is answered (while answer_reuse), PIN is answered 0; the rest is
    queued for the test. Closing the connection is the host's death."""

    def __init__(self, conn):
        self.conn = conn
        self.lock = threading.Lock()
        self.msgs = []  # (time, header, runs)
        self.answer_reuse = True
        self.unanswered_reuses = 0
        self.closed = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def send(self, type, seq=0, status=0, runs=()):
        self.conn.send(proto.sim_msg(type, seq=seq, status=status, runs=runs))

    def _serve(self):
        while not self.closed:
            try:
                if not select.select([self.conn], [], [], 0.05)[0]:
                    continue
                data = self.conn.recv(65536)
            except (OSError, ValueError):
                return
            if not data:
                self.closed = True
                return
            h, runs = proto.parse_sim_msg(data)
            with self.lock:
                self.msgs.append((time.monotonic(), h, runs))
            try:
                if h.type == REUSE:
                    if self.answer_reuse:
                        self.send(REUSED, seq=h.seq)
                    else:
                        self.unanswered_reuses += 1
                elif h.type == PIN:
                    self.send(PINNED, seq=h.seq)
            except OSError:
                return

    def of(self, type):
        with self.lock:
            return [(t, h, r) for t, h, r in self.msgs if h.type == type]

    def wait(self, type, seq, timeout=5, what=None):
        return wait_until(lambda: [m for m in self.of(type) if m[1].seq == seq], timeout,
                          what or "message type %d seq %d" % (type, seq))[0]

    def close(self):
        self.closed = True
        self.thread.join()
        self.conn.close()


class Host:
    """The fake vcmad: machine memory, the guest's regions, and the listening socket."""

    def __init__(self, grace_ms=3000, send_token=True):
        self.lock = threading.Lock()
        self.machine = os.memfd_create("fake-machine", os.MFD_CLOEXEC)
        os.ftruncate(self.machine, MACHINE)
        self.mm = mmap.mmap(self.machine, MACHINE)
        self.p2m = [0] * RAM_FRAMES
        for g, m, n in P2M0:
            for k in range(n):
                self.p2m[g + k] = m + k
        self.regions = {}  # handle -> (mfn, frames)
        self.next_handle = 0x100
        self.grace_ms = grace_ms
        self.send_token = send_token
        self.token = os.urandom(16)
        self.ls = None

    def listen(self):
        if os.path.exists(SOCK):
            os.unlink(SOCK)
        self.ls = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ls.bind(SOCK)
        self.ls.listen(8)

    def die(self):
        """The host process is gone: its listener too (the socket path stays, refusing)."""
        self.ls.close()
        self.ls = None

    def accept(self, timeout=5, what="a connection"):
        if not select.select([self.ls], [], [], timeout)[0]:
            fail("no %s within %g s" % (what, timeout))
        return self.ls.accept()[0]

    # regions: first fit in REGION_FRAMES, zeroed when handed out (simvm checks that)
    def alloc(self, length):
        n = (length + PAGE - 1) // PAGE
        used = sorted(self.regions.values())
        at = REGION_FRAMES[0]
        for m, c in used:
            if m - at >= n:
                break
            at = max(at, m + c)
        if at + n > REGION_FRAMES[1]:
            return None
        self.mm[at * PAGE:(at + n) * PAGE] = bytes(n * PAGE)
        handle = self.next_handle
        self.next_handle += 1
        self.regions[handle] = (at, n)
        return handle, at, n

    def free(self, handle):
        return self.regions.pop(handle, None) is not None

    def ram_digest(self):
        h = hashlib.sha1()
        for g, m, n in merged(self.p2m):
            h.update(self.mm[m * PAGE:(m + n) * PAGE])
        return h.digest()

    def attach(self, conn, expect_flags=None):
        """Take simvm's ATTACH, answer it with a fresh ring, the token and the p2m."""
        a = SIM_ATTACH.unpack(recv(conn, what="ATTACH"))
        check(a.type == proto.SimMsg.ATTACH and a.role == proto.SimRole.VMM and a.ram_bytes == RAM,
              "simvm attaches as a VMM with %d bytes of RAM" % a.ram_bytes)
        if expect_flags is not None:
            check(a.flags == expect_flags, "attach flags %#x (want %#x)" % (a.flags, expect_flags))
        ring = Ring(self)
        reattach = bool(a.flags & F_REATTACH) and self.send_token
        socket.send_fds(conn, [SIM_ATTACH_RSP.pack(status=proto.Status.OK, guest_id=GUEST_ID, shm_size=SHM,
                                                   ram_frames=RAM_FRAMES, machine_bytes=MACHINE,
                                                   window_gpa=WINDOW_GPA, nruns=len(P2M0), nfds=4)],
                        ring.fds() + [self.machine])
        if reattach:
            conn.send(TOKEN.pack(guest_id=GUEST_ID, grace_ms=self.grace_ms, token=self.token))
        for m in p2m_msgs(P2M0):
            conn.send(m)
        return a, ring

    def take_reattach(self, conn, attach, what):
        """Read one REATTACH and its P2M messages; check them against the attach and our
        p2m. Returns the REATTACH."""
        data = recv(conn, what="REATTACH (%s)" % what)
        check(len(data) == REATTACH.size, "%s: REATTACH is %d bytes" % (what, len(data)))
        r = REATTACH.unpack(data)
        want = merged(self.p2m)
        check(r.magic == proto.SIM_MAGIC and r.version == proto.SIM_VERSION and r.type == MSG_REATTACH and
              r.role == proto.SimRole.VMM and r.flags == attach.flags and r.guest_id == GUEST_ID and
              r.token == self.token and r.ram_bytes == RAM and r.name == attach.name and r.nruns == len(want),
              "%s: REATTACH: role VMM, flags %#x as at attach, guest %d, the token, RAM, name, %d runs"
              % (what, r.flags, r.guest_id, r.nruns))
        got = []
        for i in range((r.nruns + proto.SIM_P2M_RUNS - 1) // proto.SIM_P2M_RUNS):
            m = recv(conn, what="P2M message %d" % i)
            h = SIM_P2M.unpack(m)
            if len(m) != P2M_SIZE or h.type != proto.SimMsg.P2M or h.pad or not 0 < h.nruns <= proto.SIM_P2M_RUNS \
                    or any(m[SIM_P2M.size + h.nruns * SIM_RUN.size:]):
                fail("%s: P2M message %d: %d bytes, type %d, %d runs, unused entries zero: %s"
                     % (what, i, len(m), h.type, h.nruns, not any(m[SIM_P2M.size + h.nruns * SIM_RUN.size:])))
            got += proto.parse_p2m(m)
        check(got == want, "%s: the p2m sent is the one the VM has mapped (%d runs)" % (what, len(got)))
        return r

    def answer(self, conn, status):
        conn.send(SIM_ATTACH_RSP.pack(status=status, guest_id=GUEST_ID))

    def answer_ok(self, conn):
        """OK with a new ring and the same machine memory, a new token, the regions."""
        ring = Ring(self)
        with self.lock:
            held = sorted((h, m, n) for h, (m, n) in self.regions.items())
        self.token = os.urandom(16)
        socket.send_fds(conn, [SIM_ATTACH_RSP.pack(status=proto.Status.OK, guest_id=GUEST_ID, shm_size=SHM,
                                                   ram_frames=RAM_FRAMES, machine_bytes=MACHINE,
                                                   window_gpa=WINDOW_GPA, nruns=len(held), nfds=4)],
                        ring.fds() + [self.machine])
        conn.send(TOKEN.pack(guest_id=GUEST_ID, grace_ms=self.grace_ms, token=self.token))
        for m in p2m_msgs(held, type=MSG_REGIONS):
            conn.send(m)
        return ring, held


def running(ch):
    """simvm is past its attach (the guest part's HELLO answered and taken): its first
    REPORT (--report) comes after vcma_attach_fds() returned."""
    wait_until(lambda: ch.of(REPORT), 5, "simvm's first REPORT")


def start_simvm(*args):
    cmd = [SIMVM, "--socket", SOCK, "--name", "rvm", "--ram", "4M", "--json"] + list(args)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p, timeout, what):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        fail("%s: simvm did not exit within %g s: %s" % (what, timeout, err[-1500:]))
    try:
        s = json.loads(out) if out.strip() else None
    except ValueError:
        s = None
    return p.returncode, s, err


def run_ok():
    host = Host(grace_ms=3000)
    host.listen()
    p = start_simvm("--vcpus", "2", "--alloc", "64K,128K", "--max-regions", "3", "--interval-ms", "5",
                    "--duration", "2.5", "--pin", "64K", "--report", "20", "--seed", "11")
    conn = host.accept(what="simvm's attach")
    attach, ring = host.attach(conn)
    check(attach.flags & F_REATTACH and attach.flags & F_ONE_TRIP, "ok: attach asks for REATTACH (flags %#x)"
          % attach.flags)
    ch = Channel(conn)
    wait_until(lambda: ch.of(PIN), 5, "the PIN")
    wait_until(lambda: len(host.regions) >= 1, 5, "a region allocated on the first ring")

    # a vacate: gfns 100..131 move to frames VACATE_TO.., copied while paused
    gfn, n = 100, 32
    ch.send(PAUSE, seq=1)
    ch.wait(PAUSED, 1, what="PAUSED 1")
    with host.lock:
        for k in range(n):
            src, dst = host.p2m[gfn + k] * PAGE, (VACATE_TO + k) * PAGE
            host.mm[dst:dst + PAGE] = host.mm[src:src + PAGE]
    ch.send(REMAP_RESUME, seq=1, runs=[(gfn, VACATE_TO, n)])
    _, h, _ = ch.wait(REMAPPED, 1, what="REMAPPED 1")
    check(h.status == 0, "ok: the vacate before the restart is applied (REMAPPED 0)")
    for k in range(n):
        host.p2m[gfn + k] = VACATE_TO + k

    # dirty logging on before the crash, and it works
    tracking = False
    if attach.flags & F_DIRTY_LOG:
        ch.send(TRACK, seq=2, runs=[(0, 0, RAM_FRAMES)])
        _, h, _ = ch.wait(TRACKING, 2, what="TRACKING 2")
        tracking = h.status == 0
        if tracking:
            time.sleep(0.05)  # let the vCPUs write: the log below must be non-empty
            ch.send(DIRTY_READ, seq=3)
            d = wait_until(lambda: [m for m in ch.of(DIRTY) if m[1].seq == 3 and m[1].count < 128], 5, "DIRTY 3")
            pages = sum(c for _, h, r in ch.of(DIRTY) if h.seq == 3 for _, _, c in r)
            check(pages > 0 and d[0][1].status == 0, "ok: before the restart, %d written pages are logged" % pages)
    if not tracking:
        partial("dirty logging unavailable here: that the reattach stops it is not checked")

    # REUSEs go unanswered from now; then the host dies with the VM paused
    ch.answer_reuse = False
    wait_until(lambda: ch.unanswered_reuses, 5, "a REUSE the host leaves unanswered")
    ch.send(PAUSE, seq=4)
    ch.wait(PAUSED, 4, what="PAUSED 4")
    before = host.ram_digest()
    ring.stop()
    ch.close()
    host.die()
    t_dead = time.monotonic()
    log("host died with the VM paused, %d region(s) held, %d REUSE(s) unanswered"
        % (len(host.regions), ch.unanswered_reuses))
    # the vCPUs run again without a host: RAM keeps changing
    check(poll_until(lambda: host.ram_digest() != before, 2), "ok: the vCPUs are unparked and write RAM "
          "while no host is there")
    time.sleep(0.3)  # the outage: vcmad is restarting (the time away is what is under test)
    host.listen()

    c1 = host.accept(what="the first REATTACH")
    host.take_reattach(c1, attach, "try 1")
    host.answer(c1, proto.Status.BUSY)
    c1.close()
    c2 = host.accept(what="a REATTACH after BUSY")
    t_back = time.monotonic()
    host.take_reattach(c2, attach, "try 2")
    ring2, held = host.answer_ok(c2)
    ch2 = Channel(c2)
    log("reattach answered OK %.0f ms after the host died, with %d region(s)" % ((t_back - t_dead) * 1e3, len(held)))
    if tracking:  # answered once simvm serves the new socket; the vCPUs write meanwhile
        try:
            ch2.send(DIRTY_READ, seq=9)
        except OSError:
            pass  # simvm is gone already: said below
        poll_until(lambda: [m for m in ch2.of(DIRTY) if m[1].seq == 9 and m[1].count < 128] or
                   p.poll() is not None, 10)

    rc, s, err = finish(p, 30, "ok")
    sys.stdout.write(err)
    check(ring2.hellos == 1, "ok: the guest part said HELLO on the new ring")
    check(rc == 0 and s is not None, "ok: simvm ran to the end and exited 0 (%s)" % rc)
    check(s["reattaches"] == 1 and s["reattach"] and not s["reattach_failed"],
          "ok: the summary counts 1 reattach")
    check(s["corruptions"] == 0 and s["pattern_errors"] == 0 and s["errors"] == 0 and s["regions_not_zeroed"] == 0,
          "ok: no page and no region lost a byte across the restart (%d pages verified)" % s["vcpu_pages_verified"])
    check("reattached to vcmad as guest %d after" % GUEST_ID in err and "%d region(s) back" % len(held) in err,
          "ok: one line says how long vcmad was away and how many regions came back")
    pins = ch2.of(PIN)
    check(len(pins) == 1 and pins[0][2] == [(0, 0, 16)], "ok: the PIN is sent again after the reattach")
    check(s["local_reuses"] >= 1, "ok: %d REUSE(s) waiting at the loss were answered by simvm itself"
          % s["local_reuses"])
    reused_after = {g < RAM_FRAMES // 2 for _, _, r in ch2.of(REUSE) for g, _, _ in r}
    check(reused_after == {True, False}, "ok: both vCPUs rotate again after the reattach (REUSEs from both halves)")
    # a rotation REPORTs 8 pages at a time; each vCPU's slice has ~20% of 512 reported
    again = [sum(c for _, _, c in r) for _, _, r in ch2.of(REPORT) if sum(c for _, _, c in r) > 8]
    halves = {r[0][0] < RAM_FRAMES // 2 for _, _, r in ch2.of(REPORT) if sum(c for _, _, c in r) > 8}
    check(halves == {True, False}, "ok: each vCPU REPORTs its reported pages again after the reattach (%s pages)"
          % again)
    if tracking:
        d = [h for _, h, _ in ch2.of(DIRTY) if h.seq == 9]
        pages = sum(c for _, h, r in ch2.of(DIRTY) if h.seq == 9 for _, _, c in r)
        check(d and d[-1].status == 0 and pages == 0,
              "ok: after the reattach no write is logged (%d pages): the loss stopped dirty logging" % pages)
    with host.lock:
        left = dict(host.regions)
    check(not left, "ok: every region is freed by the end (%d left: %s)" % (len(left), left))
    log("calls retried across the restart: %d" % s["calls_retried"])
    ch2.close()
    ring2.stop()


def run_no_region():
    host = Host(grace_ms=3000)
    host.listen()
    p = start_simvm("--vcpus", "1", "--alloc", "none", "--report", "10", "--duration", "10", "--seed", "3")
    conn = host.accept(what="simvm's attach")
    attach, ring = host.attach(conn)
    ch = Channel(conn)
    running(ch)
    ring.stop()
    ch.close()
    host.die()
    host.listen()
    c = host.accept(what="the REATTACH")
    host.take_reattach(c, attach, "no-region")
    t = time.monotonic()
    host.answer(c, proto.Status.NO_REGION)
    c.close()
    rc, s, err = finish(p, 10, "no-region")
    sys.stdout.write(err)
    check(rc == 3 and "NO_REGION" in err and "gone" in err,
          "no-region: simvm exits 3 at once (%.0f ms), saying vcmad did not keep the VM and its memory is gone"
          % ((time.monotonic() - t) * 1e3))
    check(s is not None and s["reattach_failed"] and s["reattaches"] == 0 and s["host_gone"],
          "no-region: the summary says the reattach failed")


def run_refused():
    """The host dies while the VM waits for its RESUME after refusing a REMAP_RESUME, the
    old frames cleared already (the host may clear them at once): simvm must apply the
    REMAP_RESUME before the vCPUs run again (PROTOCOL.md 9.1 "Noticing")."""
    host = Host(grace_ms=3000)
    host.listen()
    p = start_simvm("--vcpus", "2", "--alloc", "none", "--report", "10", "--duration", "1.2", "--refuse-remaps", "1",
                    "--seed", "9")
    conn = host.accept(what="simvm's attach")
    attach, ring = host.attach(conn)
    ch = Channel(conn)
    running(ch)
    gfn, n = 300, 16
    ch.send(PAUSE, seq=1)
    ch.wait(PAUSED, 1, what="PAUSED 1")
    old = [host.p2m[gfn + k] for k in range(n)]
    for k in range(n):
        host.mm[(VACATE_TO + k) * PAGE:(VACATE_TO + k + 1) * PAGE] = host.mm[old[k] * PAGE:(old[k] + 1) * PAGE]
    ch.send(REMAP_RESUME, seq=1, runs=[(gfn, VACATE_TO, n)])
    _, h, _ = ch.wait(REMAPPED, 1, what="REMAPPED 1")
    check(h.status != 0, "refused: simvm refuses the REMAP_RESUME (--refuse-remaps), status %d" % h.status)
    for m in old:  # cleared at once, as the host may; then it dies before its RESUME
        host.mm[m * PAGE:(m + 1) * PAGE] = bytes(PAGE)
    ring.stop()
    ch.close()
    host.die()
    for k in range(n):
        host.p2m[gfn + k] = VACATE_TO + k
    host.listen()
    c = host.accept(what="the REATTACH")
    host.take_reattach(c, attach, "refused")  # the p2m must name the new frames
    ring2, _ = host.answer_ok(c)
    ch2 = Channel(c)
    rc, s, err = finish(p, 20, "refused")
    sys.stdout.write(err)
    check(rc == 0 and s and s["corruptions"] == 0 and s["reattaches"] == 1 and "applied it now (16 page(s)" in err,
          "refused: the REMAP_RESUME is applied before the vCPUs run again, and no page is lost (exit %s)" % rc)
    ch2.close()
    ring2.stop()


def run_cut_off():
    """vcmad cuts the VM off (DEAD, then closes, PROTOCOL.md 8.2): nothing to take back."""
    host = Host(grace_ms=3000)
    host.listen()
    p = start_simvm("--vcpus", "1", "--alloc", "none", "--report", "10", "--duration", "10", "--seed", "8")
    conn = host.accept(what="simvm's attach")
    attach, ring = host.attach(conn)
    ch = Channel(conn)
    running(ch)
    CTRL.put(ring.m, 0, "state", proto.State.DEAD)
    os.write(ring.irq, (1).to_bytes(8, "little"))
    ring.stop()
    ch.close()
    rc, s, err = finish(p, 10, "cut-off")
    again = select.select([host.ls], [], [], 0.3)[0]
    sys.stdout.write(err)
    check(rc == 1 and "cut this VM off" in err and not again and s and s["host_gone"] and not s["reattach_failed"],
          "cut-off: a VM whose ring is DEAD when the socket ends does not reattach (exit %s)" % rc)
    host.die()


def run_grace():
    grace = 1500
    host = Host(grace_ms=grace)
    host.listen()
    p = start_simvm("--vcpus", "1", "--alloc", "none", "--report", "10", "--duration", "20", "--seed", "4")
    conn = host.accept(what="simvm's attach")
    attach, ring = host.attach(conn)
    ch = Channel(conn)
    running(ch)
    ring.stop()
    ch.close()  # simvm sees the end at once; the listener stays: every try is seen
    t0 = time.monotonic()
    tries = []
    while p.poll() is None and time.monotonic() - t0 < grace / 1e3 + 3:
        if not select.select([host.ls], [], [], 0.05)[0]:
            continue
        c = host.ls.accept()[0]
        tries.append(time.monotonic() - t0)
        host.take_reattach(c, attach, "grace try %d" % len(tries)) if len(tries) <= 2 else recv(c)
        host.answer(c, proto.Status.SHUTDOWN if len(tries) == 3 else proto.Status.BUSY)  # both: try again
        c.close()
    rc, s, err = finish(p, 10, "grace")
    t_exit = time.monotonic() - t0
    sys.stdout.write(err)
    gaps = [round((b - a) * 1e3) for a, b in zip([0.0] + tries, tries)]
    log("tries at %s ms after the loss; gaps %s ms" % ([round(t * 1e3) for t in tries], gaps))
    want = [min(10 * 2 ** i, 500) for i in range(len(gaps))]
    # try k comes no sooner than the sum of the backoffs before it (t0 is taken before
    # simvm can see the end); each gap is the backoff plus one try (a few ms here), and
    # a loaded machine adds more, or wakes this side late for one try and not the next
    soonest = [sum(want[:k + 1]) for k in range(len(want))]
    check(len(tries) >= 7 and all(t * 1e3 >= w - 2 for t, w in zip(tries[:-1], soonest)) and
          all(w * 0.5 <= g <= w + 150 for g, w in zip(gaps[:-1], want)),
          "grace: tries back off 10 ms doubling to 500 ms (want gaps %s)" % want[:-1])
    check(tries[-1] * 1e3 <= grace + 150 and tries[-1] * 1e3 >= grace - 600,
          "grace: the last try is within the grace period (%.0f ms of %d)" % (tries[-1] * 1e3, grace))
    check(rc == 3 and "grace period" in err and t_exit * 1e3 < grace + 1500,
          "grace: simvm gives up (exit 3) %.0f ms after the loss, saying the grace period is over" % (t_exit * 1e3))


def run_no_token():
    # a host without restart support: the attach asks, no TOKEN comes
    host = Host(send_token=False)
    host.listen()
    p = start_simvm("--vcpus", "1", "--alloc", "none", "--report", "10", "--duration", "10", "--seed", "6")
    conn = host.accept(what="simvm's attach")
    attach, ring = host.attach(conn)
    ch = Channel(conn)
    running(ch)
    ring.stop()
    ch.close()
    rc, s, err = finish(p, 10, "no-token")
    again = select.select([host.ls], [], [], 0.2)[0]
    check("sent no reattach token" in err and rc == 1 and s and s["host_gone"] and not s["reattach"] and not again,
          "no-token: without a token simvm stops when the host goes (exit %s), and does not connect again" % rc)
    host.die()

    # a host older than the REATTACH flag refuses it (INVALID): attached once more without
    host = Host(send_token=False)
    host.listen()
    p = start_simvm("--vcpus", "1", "--alloc", "none", "--report", "10", "--duration", "0.5", "--seed", "6")
    conn = host.accept(what="simvm's attach")
    a = SIM_ATTACH.unpack(recv(conn, what="ATTACH"))
    host.answer(conn, proto.Status.INVALID)
    conn.close()
    conn = host.accept(what="simvm's attach without REATTACH")
    attach, ring = host.attach(conn)
    ch = Channel(conn)
    rc, s, err = finish(p, 10, "old host")
    check(a.flags & F_REATTACH and not attach.flags & F_REATTACH and rc == 0 and "once more without REATTACH" in err,
          "old host: refused with INVALID for the flag, simvm attaches again without it and runs (exit %s)" % rc)
    ring.stop()
    ch.close()
    host.die()

    host = Host()
    host.listen()
    p = start_simvm("--vcpus", "1", "--alloc", "none", "--report", "10", "--duration", "10", "--seed", "6", "--no-reattach")
    conn = host.accept(what="simvm's attach")
    attach, ring = host.attach(conn)
    check(not attach.flags & F_REATTACH, "--no-reattach: the attach does not ask for REATTACH (flags %#x)"
          % attach.flags)
    ch = Channel(conn)
    running(ch)
    ring.stop()
    ch.close()
    rc, s, err = finish(p, 10, "no-reattach")
    again = select.select([host.ls], [], [], 0.2)[0]
    check(rc == 1 and s and s["host_gone"] and not again,
          "--no-reattach: simvm stops when the host goes (exit %s), and does not connect again" % rc)
    host.die()


t_start = time.monotonic()
run_no_token()
run_no_region()
run_cut_off()
run_refused()
run_grace()
run_ok()
log("all scenarios in %.1f s" % (time.monotonic() - t_start))
print("PASS")
