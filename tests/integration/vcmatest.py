"""Helpers for vcma integration tests: a vcmad in a temporary runtime directory."""
import os
import signal
import subprocess
import sys
import tempfile
import time


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
