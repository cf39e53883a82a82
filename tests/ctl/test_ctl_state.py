#!/usr/bin/env python3
"""vcmactl state verify DIR: a state directory checked without vcmad. A good one is OK
(exit 0, counts right), a frame owned twice and a region outside its pool are
violations (exit 1, named), a corrupt record is refused naming record and file
(exit 1), a torn newest transaction is a warning (exit 0) and the directory is left
exactly as it was; usage errors exit 2.

usage: test_ctl_state.py VCMACTL STORE_FIXTURE
"""
import atexit
import hashlib
import json
import os
import shutil
import subprocess
import sys

from vcmatest import check, fail, tmpdir

VCMACTL, FIXTURE = sys.argv[1], sys.argv[2]


def fixture(kind):
    d = tmpdir("vcma-state-%s-" % kind)
    atexit.register(shutil.rmtree, d, True)
    r = subprocess.run([FIXTURE, os.path.join(d, "state"), kind], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr, end="")
        sys.exit(99)
    return os.path.join(d, "state")


def verify(d, *extra):
    return subprocess.run([VCMACTL, "state", "verify", d] + list(extra), capture_output=True, text=True, timeout=60)


def snapshot(d):
    """every file's bytes, but only the names of lock files (verify registers as a reader
    in vcmad's lock.mdb, as LMDB readers do)"""
    return {f: f == "lock.mdb" or hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for f in sorted(os.listdir(d))}


good = fixture("good")
r = verify(good)
check(r.returncode == 0 and "OK:" in r.stdout, "a good state directory verifies (exit %d)" % r.returncode)
check("1 meta, 1 pools, 2 guests, 2 regions, 1 p2m runs, 1 lenders" in r.stdout,
      "the summary counts every record type: %r" % r.stdout.splitlines()[1:2])
check("last transaction 2" in r.stdout, "the summary names the last transaction")
j = json.loads(verify(good, "--json").stdout)
check(j["ok"] is True and j["violations"] == 0 and j["records"]["regions"] == 2 and j["last_txn"] == 2
      and j["dropped_txn"] is None, "--json: ok, no violations, 2 regions, last_txn 2")

d = fixture("owned-twice")
r = verify(d)
check(r.returncode == 1 and "owned twice" in r.stdout and "region 0x100000001" in r.stdout
      and "FAILED: 1 violation" in r.stdout, "a frame owned by a region and a p2m run is a violation (exit %d)"
      % r.returncode)
j = json.loads(verify(d, "--json").stdout)
check(j["ok"] is False and j["violations"] == 1 and "owned twice" in j["violation_list"][0],
      "--json lists the violation")

d = fixture("outside")
r = verify(d)
check(r.returncode == 1 and "region 0x200000001" in r.stdout and "outside its pool 0 (main" in r.stdout,
      "a region past its pool's end is a violation naming it (exit %d)" % r.returncode)

d = fixture("corrupt")
before = snapshot(d)
r = verify(d)
check(r.returncode == 1 and "record region 0x100000001: CRC mismatch" in r.stderr
      and os.path.join(d, "data.mdb") in r.stderr,
      "a corrupt record is refused, naming the record and the file: %s" % r.stderr.strip())
check(snapshot(d) == before, "verify changed nothing in the corrupt directory")

d = fixture("torn")
before = snapshot(d)
r = verify(d)
check(r.returncode == 0 and "warning:" in r.stdout and "dropped transaction 3, the newest, as torn" in r.stdout
      and "region 0x100000003 added" in r.stdout and "2 regions" in r.stdout and "OK:" in r.stdout,
      "a torn newest transaction is a warning naming it; the state before it verifies (exit %d): %s"
      % (r.returncode, r.stdout.strip()))
check(snapshot(d) == before, "verify left the torn directory as it was (data.mdb unchanged, no copy, no torn file)")

r = verify("/nonexistent/vcma-state")
check(r.returncode == 1 and "No such file" in r.stderr, "a missing directory fails with the reason")
for args in (["state"], ["state", "check", good], ["state", "verify"], ["state", "verify", good, "x"]):
    r = subprocess.run([VCMACTL] + args, capture_output=True, text=True)
    check(r.returncode == 2, "vcmactl %s is a usage error (exit %d)" % (" ".join(args[:2]), r.returncode))
print("PASS")
