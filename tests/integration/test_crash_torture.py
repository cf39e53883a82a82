#!/usr/bin/env python3
"""The crash-torture test (issue 16): vcmad killed with SIGKILL at a random moment of a
mixed workload, CYCLES times in the same state directory, and after each crash the state
directory it left checked against what its guests were told. What can be checked before
restart recovery exists (vcmad(8) STATE: a restarted vcmad moves the previous run's state
aside whole and starts afresh).

    test_crash_torture.py VCMAD SIMVM VCMACTL TORTURE_GUEST STATE_DUMP [CYCLES [SEED]]

Each cycle (seed = SEED + cycle, printed; CYCLES=1 SEED=s reruns cycle s-SEED alone):
vcmad starts (the first in a fresh directory, the others in the killed one's), three
checksumming vcma-simvm VMs of 16 MiB attach with their RAM lent from the 64 MiB pool
(lend_share 100%), and torture_guest allocates, fills, verifies and frees regions of
1-8 MiB, which vacates the VMs' pages; relend_idle_ms 20 lends them back in its idle
moments. After a delay drawn from the seed (0.2-1.5 s) vcmad is killed. Then:

  verify      `vcmactl --json state verify` finds no violation (no frame owned twice,
              no gfn backed twice, owners known) and its counts are the records
              state_dump reads; every VM's p2m covers its RAM exactly once
  nothing lost every region torture_guest's log says was ANSWERED and not FREEING is
              recorded for it, at the machine frames it was answered with
  nothing extra the guest's recorded regions are exactly those, plus:
              - at most one region it never heard of: the ALLOC in flight, granted and
                committed in the turn the crash cut before its answer went out
                (durable.h: the answer is held until the commit);
              - regions whose FREE was sent after the guest's last ANSWERED line
                (FREEING, maybe FREED). durable.h answers a FREE at once and deletes
                its record in the same turn's commit, so a crash before that commit
                keeps the record: a leak at worst, never a frame owned twice. A FREE
                sent before an ALLOC that was answered cannot be recorded any more:
                the ring is served in order, so the FREE's turn committed no later
                than the ALLOC's, and the ALLOC was answered only after its commit.
  contents    each VM's --json summary (it stops by itself when vcmad goes away:
              host_gone) reports no corrupt page and no pattern error up to the crash
              (it forgives a mismatch seen in its last 200 ms before it notices vcmad
              gone, as a detach's zeroing; see vcma-simvm.c host_left()); every region
              the guest got read as zeros and held its pattern when freed, and its
              "VERIFIED n bad" (the regions it still held, checked in the machine
              memory that outlives vcmad) says n = what it held, bad = 0
  set aside   the next vcmad logs that it moved the state aside, with the counts and
              the transaction the dump found, and that copy (STATE_DIR/previous-TXN)
              verifies with the same counts; it is then deleted (disk use stays bounded)

One line per cycle (seed, delay, regions answered/recorded, VM pages verified), and a
final line with the totals; over the run the VMs' pages must have been moved (vacated
or relent) and regions answered, or the workload did not do what it is for. The
ALLOC and awaited FREE times the guest saw are reported (info), not asserted. The
seed fixes the delay and the guest's choices, not the interleaving: a rerun cuts the
workload at about the same point, not at the same instruction."""
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

from vcmatest import Vcmad, check, fail, log, set_tools, simvm, vm_summary, wait_attached

if len(sys.argv) < 6:
    fail("usage: test_crash_torture.py VCMAD SIMVM VCMACTL TORTURE_GUEST STATE_DUMP [CYCLES [SEED]]")
VCMAD, SIMVM, VCMACTL, GUEST, DUMP = sys.argv[1:6]
CYCLES = int(sys.argv[6]) if len(sys.argv) > 6 else 20
SEED = int(sys.argv[7]) if len(sys.argv) > 7 else 1
set_tools(vcmactl=VCMACTL, simvm=SIMVM)

CONFIG = """
[daemon]
lend_share = 100%
relend_idle_ms = 20
[machine]
memory = 256M
[pool main]
size = 64M
"""
VMS = ("vm1", "vm2", "vm3")
VM_FRAMES = 16 * 256  # 16 MiB
GUEST_NAME = "torture"
ASIDE_RE = re.compile(r"state: (\S+)/data\.mdb held a previous run's ownership \(transaction (\d+): (\d+) guest\(s\), "
                      r"(\d+) region\(s\), (\d+) p2m run\(s\), (\d+) lender\(s\)\).* kept as (\S+)/data\.mdb")


def verify(state_dir):
    r = subprocess.run([VCMACTL, "--json", "state", "verify", state_dir], capture_output=True, text=True, timeout=60)
    try:
        v = json.loads(r.stdout)
    except ValueError:
        fail("state verify %s: exit %d, not JSON: %r %r" % (state_dir, r.returncode, r.stdout, r.stderr))
    return r.returncode, v


def dump(state_dir):
    r = subprocess.run([DUMP, state_dir], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        fail("state_dump %s: exit %d: %s" % (state_dir, r.returncode, r.stderr.strip()))
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    by = {}
    for rec in recs:
        by.setdefault(rec["type"], []).append(rec)
    return by


def read_guest_log(path):
    """The guest's log: answered {handle: (size, bus)}, the order of events, and its end."""
    g = {"answered": {}, "freeing": [], "freed": set(), "events": [], "id": None, "verified": None,
         "end": None, "problems": [], "alloc_us": [], "free_us": []}
    with open(path) as f:
        for line in f:
            w = line.split()
            if not w:
                continue
            if w[0] == "START":
                g["id"] = int(w[1])
            elif w[0] == "ANSWERED":
                h = int(w[1], 16)
                if h in g["answered"]:
                    g["problems"].append("handle %#x answered twice" % h)
                g["answered"][h] = (int(w[2]), int(w[3], 16))
                g["alloc_us"].append(int(w[4]))
                g["events"].append(("A", h))
            elif w[0] == "FREEING":
                h = int(w[1], 16)
                g["freeing"].append(h)
                g["events"].append(("F", h))
            elif w[0] == "FREED":
                g["freed"].add(int(w[1], 16))
                if w[3] == "sync":
                    g["free_us"].append(int(w[2]))
            elif w[0] == "END":
                g["end"] = int(w[1])
            elif w[0] == "VERIFIED":
                g["verified"] = (int(w[1]), int(w[2]))
            elif w[0] in ("BADPATTERN", "NOTZERO", "ERROR"):
                g["problems"].append(line.strip())
    return g


def check_p2m(by, guests_by_name, name, frames):
    """The VM's p2m runs cover gfns [0, frames) exactly once; returns the run count."""
    gid = guests_by_name[name]
    runs = sorted((r["first_gfn"], r["count"]) for r in by.get("p2m", []) if r["vm"] == gid)
    nxt = 0
    for gfn, count in runs:
        if gfn != nxt or count <= 0:
            return None
        nxt += count
    return len(runs) if nxt == frames else None


lat = {"alloc": [], "free": []}  # microseconds, as the guest measured them (reported, not asserted)


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, len(v) * p // 100)] if v else 0


totals = dict(answered=0, recorded=0, in_flight=0, free_kept=0, free_kept_answered=0, vm_pages=0, moved=0, pauses=0,
              guest_verified=0)
d = None
prev = None  # what the last cycle's dump found, for the next vcmad's set-aside
t_start = time.monotonic()
for cycle in range(CYCLES + 1):
    d = Vcmad(VCMAD, CONFIG, reuse=d)
    state = d.state_dir
    if prev is not None:
        # the killed vcmad's state, moved aside whole by this one
        m = ASIDE_RE.search(d.log_since(prev["mark"]))
        if not m:
            fail("cycle %d: the restarted vcmad does not say it moved the previous state aside:\n%s"
                 % (cycle - 1, d.log_since(prev["mark"])[-2000:]))
        txn, ng, nr, np, nl = (int(x) for x in m.group(2, 3, 4, 5, 6))
        aside = m.group(7)
        check((txn, ng, nr, np, nl) == (prev["txn"], prev["guests"], prev["regions"], prev["p2m"], prev["lenders"])
              and os.path.dirname(aside) == state,
              "cycle %d: the restarted vcmad moved the state aside as %s (transaction %d: %d guests, %d regions, "
              "%d p2m runs, %d lenders), as the dump found it" % (cycle - 1, os.path.basename(aside), txn, ng, nr, np,
                                                                  nl))
        rc, va = verify(aside)
        check(rc == 0 and va["ok"] and va["violations"] == 0 and va["records"] == prev["records"]
              and va["last_txn"] == prev["txn"],
              "cycle %d: the copy set aside verifies, with the counts verified after the crash" % (cycle - 1))
        shutil.rmtree(aside)
    if cycle == CYCLES:
        break

    seed = SEED + cycle
    rng = random.Random(seed)
    delay = rng.uniform(0.2, 1.5)
    log("cycle %d: seed %d, crash after %.3f s (rerun it alone: CYCLES=1 SEED=%d, scripts/run-torture.sh 1 %d)"
        % (cycle, seed, delay, seed, seed))
    glog = os.path.join(d.dir, "guest-%d.log" % cycle)
    vms = [simvm(d, name, "--ram", "16M", "--alloc", "none", "--vcpus", "1", "--duration", "600",
                 "--seed", str(seed * 10 + i)) for i, name in enumerate(VMS)]
    guest = subprocess.Popen([GUEST, d.sock, GUEST_NAME, "main", str(seed), glog, "6", "300"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_attached(d, GUEST_NAME, *VMS)
    # the moment of the crash is the thing under test: a random point of the workload
    time.sleep(delay)
    if not d.alive():
        fail("cycle %d (seed %d): vcmad died by itself before the kill (exit %s):\n%s"
             % (cycle, seed, d.proc.returncode, d.logtext()[-3000:]))
    d.kill()
    mark = d.log_mark()

    # the VMs and the guest stop by themselves once vcmad is gone
    vm_pages = moved = pauses = 0
    for name, p in zip(VMS, vms):
        s = vm_summary(p, "cycle %d: %s" % (cycle, name), timeout=60, expect_rc=None)
        if not s["host_gone"] or s["corruptions"] or s["pattern_errors"]:
            fail("cycle %d (seed %d): %s: host_gone %s, %d corrupt page(s), %d pattern error(s) (exit %d)"
                 % (cycle, seed, name, s["host_gone"], s["corruptions"], s["pattern_errors"], p.returncode))
        vm_pages += s["vcpu_pages_verified"]
        moved += s["remapped_pages"]
        pauses += s["pauses"]["count"]
    try:
        gout, gerr = guest.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        guest.kill()
        fail("cycle %d (seed %d): torture_guest did not stop within 60 s of vcmad's death" % (cycle, seed))
    g = read_guest_log(glog)
    if guest.returncode != 0 or g["problems"] or g["verified"] is None:
        fail("cycle %d (seed %d): torture_guest exit %d, problems %s, verified %s: %s"
             % (cycle, seed, guest.returncode, g["problems"], g["verified"], gerr.strip()[-800:]))

    # the state directory the crash left
    rc, v = verify(state)
    if rc != 0 or not v["ok"] or v["violations"] != 0:
        fail("cycle %d (seed %d): state verify: exit %d, %s" % (cycle, seed, rc, json.dumps(v)))
    by = dump(state)
    guests_by_name = {r["name"]: r["id"] for r in by.get("guest", [])}
    counts = {"meta": len(by.get("meta", [])), "pools": len(by.get("pool", [])),
              "guests": len(by.get("guest", [])), "regions": len(by.get("region", [])),
              "p2m_runs": len(by.get("p2m", [])), "lenders": len(by.get("lender", []))}
    if counts != v["records"] or set(guests_by_name) != set(VMS) | {GUEST_NAME} \
            or guests_by_name[GUEST_NAME] != g["id"]:
        fail("cycle %d (seed %d): the dump (%s, guests %s) is not what verify counted (%s), or not these guests "
             "(torture_guest is id %s)" % (cycle, seed, counts, guests_by_name, v["records"], g["id"]))
    for name in VMS:
        if check_p2m(by, guests_by_name, name, VM_FRAMES) is None:
            fail("cycle %d (seed %d): %s's p2m does not cover its %d pages exactly once: %s"
                 % (cycle, seed, name, VM_FRAMES,
                    [r for r in by.get("p2m", []) if r["vm"] == guests_by_name[name]]))
    if check_p2m(by, guests_by_name, GUEST_NAME, 1) is None:
        fail("cycle %d (seed %d): torture_guest's one page of RAM is not backed once" % (cycle, seed))
    others = [r for r in by.get("region", []) if r["guest"] != g["id"]]
    if others:
        fail("cycle %d (seed %d): regions recorded for guests that never allocated: %s" % (cycle, seed, others))

    recorded = {r["handle"]: r for r in by.get("region", [])}
    freeing = set(g["freeing"])
    held = {h: sv for h, sv in g["answered"].items() if h not in freeing}
    lost = sorted(h for h in held if h not in recorded)
    if lost:
        fail("cycle %d (seed %d): LOST: region(s) %s answered and never freed are not recorded"
             % (cycle, seed, ", ".join("%#x" % h for h in lost)))
    wrong = [(h, held[h], recorded[h]) for h in held
             if (recorded[h]["first_mfn"] * 4096, recorded[h]["frames"] * 4096) != (held[h][1], held[h][0])]
    if wrong:
        fail("cycle %d (seed %d): region(s) recorded at other frames than the guest was answered: %s"
             % (cycle, seed, wrong))
    last_answer = max((i for i, (kind, _) in enumerate(g["events"]) if kind == "A"), default=-1)
    may_be_kept = {h for kind, h in g["events"][last_answer + 1:] if kind == "F"}
    extra = set(recorded) - set(held)
    kept_freed = extra & freeing
    unknown = extra - set(g["answered"])
    stale = kept_freed - may_be_kept
    if stale:
        fail("cycle %d (seed %d): region(s) %s still recorded although an ALLOC sent after their FREE was answered"
             % (cycle, seed, ", ".join("%#x" % h for h in sorted(stale))))
    if len(unknown) > 1:
        fail("cycle %d (seed %d): %d regions recorded that the guest never heard of (at most the one ALLOC in "
             "flight): %s" % (cycle, seed, len(unknown), ", ".join("%#x" % h for h in sorted(unknown))))
    if g["verified"] != (len(held), 0):
        fail("cycle %d (seed %d): torture_guest says VERIFIED %d %d; its log says it held %d region(s)"
             % (cycle, seed, g["verified"][0], g["verified"][1], len(held)))

    kept_answered = kept_freed & g["freed"]
    print("cycle %d: seed %d, crash after %.3f s: %d region(s) answered, %d held, %d recorded (%d in flight, %d "
          "freed but not yet committed, %d of them after the guest had the FREE's answer), txn %d; VMs verified "
          "%d pages, moved %d in %d pause(s); guest verified %d region(s) after the crash: ok"
          % (cycle, seed, delay, len(g["answered"]), len(held), len(recorded), len(unknown), len(kept_freed),
             len(kept_answered), by["meta"][0]["last_txn"], vm_pages, moved, pauses, g["verified"][0]), flush=True)
    totals["answered"] += len(g["answered"])
    totals["recorded"] += len(recorded)
    totals["in_flight"] += len(unknown)
    totals["free_kept"] += len(kept_freed)
    totals["free_kept_answered"] += len(kept_answered)
    totals["vm_pages"] += vm_pages
    totals["moved"] += moved
    totals["pauses"] += pauses
    totals["guest_verified"] += g["verified"][0]
    lat["alloc"] += g["alloc_us"]
    lat["free"] += g["free_us"]
    prev = {"mark": mark, "txn": by["meta"][0]["last_txn"], "guests": counts["guests"], "regions": counts["regions"],
            "p2m": counts["p2m_runs"], "lenders": counts["lenders"], "records": v["records"]}
    if not os.environ.get("VCMA_TORTURE_KEEP"):
        os.unlink(glog)

d.stop()
log("as the guest saw them: ALLOC answered (1-8 MiB, vacating) p50 %d us, p99 %d us, max %d us; awaited FREE "
    "p50 %d us, p99 %d us, max %d us" % (pct(lat["alloc"], 50), pct(lat["alloc"], 99), max(lat["alloc"], default=0),
                              pct(lat["free"], 50), pct(lat["free"], 99), max(lat["free"], default=0)))
check(totals["answered"] > 0 and totals["moved"] > 0,
      "the workload did its job: %d regions answered, %d VM pages moved (vacated or relent) over the run"
      % (totals["answered"], totals["moved"]))
print("crash-torture: %d cycle(s) from seed %d in %.0f s: no violation, nothing lost; %d region(s) answered, %d "
      "recorded at the crashes (%d in flight, %d freed but not yet committed, %d of them answered), %d held "
      "region(s) verified after the crashes, VMs verified %d pages and moved %d in %d pause(s)"
      % (CYCLES, SEED, time.monotonic() - t_start, totals["answered"], totals["recorded"], totals["in_flight"],
         totals["free_kept"], totals["free_kept_answered"], totals["guest_verified"], totals["vm_pages"],
         totals["moved"], totals["pauses"]))
print("PASS")
