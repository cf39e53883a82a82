#!/usr/bin/env python3
"""libvcma's posted FREEs against a real vcmad (posted_free.c): a FREE posted then an
ALLOC that needs the same memory succeeds, stray and double frees fail at once,
200 frees back to back wait for room in an 8-slot ring without overflowing it, and
vcma_detach() returns only after its FREEs were answered; vcmad sees no violation."""
import subprocess
import sys

from vcmatest import Vcmad, check

VCMAD, POSTED = sys.argv[1], sys.argv[2]

CONFIG = """
[limits]
ring_slots = 8
[machine]
memory = 256M
[pool tight]
size = 4M
[pool many]
size = 64M
"""

d = Vcmad(VCMAD, CONFIG)
p = subprocess.run([POSTED, d.sock], capture_output=True, text=True, timeout=120)
sys.stderr.write(p.stderr)
check(p.returncode == 0, "posted_free exited %d" % p.returncode)
log = d.stop()
check("violation" not in log, "vcmad saw a protocol violation:\n" + log)
print("ok: posted frees against vcmad")
