"""Helpers for vcma integration tests: a vcmad in a temporary runtime directory."""
import atexit
import os
import signal
import subprocess
import sys
import tempfile
import time


_running = []


def _kill_leftovers():
    for p in _running:
        if p.poll() is None:
            p.kill()
            p.wait()


atexit.register(_kill_leftovers)


class Vcmad:
    """Start vcmad with the given config text; stop it and check it exits cleanly."""

    def __init__(self, vcmad, config):
        self.dir = tempfile.mkdtemp(prefix="vcma-test-")
        self.conf = os.path.join(self.dir, "vcmad.conf")
        with open(self.conf, "w") as f:
            f.write(config)
        self.rundir = os.path.join(self.dir, "run")
        self.sock = os.path.join(self.rundir, "vcmad.sock")
        self.logpath = os.path.join(self.dir, "vcmad.log")
        self.log = open(self.logpath, "w")
        self.proc = subprocess.Popen([vcmad, "-c", self.conf, "-r", self.rundir],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        _running.append(self.proc)
        deadline = time.time() + 10
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.time() > deadline:
                fail("vcmad did not start:\n" + self.logtext())
            time.sleep(0.02)

    def logtext(self):
        self.log.flush()
        with open(self.logpath) as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        """SIGTERM; vcmad must exit 0 and remove its socket."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            fail("vcmad did not stop within 10 s of SIGTERM")
        if rc != 0:
            fail("vcmad exited with %d after SIGTERM:\n%s" % (rc, self.logtext()))
        if os.path.exists(self.sock):
            fail("vcmad left its socket behind")
        return self.logtext()


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print("ok: " + msg)


def query_pool(sock_path, pool):
    """Attach as a plain guest over the raw protocol and QUERY a pool.
    Returns (pool bytes, allocatable bytes, this guest's bytes)."""
    import mmap
    import socket
    import struct

    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(sock_path)
    s.send(struct.pack("<IHHIIQ32s32s", 0x4d495356, 1, 1, 1, 0, 0, b"probe", b""))
    msg, fds, _, _ = socket.recv_fds(s, 256, 8)
    _, _, _, status, _, shm_size, _, _, _, _, _ = struct.unpack("<IHHiIQQQQII", msg)
    if status != 0:
        fail("probe attach refused with status %d" % status)
    m = mmap.mmap(fds[0], shm_size)
    req_off, slots = struct.unpack_from("<II", m, 40)

    def call(i, op, a0=0, a1=0, name=b""):
        slot = req_off + 64 + (i % slots) * 64
        struct.pack_into("<QIIQQQQ16s", m, slot, i + 1, op, 0, 0, 0, a0, a1, name)
        struct.pack_into("<I", m, req_off, i + 1)
        os.write(fds[1], struct.pack("<Q", 1))
        deadline = time.time() + 5
        while struct.unpack_from("<I", m, req_off + 8)[0] != i + 1:
            if time.time() > deadline:
                fail("probe: no answer from vcmad")
            time.sleep(0.001)
        return struct.unpack_from("<QiIQQQQQQ", m, slot)

    call(0, 1, a0=1 << 16, a1=3)
    r = call(1, 4, name=pool.encode())
    if r[1] != 0:
        fail("probe: QUERY %s: status %d" % (pool, r[1]))
    for fd in fds:
        os.close(fd)
    m.close()
    s.close()
    return r[6], r[7], r[8]
