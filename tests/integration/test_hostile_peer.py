#!/usr/bin/env python3
"""Hostile peers against the promises PROTOCOL.md makes about shared fds, limits,
identity and shutdown (each part fails on a vcmad without the matching fix):

1. a guest that makes its irq eventfd blocking and fills it, or makes its kick
   eventfd blocking and reads it from two threads, cannot block vcmad: a good guest
   beside it keeps being served, and SIGTERM still stops vcmad;
2. quotas and per-guest byte limits count ALLOCs that wait for a vacate: a batch of
   63 ALLOCs of 8 MiB into a lent-out pool gets exactly quota / 8 MiB of them;
3. a guest's identity comes from the config and its credentials: an unprivileged
   peer cannot claim a class, a QEMU guest's name, the reserved name, the VMM role or
   a configured guest's name, nor a name in use;
4. QUERY of another class's pool is ACCESS; on SIGTERM guests go CLOSING, get a
   SHUTDOWN event and SHUTDOWN answers, and keep their regions until they detach (or
   vcmad exits after its grace period, leaving them as they are); VMM answers with
   runs or a status they may not carry are violations.

usage: test_hostile_peer.py VCMAD HOSTILE_GUEST SIMVM VCMACTL
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

from vcmatest import Vcmad, check, fail

VCMAD, HOSTILE, SIMVM, VCMACTL = sys.argv[1:5]
NOBODY = 65534


def hostile(d, scenario, uid=None, timeout=60):
    args = [HOSTILE] + (["--uid", str(uid)] if uid is not None else []) + [d.sock, scenario]
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    sys.stdout.write(r.stdout + r.stderr)
    return r


def ctl(d, *args):
    r = subprocess.run([VCMACTL, "--socket", os.path.join(d.rundir, "vcmad-ctl.sock"), "--json", *args],
                       capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        fail("vcmactl %s: %s" % (" ".join(args), r.stderr))
    return json.loads(r.stdout)


def wait_for(pred, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    fail("timed out waiting: " + what)


def stop_within(d, seconds):
    """SIGTERM; vcmad must exit 0 within `seconds`. Returns how long it took."""
    t0 = time.time()
    d.proc.send_signal(signal.SIGTERM)
    try:
        rc = d.proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        fail("vcmad did not exit within %.0f s of SIGTERM (blocked?):\n%s" % (seconds, d.logtext()[-2000:]))
    check(rc == 0, "vcmad exited 0 after SIGTERM")
    return time.time() - t0


def fill_pool(d, ram):
    vm = subprocess.Popen([SIMVM, "--socket", d.sock, "--name", "lender", "--ram", ram, "--vcpus", "1",
                           "--alloc", "none", "--duration", "120", "--json"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (lambda f: f["lent_used"] + f["lent_free"] == f["total"])(
        ctl(d, "pool", "show", "main")["frames"]), 30, "the lender VM's RAM to fill pool main")
    return vm


def batch(d):
    r = hostile(d, "batch-quota", timeout=120)
    check(r.returncode == 0, "batch-quota: every ALLOC of the batch was answered")
    line = [x for x in r.stdout.splitlines() if "batch-quota: posted" in x][0]
    return dict(re.findall(r"(\w+)=(\d+)", line))


# ---- 1, 2, 4: fds, promised bytes, QUERY, CLOSING ----
CONFIG = """
[daemon]
max_guests = 32
lend_share = 100%
relend_idle_ms = 100000
shutdown_grace_ms = 20000
[machine]
memory = 1G
[limits]
request_rate = 2000
request_burst = 256
[pool main]
size = 128M
quota = 32M
[pool camera]
size = 16M
mode = exclusive
bind = class:camera
"""
d = Vcmad(VCMAD, CONFIG)
good = subprocess.Popen([HOSTILE, d.sock, "good"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
r = hostile(d, "irq-block")
check(r.returncode == 0, "irq-block: a guest that holds its irq eventfd full and blocking is cut off")
check("irq eventfd made blocking and held full" in d.logtext(), "irq-block: the log names the reason")
r = hostile(d, "kick-steal")
check(r.returncode == 0, "kick-steal: blocking readers on the kick eventfd do not block vcmad; still served")
out, _ = good.communicate(timeout=60)
sys.stdout.write(out)
check(good.returncode == 0, "the well-behaved guest beside them saw no error")
st = ctl(d, "status")
check(st["violations"] == 1 and st["guests"] == 0,
      "vcmad answers its control socket: one violation (irq-block), no guest left attached (%s)" % st)

lender = fill_pool(d, "128M")
z = batch(d)
check(z["ok"] == "4" and z["quota"] == "59",
      "63 ALLOCs of 8 MiB posted at once into a lent-out pool with a 32 MiB quota: 4 OK, 59 QUOTA (%s)" % z)
r = hostile(d, "query-access")
check(r.returncode == 0, "QUERY of a pool bound to another class answers ACCESS")
ANSWER = "an answer (PAUSED, REMAPPED, TRACKING, DROPPED) with"
for sc, why in (("vmm-paused-runs", ANSWER + " runs"),
                ("vmm-paused-status", ANSWER + " a bad status"),
                ("vmm-remapped-status", ANSWER + " a bad status"),
                ("vmm-report-status", "REPORT, REUSE or PIN with a status"),
                ("vmm-dirty-status", "DIRTY with a bad status"),
                ("vmm-dropped-runs", ANSWER + " runs"),
                ("vmm-tracking-status", ANSWER + " a bad status"),
                ("vmm-dirty-overlap", "VMM message runs overlap")):
    before = len(d.logtext())
    r = hostile(d, sc)
    check(r.returncode == 0 and why in d.logtext()[before:], "%s: cut off (%s)" % (sc, why))
lender.terminate()
lender.communicate(timeout=30)
wait_for(lambda: ctl(d, "pool", "show", "main")["frames"]["free"] == 32768, 10, "the lender's frames back")

closing = subprocess.Popen([HOSTILE, d.sock, "closing"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
if closing.stdout.readline().strip() != "ready":
    fail("the closing guest did not get ready")
took = stop_within(d, 10)
out, _ = closing.communicate(timeout=30)
sys.stdout.write(out)
check(closing.returncode == 0, "SIGTERM: CLOSING, a SHUTDOWN event, SHUTDOWN answers, the region intact until detach")
check(took < 5, "vcmad exited once its last guest detached (%.1f s, grace 20 s)" % took)
log = d.logtext()
check("closing: 1 guest(s) attached" in log, "vcmad logged that it waits for its guest")

# ---- closing-stay: vcmad leaves after its grace, the guest keeps its region ----
d = Vcmad(VCMAD, CONFIG.replace("shutdown_grace_ms = 20000", "shutdown_grace_ms = 500"))
closing = subprocess.Popen([HOSTILE, d.sock, "closing-stay"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
if closing.stdout.readline().strip() != "ready":
    fail("the closing-stay guest did not get ready")
took = stop_within(d, 10)
out, _ = closing.communicate(timeout=30)
sys.stdout.write(out)
check(closing.returncode == 0, "a guest that stays attached keeps its region's bytes after vcmad exits")
check(0.4 < took < 5, "vcmad waited its grace period (0.5 s) and exited (%.1f s)" % took)
check("still attached after 500 ms" in d.logtext(), "vcmad logged what it left behind")

# ---- 2: max_bytes_per_guest counts promised bytes too ----
d = Vcmad(VCMAD, CONFIG.replace("quota = 32M\n", "").replace("[limits]\n", "[limits]\nmax_bytes_per_guest = 48M\n"))
lender = fill_pool(d, "128M")
z = batch(d)
check(z["ok"] == "6" and z["limit"] == "57",
      "with max_bytes_per_guest = 48M the same batch gets 6 OK and 57 LIMIT (%s)" % z)
lender.terminate()
lender.communicate(timeout=30)
d.stop()

# ---- a VMM that never answers PAUSE does not hold its lent frames hostage ----
d = Vcmad(VCMAD, """
[daemon]
lend_share = 100%
pause_timeout_ms = 100
relend_idle_ms = 100000
[machine]
memory = 512M
[pool main]
size = 64M
""")
stuck = subprocess.Popen([SIMVM, "--socket", d.sock, "--name", "stuck", "--ram", "64M", "--vcpus", "1",
                          "--no-pause-ack", "--alloc", "none", "--duration", "30", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
wait_for(lambda: ctl(d, "pool", "show", "main")["frames"]["lent_used"] +
         ctl(d, "pool", "show", "main")["frames"]["lent_free"] == 16384, 30, "the stuck VM's RAM to fill pool main")


def ctl_alloc(size):
    t0 = time.time()
    r = subprocess.run([VCMACTL, "--socket", os.path.join(d.rundir, "vcmad-ctl.sock"), "--json", "alloc", "--pool",
                        "main", size], capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr, time.time() - t0


codes = [ctl_alloc("8M")[1] for _ in range(3)]
check(all("ETIMEDOUT" in c for c in codes), "three allocations that need the silent VM paused time out (%s)" % codes)
g = [x for x in ctl(d, "guests")["guests"] if x["name"] == "stuck"][0]
check(g["unresponsive"] and not g["lending"], "after three unanswered PAUSEs the VM is unresponsive and lent no more")
f = ctl(d, "pool", "show", "main")["frames"]
check(f["quarantined"] == 16384 and f["claimed"] == 0,
      "its 16384 lent frames are kept out of allocations, shown apart from frames being vacated (%s)" % f)
# Refused without a PAUSE: a PAUSE to this VM could only end in ETIMEDOUT (it never
# answers) and in one more "did not answer PAUSE" line once pause_timeout_ms has passed.
# No wall-clock bound: under a sanitizer on a busy host vcmactl's start alone can take
# longer than the 100 ms timeout.
missed = d.logtext().count("did not answer PAUSE")
rc, out, took = ctl_alloc("8M")
time.sleep(0.5)  # five pause timeouts: a PAUSE sent for this ALLOC has been given up by now
check(rc != 0 and "ENOSPC" in out and "ETIMEDOUT" not in out and d.logtext().count("did not answer PAUSE") == missed,
      "its frames are kept out of allocations: the next one is refused with ENOSPC and no PAUSE (%.0f ms, %s)"
      % (took * 1e3, out.strip()))
check("left 3 PAUSEs in a row unanswered" in d.logtext(), "vcmad logged the VM as unresponsive")
stuck.terminate()
stuck.communicate(timeout=30)
f = wait_for(lambda: (lambda f: f if f["free"] == 16384 else None)(ctl(d, "pool", "show", "main")["frames"]), 10,
             "the unresponsive VM's frames to come back")
check(f["claimed"] == 0 and f["quarantined"] == 0,
      "when it detaches its frames are free and nothing stays claimed or quarantined (%s)" % f)
rc, out, took = ctl_alloc("8M")
check(rc == 0, "and the pool serves allocations again")

# ---- control clients that hold every slot with an unfinished line, or with nothing ----
import socket  # noqa: E402
hogs = []
for i in range(16):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.path.join(d.rundir, "vcmad-ctl.sock"))
    if i % 2:
        s.sendall(b'{"version":1,"cmd":')  # never finished
    hogs.append(s)
time.sleep(1.1)  # the hogs must look idle for a second (the eviction threshold) before one is closed
t0 = time.time()
st = ctl(d, "stats")["daemon"]["ctl"]
check(time.time() - t0 < 5 and st["evicted"] == 1,
      "16 clients holding every slot idle do not lock vcmactl out: the idlest is closed (%s)" % st)
for s in hogs:
    s.close()
d.stop()

# ---- 3: identity ----
IDENTITY = """
[daemon]
attach_group = nogroup
[machine]
memory = 256M
[pool main]
size = 32M
[pool camera]
size = 8M
mode = exclusive
bind = class:camera
[pool display]
size = 8M
mode = exclusive
bind = class:display
[guest ivi]
backend = sim
class = display
[guest cam0]
backend = qemu
class = camera
[guest friend]
backend = sim
class = camera
users = %d
[guest friend2]
backend = sim
class = camera
users = nobody
""" % NOBODY
d = Vcmad(VCMAD, IDENTITY)
os.chmod(d.dir, 0o711)  # the unprivileged peer must reach the socket; the group decides
r = hostile(d, "identity", uid=NOBODY)
check(r.returncode == 0, "an unprivileged peer cannot claim a class, a QEMU guest's or a configured guest's name, "
      "vcmactl, the VMM role or a name in use; a configured guest listing its uid attaches with its class")
r = hostile(d, "identity-root")
check(r.returncode == 0, "root: a configured guest's name with another class, vcmactl and a QEMU guest's name are "
      "refused; the configured name attaches with the configured class")
log = d.stop()
check("may not attach as" in log, "refusals are logged with the peer's pid and uid")
print("PASS")
