"""The helper module of vcma's Python tests (tests/integration, tests/ctl, tests/qemu).

Conventions every test follows:

* check(cond, msg) is an assertion: it prints "ok: msg" or fails the test. Nothing
  else prints "ok:". log(msg) prints "info: msg" for facts worth reading in the log
  (counts, timings) that assert nothing. fail(msg) prints "FAIL: msg" and exits 1.
* Tests wait for what they can observe, never for a while: wait_until(predicate,
  timeout, what) polls (10 ms, growing to 100 ms) until predicate() is truthy and fails
  with `what` and the last value seen when the timeout passes; poll_until() is the same
  without failing, for a caller whose own check() reports the outcome. A time.sleep()
  is only allowed where time passing is itself the thing under test (an audit period,
  a timeout that must run out), with a comment saying so.
* Skips are never silent:
  - a test whose essential part cannot run here calls skip(reason): it prints
    "SKIP: reason" and exits 77, which meson reports as SKIP;
  - a test that runs its main part but must leave a sub-part out calls
    partial(reason) and carries on. partial() prints "partial: reason" at once; at exit
    the test prints "PARTIAL: <test>: <reasons>" (after its "PASS"), still exits 0
    (meson: OK), and appends that line to the file $VCMA_PARTIAL_LOG names, if any.
    scripts/run-tests.sh sets it for every pass and prints those lines just above
    meson's summary, so a partial pass shows there; the lines are in meson's
    testlog.txt too (grep '^PARTIAL:').
  So an OK with no PARTIAL line means every part of the test ran.

The pieces: Vcmad (a vcmad in a temporary runtime directory; d.sock, d.ctl_sock,
d.log_mark()/d.log_since()); set_tools() names vcmactl and vcma-simvm once per test,
then ctl(d, ...) runs vcmactl --json and simvm(d, name, ...) starts a simulated VM;
CtlConn is a raw control connection; RingClient is a guest's side of the request ring
(proto.py has the layouts); hugepages(n) reserves huge pages for a while.
"""
import atexit
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import proto

_running = []
_partial = []
_tools = {"vcmactl": None, "simvm": None}
_tmpdirs = []
_failed = False


def tmpdir(prefix, dir=None):
    """A new temporary directory, removed when the test passes or skips; kept (and named)
    when it fails, or always with VCMA_KEEP_TMP=1. A vcmad's holds its machine memory:
    100 MiB and more on a disk-backed /tmp."""
    path = tempfile.mkdtemp(prefix=prefix, dir=dir)
    _tmpdirs.append(path)
    return path


def _note_exception(kind, value, tb, _prev=sys.excepthook):
    global _failed
    _failed = True
    _prev(kind, value, tb)


sys.excepthook = _note_exception


def _at_exit():
    for p in _running:
        if p.poll() is None:
            p.kill()
            p.wait()
    if not _tmpdirs:
        return
    if _failed or os.environ.get("VCMA_KEEP_TMP"):
        print("info: kept for inspection: %s" % " ".join(_tmpdirs), flush=True)
        return
    for path in _tmpdirs:
        shutil.rmtree(path, ignore_errors=True)


atexit.register(_at_exit)


# ---------------------------------------------------------------- results

def fail(msg):
    global _failed
    _failed = True
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print("ok: " + msg)


def log(msg):
    print("info: " + msg)


def skip(msg):
    """The test's essential part cannot run here: meson SKIP (exit 77)."""
    print("SKIP: " + msg, flush=True)
    sys.exit(77)


def partial(msg):
    """Part of the test cannot run here: say so now, and in the result at exit."""
    _partial.append(msg)
    print("partial: " + msg, flush=True)


def _report_partial():
    if not _partial:
        return
    line = "PARTIAL: %s: %s" % (os.path.basename(sys.argv[0]), "; ".join(_partial))
    print(line, flush=True)
    path = os.environ.get("VCMA_PARTIAL_LOG")
    if path:
        try:
            with open(path, "a") as f:
                f.write(line + "\n")
        except OSError as e:
            print("info: cannot append to $VCMA_PARTIAL_LOG %s: %s" % (path, e))


atexit.register(_report_partial)


# ---------------------------------------------------------------- waiting

def poll_until(predicate, timeout):
    """Call predicate() until it returns something truthy or timeout seconds passed;
    returns its last value (falsy on timeout). Sleeps 10 ms, growing to 100 ms."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        v = predicate()
        left = deadline - time.monotonic()
        if v or left <= 0:
            return v
        time.sleep(min(delay, left))
        delay = min(delay * 1.5, 0.1)


def wait_until(predicate, timeout, what, probe=None):
    """Wait until predicate() is truthy and return its value; fail naming `what` and the
    last value seen if it is not within timeout seconds. With probe, predicate is
    applied to probe()'s value, and that value is returned (and shown on failure):
        f = wait_until(lambda f: f["free"] == 0, 10, "pool main full", probe=lambda: frames(d))"""
    last = [None]

    def step():
        if probe is None:
            last[0] = predicate()
            return last[0]
        last[0] = probe()
        return predicate(last[0])

    if not poll_until(step, timeout):
        fail("waited %g s for %s; last seen: %r" % (timeout, what, last[0]))
    return last[0]


# ---------------------------------------------------------------- vcmad

class Vcmad:
    """Start vcmad with the given config text in a temporary runtime directory; stop it
    and check it exits cleanly. Ready when it says so (sd_notify READY=1, sent once
    every socket listens): the sim socket d.sock, the control socket d.ctl_sock and
    the ivshmem sockets of [guest] sections exist then."""

    def __init__(self, vcmad, config, timeout=10, reuse=None, args=()):
        """reuse: a stopped (or killed) Vcmad whose directory this one starts in again
        (same runtime and state directory: a restart); args: more vcmad options."""
        self.dir = reuse.dir if reuse else tmpdir("vcma-test-")
        self.conf = os.path.join(self.dir, "vcmad.conf")
        with open(self.conf, "w") as f:
            f.write(config)
        self.rundir = os.path.join(self.dir, "run")
        self.state_dir = os.path.join(self.rundir, "state")  # vcmad's default with -r
        self.sock = os.path.join(self.rundir, "vcmad.sock")
        self.ctl_sock = os.path.join(self.rundir, "vcmad-ctl.sock")
        self.logpath = os.path.join(self.dir, "vcmad.log")
        self.log = open(self.logpath, "a" if reuse else "w")
        notify_path = os.path.join(self.dir, "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        self.proc = subprocess.Popen([vcmad, "-c", self.conf, "-r", self.rundir] + list(args),
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, NOTIFY_SOCKET=notify_path))
        _running.append(self.proc)
        deadline = time.monotonic() + timeout
        ready = False
        while not ready:
            left = deadline - time.monotonic()
            if self.proc.poll() is not None or left <= 0:
                fail("vcmad did not start (%s):\n%s" % ("exited %s" % self.proc.returncode if self.proc.poll()
                                                        is not None else "no READY=1 in %g s" % timeout,
                                                        self.logtext()))
            if select.select([notify], [], [], min(left, 0.1))[0]:
                ready = b"READY=1" in notify.recv(4096).split(b"\n")
        notify.close()
        os.unlink(notify_path)

    def logtext(self):
        self.log.flush()
        with open(self.logpath) as f:
            return f.read()

    def log_mark(self):
        """Where the log ends now: log_since(mark) is what was logged after this."""
        return len(self.logtext())

    def log_since(self, mark):
        return self.logtext()[mark:]

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        """SIGKILL, as a crash: nothing of vcmad's runs after it."""
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        """SIGTERM; vcmad must exit 0 and remove its socket."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            fail("vcmad did not stop within 10 s of SIGTERM")
        if rc != 0:
            # the end of the log first (a sanitizer's report, an assertion): CI shows
            # only the start of a long failure message
            text = self.logtext()
            tail = "\n".join(text.splitlines()[-40:])
            fail("vcmad exited with %d after SIGTERM; the end of its log:\n%s\n--- its whole log:\n%s"
                 % (rc, tail, text))
        if os.path.exists(self.sock):
            fail("vcmad left its socket behind")
        return self.logtext()


# ---------------------------------------------------------------- vcmactl, vcma-simvm

def set_tools(vcmactl=None, simvm=None):
    """Name the vcmactl and vcma-simvm binaries, once per test, for ctl() and simvm()."""
    if vcmactl:
        _tools["vcmactl"] = vcmactl
    if simvm:
        _tools["simvm"] = simvm


def _tool(name):
    if not _tools[name]:
        fail("test bug: %s used before set_tools(%s=...)" % (name, name))
    return _tools[name]


def vcmactl(d, *args, timeout=60, **run_kw):
    """Run vcmactl against d's control socket; returns the CompletedProcess (text)."""
    return subprocess.run([_tool("vcmactl"), "--socket", d.ctl_sock] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout, **run_kw)


def ctl(d, *args, timeout=60):
    """vcmactl --json ARGS against d: fails unless it exits 0 printing one JSON object
    per line; returns the last (the only one, but for watch)."""
    r = vcmactl(d, "--json", *args, timeout=timeout)
    what = "vcmactl --json " + " ".join(str(a) for a in args)
    if r.returncode != 0:
        fail("%s exited %d: %s" % (what, r.returncode, r.stderr.strip()))
    lines = r.stdout.splitlines()
    if not lines:
        fail(what + " printed nothing")
    try:
        return [json.loads(line) for line in lines][-1]
    except ValueError as e:
        fail("%s printed something that is not one JSON object per line: %s\n%s" % (what, e, r.stdout[:500]))


def frames(d, pool="main"):
    """The frame counts of a pool (vcmactl pool show)."""
    return ctl(d, "pool", "show", pool)["frames"]


def lent(f):
    """Lent frames in a frames dict."""
    return f["lent_free"] + f["lent_used"]


def guests(d):
    """vcmactl guests, by name."""
    return {g["name"]: g for g in ctl(d, "guests")["guests"]}


def wait_attached(d, *names, timeout=30):
    """Wait until vcmad lists every one of names as an attached guest; returns guests(d)."""
    return wait_until(lambda g: set(names) <= set(g), timeout, "guest(s) %s attached" % ", ".join(names),
                      probe=lambda: guests(d))


def simvm(d, name, *args, as_json=True, **popen_kw):
    """Start vcma-simvm NAME against d's socket (with --json unless as_json is False);
    stdout and stderr are pipes (text) unless popen_kw says otherwise. It is killed at
    exit if still running."""
    kw = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kw.update(popen_kw)
    cmd = [_tool("simvm"), "--socket", d.sock, "--name", name] + (["--json"] if as_json else [])
    p = subprocess.Popen(cmd + [str(a) for a in args], **kw)
    _running.append(p)
    return p


def vm_summary(p, what, timeout=120, expect_rc=0):
    """Wait for a vcma-simvm started with --json; fail unless it exits expect_rc (None:
    any) and prints its JSON summary, which is returned."""
    out, err = p.communicate(timeout=timeout)
    if expect_rc is not None and p.returncode != expect_rc:
        fail("%s exited %d: %s" % (what, p.returncode, err.strip()[-1500:]))
    try:
        return json.loads(out)
    except ValueError:
        fail("%s printed no JSON summary (exit %d): %r %s" % (what, p.returncode, out[:300], err[-500:]))


class CtlConn:
    """A raw connection to vcmad's control socket, for what vcmactl never sends."""

    def __init__(self, d, timeout=10):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(d.ctl_sock)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def line(self):
        """The next response line as JSON, or None once vcmad closed the connection."""
        while b"\n" not in self.buf:
            try:
                chunk = self.s.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def ask(self, data):
        self.send(data + b"\n")
        return self.line()

    def closed(self):
        """True once vcmad closed the connection (EOF or reset after its last line)."""
        try:
            return self.s.recv(65536) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


# ---------------------------------------------------------------- the raw protocol

class RingClient:
    """A guest driver's side of the request ring (PROTOCOL.md 4-5) over a mapped shared
    area m, the kick eventfd and the irq eventfd: one request at a time, each answered
    with an irq (rsp_event asks for it)."""

    def __init__(self, m, kick_fd, irq_fd, first_id=1000):
        self.m, self.kick_fd, self.irq_fd = m, kick_fd, irq_fd
        self.ctrl = proto.CTRL.unpack(m)
        self.req_off, self.slots = self.ctrl.req_off, self.ctrl.req_slots
        self.n = 0  # requests published
        self.first_id = first_id

    def state(self):
        return proto.CTRL.get(self.m, 0, "state")

    def ring(self, field):
        return proto.RING_HDR.get(self.m, self.req_off, field)

    def set_ring(self, field, value):
        proto.RING_HDR.put(self.m, self.req_off, field, value)

    def kick(self):
        os.write(self.kick_fd, (1).to_bytes(8, "little"))

    def irq_pending(self, timeout):
        return bool(select.select([self.irq_fd], [], [], timeout)[0])

    def call(self, op, timeout=5, **req):
        """Publish one request (REQ fields as keywords), kick, wait for the irq and the
        response; returns the RSP namedtuple (fails on no irq or a wrong id)."""
        slot = proto.slot_offset(self.req_off, self.n, self.slots)
        rid = self.first_id + self.n
        proto.REQ.pack_into(self.m, slot, id=rid, op=op, **req)
        self.n += 1
        self.set_ring("rsp_event", self.n)  # irq me when this one is answered
        self.set_ring("req_prod", self.n)
        self.kick()
        deadline = time.monotonic() + timeout
        while True:
            if not self.irq_pending(max(0.0, deadline - time.monotonic())):
                fail("no irq for request %d (op %d) within %g s" % (self.n, op, timeout))
            os.read(self.irq_fd, 8)
            if self.ring("rsp_prod") == self.n:
                break
            if time.monotonic() > deadline:
                fail("irq without a response for request %d" % self.n)
        r = proto.RSP.unpack(self.m, slot)
        if r.id != rid:
            fail("response id %d for request %d" % (r.id, rid))
        return r

    def hello(self):
        return self.call(proto.Op.HELLO, arg0=proto.VERSION, arg1=proto.FEATURES_KNOWN)


class _SimSocket(socket.socket):
    """A sim attach socket that can carry the TOKEN it was given."""
    token = None


def sim_attach_raw(sock_path, name, role=proto.SimRole.GUEST, ram_bytes=0, refused_ok=False, flags=0):
    """Attach over the sim transport by hand: returns (socket, attach response, fds).
    A refusal fails the test unless refused_ok. With flags SIM_F_REATTACH the TOKEN that
    follows is read too, and the socket gets it as attribute `token` (the message)."""
    s = _SimSocket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(sock_path)
    s.send(proto.sim_attach(name, role=role, ram_bytes=ram_bytes, flags=flags))
    msg, fds, _, _ = socket.recv_fds(s, 256, 8)
    rsp = proto.SIM_ATTACH_RSP.unpack(msg)
    if rsp.status != proto.Status.OK and not refused_ok:
        fail("%s: attach refused with status %d" % (name, rsp.status))
    if rsp.status == proto.Status.OK and flags & proto.SIM_F_REATTACH:
        s.settimeout(10)
        s.token = proto.SIM_TOKEN.unpack(s.recv(256))
    return s, rsp, fds


def sim_reattach_raw(sock_path, name, guest_id, token, role=proto.SimRole.GUEST, ram_bytes=0):
    """REATTACH by hand (PROTOCOL.md 9.1, a GUEST's: no p2m): returns (socket, response,
    fds, the new TOKEN message or None, [(handle, mfn, frames), ...] the REGIONS)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(sock_path)
    s.settimeout(10)
    s.send(proto.SIM_REATTACH.pack(role=role, flags=proto.SIM_F_REATTACH, guest_id=guest_id, nruns=0,
                                   ram_bytes=ram_bytes, token=token, name=name.encode()))
    msg, fds, _, _ = socket.recv_fds(s, 256, 8)
    rsp = proto.SIM_ATTACH_RSP.unpack(msg)
    if rsp.status != proto.Status.OK:
        return s, rsp, fds, None, []
    tok = proto.SIM_TOKEN.unpack(s.recv(256))
    regions = []
    while len(regions) < rsp.nruns:
        data = s.recv(proto.SIM_P2M.size + proto.SIM_P2M_RUNS * proto.SIM_RUN.size)
        h = proto.SIM_P2M.unpack(data)
        if h.type != proto.SimMsg.REGIONS:
            fail("%s: reattach: a message of type %d among the REGIONS" % (name, h.type))
        regions += proto.sim_runs(data, proto.SIM_P2M.size, h.nruns)
    return s, rsp, fds, tok, regions


def query_pool(sock_path, pool):
    """Attach as a plain guest over the raw protocol and QUERY a pool.
    Returns (pool bytes, allocatable bytes, this guest's bytes)."""
    import mmap

    s, rsp, fds = sim_attach_raw(sock_path, "probe")
    m = mmap.mmap(fds[proto.SIM_FD_SHM], rsp.shm_size)
    ring = RingClient(m, fds[proto.SIM_FD_KICK], fds[proto.SIM_FD_IRQ], first_id=1)
    ring.hello()
    r = ring.call(proto.Op.QUERY, name=pool)
    if r.status != proto.Status.OK:
        fail("probe: QUERY %s: status %d" % (pool, r.status))
    for fd in fds:
        os.close(fd)
    m.close()
    s.close()
    return r.length, r.val0, r.val1


# ---------------------------------------------------------------- huge pages

NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"


def hugepages_free():
    """HugePages_Free in /proc/meminfo (default-size huge pages: 2 MiB on x86-64)."""
    try:
        with open("/proc/meminfo") as f:
            return int(next(line for line in f if line.startswith("HugePages_Free")).split()[1])
    except (OSError, StopIteration, ValueError):
        return 0


@contextlib.contextmanager
def hugepages(n):
    """Raise /proc/sys/vm/nr_hugepages by n (2 MiB pages) for the body and put the old
    value back however the body ends, even if the raise fell short. Yields how many huge
    pages are free once raised (0 when they cannot be had, e.g. not root): the caller
    decides whether that is enough, and skips that part (partial()) if not."""
    nr0 = None
    try:
        with open(NR_HUGEPAGES) as f:
            nr0 = int(f.read())
        with open(NR_HUGEPAGES, "w") as f:
            f.write(str(nr0 + n))
    except (OSError, ValueError):
        pass  # not raised (no permission, no hugetlb): nothing to restore, if nr0 is unchanged
    try:
        yield hugepages_free()
    finally:
        if nr0 is not None:
            try:
                with open(NR_HUGEPAGES) as f:
                    now = int(f.read())
                if now != nr0:
                    with open(NR_HUGEPAGES, "w") as f:
                        f.write(str(nr0))
            except (OSError, ValueError) as e:
                print("info: could not restore %s to %d: %s" % (NR_HUGEPAGES, nr0, e))
