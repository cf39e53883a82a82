#!/usr/bin/env python3
"""Hostile guests against vcmad: each protocol violation gets its guest cut off with a
logged reason; attach abuse is refused; bad-but-valid requests get status codes; a
well-behaved guest running beside them sees no error; vcmad stays up throughout."""
import subprocess
import sys

from vcmatest import Vcmad, check, wait_until

VCMAD, HOSTILE = sys.argv[1], sys.argv[2]

CONFIG = """
[daemon]
max_guests = 32
[machine]
memory = 256M
[limits]
request_rate = 2000
request_burst = 256
max_ram_per_guest = 64M
[pool main]
size = 64M
"""

CUT_OFF = {
    "overflow": "request ring overflow",
    "backwards": "request ring overflow",
    "unknown-op": "unknown op",
    "flags": "nonzero flags",
    "reserved": "FREE with nonzero unused fields",
    "name": "malformed pool name",
    "align": "alignment order above 18",
    "flood": "flooding",
    "kickstorm": "flooding",
    "socket": "unexpected message on the attach socket",
}



def violations(text, sc):
    """The protocol violations logged for guest sc (each scenario attaches under its name)."""
    return [line for line in text.splitlines() if "(%s): protocol violation" % sc in line]


d = Vcmad(VCMAD, CONFIG)
good = subprocess.Popen([HOSTILE, d.sock, "good"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
for sc, reason in CUT_OFF.items():
    mark = d.log_mark()  # only what this scenario makes vcmad log counts for it
    r = subprocess.run([HOSTILE, d.sock, sc], capture_output=True, text=True, timeout=60)
    sys.stdout.write(r.stdout + r.stderr)
    check(r.returncode == 0, "%s: vcmad cut the guest off (ctrl.state DEAD, socket closed)" % sc)
    lines = wait_until(lambda: violations(d.log_since(mark), sc), 10, "vcmad to log why it cut %s off" % sc)
    check(len(lines) == 1 and reason in lines[0], "%s: the log names the reason (%s): %s" % (sc, reason, lines))
    check(d.alive(), "%s: vcmad is still running" % sc)
for sc in ("oversized", "stale", "bad-attach"):
    r = subprocess.run([HOSTILE, d.sock, sc], capture_output=True, text=True, timeout=60)
    sys.stdout.write(r.stdout + r.stderr)
    check(r.returncode == 0, "%s: answered with the documented status codes" % sc)
out, _ = good.communicate(timeout=60)
sys.stdout.write(out)
check(good.returncode == 0, "the well-behaved guest beside them saw no error")
text = d.stop()
check(text.count("protocol violation") == len(CUT_OFF), "one logged violation per hostile guest")
check("attach refused" in text, "attach abuse was logged")
print("PASS")
