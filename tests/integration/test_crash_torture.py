#!/usr/bin/env python3
"""The crash-torture test (issue 16): vcmad killed with SIGKILL at a random moment of a
mixed workload, CYCLES times in the same state directory and machine memory, and
restarted each time (restore.h, PROTOCOL.md §9.1 "sim: restart and reattach").

    test_crash_torture.py VCMAD SIMVM VCMACTL TORTURE_GUEST STATE_DUMP [CYCLES [SEED [MODE]]]

MODE (or $VCMA_TORTURE_MODE) is one of:

  reattach  (the default) the clients survive every restart: they reattach, are
            taken back with everything they held, and go on. Its "answered twice"
            check found a restarted vcmad issuing again handles freed before the crash
            (fixed: the store records how far handle generations went).
  reclaim   the clients stop when vcmad goes; each cycle starts new ones. The
            restarted vcmad holds what it took back for reattach_grace_ms (small),
            then reclaims all of it. Described last, below.
The suite runs 20 cycles of each.

---- reattach ----

One set of clients runs across all the cycles: three checksumming vcma-simvm VMs of 16
MiB with their RAM lent from the 64 MiB pool (lend_share 100%), and torture_guest, which
allocates, fills, verifies and frees regions of 1-8 MiB, which vacates the VMs' pages;
relend_idle_ms 20 lends them back in its idle moments. All of them ask for a reattach
token. Each cycle (seed = SEED + cycle, printed; CYCLES=1 SEED=s reruns with cycle
s-SEED's delay and guest seed first) waits a delay drawn from the seed (0.2-1.5 s) and
kills vcmad. Then, while the clients wait for it (they keep running: the VMs' vCPUs on
their RAM, the guest with its regions, all in the machine memory file that outlives
vcmad):

  verify      `vcmactl --json state verify` finds no violation (no frame owned twice,
              no gfn backed twice, owners known) and its counts are the records
              state_dump reads (the four clients, same ids all along, no other); every
              VM's p2m covers its RAM exactly once
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
                than the ALLOC's, and the ALLOC was answered only after its commit
                (a FREE made again after a reattach goes out before any later ALLOC)

and vcmad is started again in the same directories (reattach_grace_ms GRACE_MS):

  taken back  it logs that the store holds a previous run's ownership with the guest,
              region and p2m run counts the dump found, and that it took back exactly
              those guests, regions and VMs; nothing is set aside
  reattached  every client is logged "guest N (NAME) reattached ... ms after the
              restart: K region(s) and its RAM kept" with the dump's id and K = the
              regions the dump has for it; none is reclaimed (no "detached (not taken
              back ...)"); stats: restored_guests/regions/vms as the dump, restore_back
              4, restore_reclaimed 0, nobody waiting, reclaims 0; the VMs still run
  guest       torture_guest's log: vcmad listed (LISTED) exactly the dump's regions
              for it (handles, frames, sizes), none of its held regions is MISSING,
              and "REATTACHED n 0": the n regions it held, every pattern intact. It
              then holds still (its "hold" mode) while vcmad's live list of its
              regions becomes exactly what it holds: its held regions (same handles
              and frames), plus a region whose FREE failed across the restart and is
              made again after (RETRY free/free_sync), minus nothing; a region granted
              to an ALLOC in flight at the crash (listed, never answered) and the
              posted FREEs libvcma sends again must be gone (vcma.h "Host restarts")
  live state  the live state directory verifies (no frame owned twice) and every VM's
              p2m in it covers its RAM once

then the guest is told to go on (SIGUSR1) and the next cycle's workload runs. At the
end, before the clients stop, stats count no reclaim; then they are stopped (SIGTERM):
each VM's --json summary shows 0 corrupt pages, 0 pattern errors, 0 errors and
reattaches = CYCLES; torture_guest exits 0, "VERIFIED n 0" with n what it held, no
BADPATTERN, NOTZERO, MISSING or ERROR over the whole run, and every call that failed
across a restart was retried (RETRY), never counted as a failure.

One line per cycle (seed, delay, regions answered/recorded, what the restart took back,
reattach times), and a final line with the totals; over the run the VMs' pages must have
been moved (vacated or relent) and regions answered, or the workload did not do what it
is for. The seed fixes the delays and the guest's choices, not the interleaving.

---- reclaim ----

Each cycle (seed = SEED + cycle, printed; CYCLES=1 SEED=s reruns cycle s-SEED alone):
vcmad runs (the first in a fresh directory, the others restarted in the killed one's),
three checksumming vcma-simvm VMs of 16 MiB attach with their RAM lent from the 64 MiB
pool (lend_share 100%), and torture_guest allocates, fills, verifies and frees regions of
1-8 MiB, which vacates the VMs' pages; relend_idle_ms 20 lends them back in its idle
moments. After a delay drawn from the seed (0.2-1.5 s) vcmad is killed. Then:

  verify      `vcmactl --json state verify` finds no violation (no frame owned twice,
              no gfn backed twice, owners known) and its counts are the records
              state_dump reads (the four guests of this cycle, no other); every VM's
              p2m covers its RAM exactly once
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

and vcmad is started again in the same directories (RUNTIME_DIR/machine.mem kept):

  taken back  it logs that the store holds a previous run's ownership with the guest,
              region and p2m run counts the dump found, and that it took back exactly
              those guests, regions and VMs (every guest with a p2m); nothing is set
              aside (no STATE_DIR/previous-*, no "kept as" line)
  waiting     while they wait for a reattach (reattach_grace_ms, small here):
              `vcmactl guests` lists exactly the recorded guests (same ids and names,
              link "restored", each with its recorded regions and RAM), `vcmactl
              regions` exactly the recorded regions (same handles, owners and frames),
              the pool holds them and lends exactly the VMs' recorded pool frames, and
              `vcmactl alloc` is refused with EBUSY (if the record had a VM). A check
              whose answer differs fails unless vcmad had already logged the reclaim
              (below) when the answer came back: then the grace period ended first (a
              loaded machine), the cycle says so, and the next restarts get twice the
              grace period, up to 4800 ms; past that the test fails
  reclaimed   after the grace period, and not sooner than reattach_grace_ms after vcmad
              was started, each of them is logged detached (not taken back within
              reattach_grace_ms) with its regions freed and its RAM frames reclaimed,
              memory is handed out again; then vcmad lists no guest and no
              region, the pool has no region frame and no lent frame and is all free
              once scrubbed, ordinary memory is all free again (as in the fresh vcmad),
              stats count exactly those reclaims, the live state directory verifies
              with no guest, region or p2m run left, and a test allocation succeeds
              (and is freed) before the next cycle's workload starts

One line per cycle (seed, delay, regions answered/recorded, VM pages verified, what the
restart took back), and a final line with the totals; over the run the VMs' pages must
have been moved (vacated or relent) and regions answered, or the workload did not do
what it is for. The ALLOC and awaited FREE times the guest saw are reported (info), not
asserted. The seed fixes the delay and the guest's choices, not the interleaving: a rerun
cuts the workload at about the same point, not at the same instruction."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import vcmatest
from vcmatest import (Vcmad, check, ctl, fail, lent, log, poll_until, set_tools, simvm, vcmactl, vm_summary,
                      wait_attached, wait_until)

if len(sys.argv) < 6:
    fail("usage: test_crash_torture.py VCMAD SIMVM VCMACTL TORTURE_GUEST STATE_DUMP [CYCLES [SEED [MODE]]]")
VCMAD, SIMVM, VCMACTL, GUEST, DUMP = sys.argv[1:6]
CYCLES = int(sys.argv[6]) if len(sys.argv) > 6 else 20
SEED = int(sys.argv[7]) if len(sys.argv) > 7 else 1
MODE = sys.argv[8] if len(sys.argv) > 8 else os.environ.get("VCMA_TORTURE_MODE") or "reattach"
if MODE not in ("reclaim", "reattach"):
    fail("MODE is reclaim or reattach, not %r" % MODE)
set_tools(vcmactl=VCMACTL, simvm=SIMVM)

RECLAIM_GRACE_MS = 300  # reattach_grace_ms: nobody reattaches here, so every restart waits it out
GRACE_MAX_MS = 4800  # raised (doubled) up to this when a loaded machine is too slow to check within it


def reclaim_config(grace_ms):
    return """
[daemon]
lend_share = 100%%
relend_idle_ms = 20
reattach_grace_ms = %d
[machine]
memory = 256M
[pool main]
size = 64M
""" % grace_ms


POOL = "main"
VMS = ("vm1", "vm2", "vm3")
VM_FRAMES = 16 * 256  # 16 MiB
GUEST_NAME = "torture"
TAKING_RE = re.compile(r"state: (\S+)/data\.mdb holds a previous run's ownership \((\d+) guest\(s\), "
                       r"(\d+) region\(s\), (\d+) p2m run\(s\)\) and its machine memory was kept: taking it back")
TOOK_RE = re.compile(r"restore: took back (\d+) guest\(s\) with (\d+) region\(s\) and (\d+) VM\(s\); sim guests have "
                     r"(\d+) ms to reattach")
DETACHED_RE = re.compile(r"guest (\d+) \((\S*)\) detached \(not taken back within reattach_grace_ms of the restart\): "
                         r"(?:(\d+) region\(s\) freed, (\d+) RAM frame\(s\) reclaimed|nothing to reclaim)")
HANDING_OUT = "restore: every VM taken back is back or reclaimed: handing out memory again"
ASIDE_MARK = "kept as "  # the set-aside's log line (durable.c set_aside): must not happen any more


def reclaim_read_guest_log(path):
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


def reclaim_check_p2m(by, guests_by_name, name, frames):
    """The VM's p2m runs cover gfns [0, frames) exactly once; returns the run count."""
    gid = guests_by_name[name]
    runs = sorted((r["first_gfn"], r["count"]) for r in by.get("p2m", []) if r["vm"] == gid)
    nxt = 0
    for gfn, count in runs:
        if gfn != nxt or count <= 0:
            return None
        nxt += count
    return len(runs) if nxt == frames else None


def pool_of(d):
    return next((p for p in ctl(d, "pools")["pools"] if p["name"] == POOL), None)


def what_was_recorded(by):
    """What a restarted vcmad must take back, from the dump of the state a crash left."""
    pool = next(p for p in by["pool"] if p["name"] == POOL)
    base, end = pool["base_mfn"], pool["base_mfn"] + pool["frames"]
    guests = {r["id"]: {"name": r["name"], "regions": 0, "region_frames": 0, "ram": 0} for r in by.get("guest", [])}
    for r in by.get("region", []):
        guests[r["guest"]]["regions"] += 1
        guests[r["guest"]]["region_frames"] += r["frames"]
    in_pool = 0  # VMs' RAM on pool frames: lent
    for m in by.get("p2m", []):
        guests[m["vm"]]["ram"] += m["count"]
        in_pool += max(0, min(end, m["mfn"] + m["count"]) - max(base, m["mfn"]))
    return {"guests": guests,
            "regions": {r["handle"]: (r["guest"], r["pool"], r["first_mfn"], r["frames"])
                        for r in by.get("region", [])},
            "vms": {m["vm"] for m in by.get("p2m", [])},
            "p2m_runs": len(by.get("p2m", [])),
            "pool_id": pool["id"],
            "region_frames": sum(r["frames"] for r in by.get("region", [])),
            "lent": in_pool}


class Late(Exception):
    """The grace period ended before a check's answer came back: it shows nothing."""


def restart_checks(d, cycle, seed, rec, mark, t_launch, t_ready, grace_ms, ordinary_free):
    """The restarted vcmad d (started at t_launch or later with reattach_grace_ms
    grace_ms, ready at t_ready) took back what the crash left (rec, what_was_recorded()),
    held it while nobody reattached, and reclaimed all of it after the grace period.
    Returns what it saw; "late" says the checks while waiting could not all be done
    before the grace period ended (the machine is loaded): not a failure of vcmad's."""
    where = "cycle %d (seed %d): restart" % (cycle, seed)
    state = d.state_dir
    ng, nr, nv = len(rec["guests"]), len(rec["regions"]), len(rec["vms"])

    # ---- taken back, not set aside ----
    text = d.log_since(mark)
    m = TAKING_RE.search(text)
    if not m or m.group(1) != state:
        fail("%s: vcmad does not say it takes back the previous run's state in %s:\n%s" % (where, state, text[-3000:]))
    got = tuple(int(x) for x in m.group(2, 3, 4))
    if got != (ng, nr, rec["p2m_runs"]):
        fail("%s: vcmad says the store holds %d guest(s), %d region(s), %d p2m run(s); the dump after the crash "
             "found %d, %d, %d" % ((where,) + got + (ng, nr, rec["p2m_runs"])))
    m = TOOK_RE.search(text)
    if not m:
        fail("%s: vcmad does not say it took the state back:\n%s" % (where, text[-3000:]))
    got = tuple(int(x) for x in m.group(1, 2, 3, 4))
    if got != (ng, nr, nv, grace_ms):
        fail("%s: vcmad took back %d guest(s) with %d region(s) and %d VM(s), %d ms to reattach; the record has %d, "
             "%d, %d (grace %d ms)" % ((where,) + got + (ng, nr, nv, grace_ms)))
    aside = [p for p in os.listdir(state) if p.startswith("previous-")]
    if aside or ASIDE_MARK in text:
        fail("%s: the previous state was set aside (%s) although it was taken back:\n%s" % (where, aside, text[-3000:]))

    # ---- while they wait for a reattach ----
    def detached():
        return {int(m.group(1)): m for m in DETACHED_RE.finditer(d.log_since(mark))}

    def waiting(what, run, good, describe):
        """run() while the restored guests wait: its result if good(result). If not, a
        failure unless the grace period had ended by the time the answer came back
        (the detach lines are logged in the turn that reclaims, before any later
        answer): then Late. A passing check needs no such proof: after the grace
        period every answer here differs from the record's."""
        res = run()
        if good(res):
            return res
        if not detached():
            fail("%s: while the restored guests wait (%.0f ms after vcmad was ready, reattach_grace_ms %d), %s"
                 % (where, (time.monotonic() - t_ready) * 1000, grace_ms, describe(res)))
        raise Late("%s, %.0f ms after vcmad was ready" % (what, (time.monotonic() - t_ready) * 1000))

    want_guests = {gid: (g["name"], "restored", g["regions"], g["region_frames"] * 4096, g["ram"] * 4096)
                   for gid, g in rec["guests"].items()}
    want_regions = {h: (g, POOL if p == rec["pool_id"] else "pool %d" % p, mfn, n)
                    for h, (g, p, mfn, n) in rec["regions"].items()}

    def guests_seen(gl):
        return {g["id"]: (g["name"], g["link"], g["regions"], g["bytes"], g["ram_bytes"]) for g in gl}

    def regions_seen(rl):
        return {int(r["handle"], 16): (r["guest"], r["pool"], r["mfn"], r["frames"]) for r in rl["regions"]}

    late = None
    busy = "no VM in the record"
    try:
        waiting("guests", lambda: ctl(d, "guests")["guests"], lambda gl: guests_seen(gl) == want_guests,
                lambda gl: "vcmactl guests lists (name, link, regions, bytes, RAM) %s, the record %s"
                % (guests_seen(gl), want_guests))
        waiting("regions", lambda: ctl(d, "regions"),
                lambda rl: len(rl["regions"]) == rl["count"] == nr and regions_seen(rl) == want_regions,
                lambda rl: "vcmactl regions lists %d: (guest, pool, mfn, frames) %s, the record %s"
                % (rl["count"], {"%#x" % h: v for h, v in regions_seen(rl).items()},
                   {"%#x" % h: v for h, v in want_regions.items()}))
        waiting("pools", lambda: pool_of(d),
                lambda p: (p["regions"], p["frames"]["region"], lent(p["frames"])) == (nr, rec["region_frames"],
                                                                                       rec["lent"]),
                lambda p: "pool %s holds %d region(s) on %d frame(s) and lends %d frame(s); the record has %d "
                "region(s) on %d frame(s) and the VMs' RAM on %d of its frames"
                % (POOL, p["regions"], p["frames"]["region"], lent(p["frames"]), nr, rec["region_frames"],
                   rec["lent"]))
        if nv:
            def alloc():
                r = vcmactl(d, "--json", "alloc", "1M")
                if r.returncode == 0 and detached():  # granted after the grace period: give it back
                    vcmactl(d, "free", json.loads(r.stdout)["handle"])
                return r
            waiting("alloc", alloc, lambda r: r.returncode == 1 and "(EBUSY)" in r.stderr,
                    lambda r: "with %d restored VM(s) waiting, vcmactl alloc 1M was not refused with EBUSY: exit %d, "
                    "%r %r" % (nv, r.returncode, r.stdout.strip(), r.stderr.strip()))
            busy = "vcmactl alloc refused (EBUSY)"
    except Late as e:
        late = str(e)
    checked_ms = (time.monotonic() - t_ready) * 1000

    # ---- reclaimed after the grace period, not before ----
    got = wait_until(lambda x: set(x) >= set(rec["guests"]), 10 + grace_ms / 1000,
                     "every restored guest detached after reattach_grace_ms", probe=detached)
    # the timer runs from after vcmad started (t_launch or later), and the lines are
    # seen after they are logged: so no sooner than the grace period after t_launch
    held_ms = (time.monotonic() - t_launch) * 1000
    if held_ms < grace_ms:
        fail("%s: the restored guests were reclaimed within %.0f ms of starting vcmad, before reattach_grace_ms %d "
             "ended:\n%s" % (where, held_ms, grace_ms, d.log_since(mark)))
    for gid, g in rec["guests"].items():
        m = got[gid]
        freed = (int(m.group(3)), int(m.group(4))) if m.group(3) is not None else (0, 0)
        if m.group(2) != g["name"] or freed != (g["regions"], g["ram"]):
            fail("%s: %s; the record gives guest %d (%s) %d region(s) and %d RAM frame(s)"
                 % (where, m.group(0), gid, g["name"], g["regions"], g["ram"]))
    if set(got) != set(rec["guests"]):
        fail("%s: guests detached that were not taken back: %s" % (where, sorted(set(got) - set(rec["guests"]))))
    gl = ctl(d, "guests")["guests"]
    rl = ctl(d, "regions")
    if gl or rl["count"] or rl["regions"]:
        fail("%s: after the grace period vcmad still lists guest(s) %s and %d region(s) %s"
             % (where, [(g["id"], g["name"], g["link"]) for g in gl], rl["count"], rl["regions"]))
    p = pool_of(d)
    if p["regions"] or p["frames"]["region"] or lent(p["frames"]):
        fail("%s: after the grace period pool %s still has %d region(s), %d region frame(s), %d lent frame(s): %s"
             % (where, POOL, p["regions"], p["frames"]["region"], lent(p["frames"]), p["frames"]))
    wait_until(lambda f: f["free"] == f["total"], 10, "pool %s all free once the reclaimed frames are scrubbed" % POOL,
               probe=lambda: pool_of(d)["frames"])
    st = wait_until(lambda s: s["scrub_pending_frames"] == 0, 10, "the scrubber done",
                    probe=lambda: ctl(d, "stats")["daemon"])
    reclaims = sum(1 for g in rec["guests"].values() if g["regions"] or g["ram"])
    want = (reclaims, nr, sum(g["ram"] for g in rec["guests"].values()), ordinary_free, 0, 0)
    seen = (st["reclaims"], st["reclaimed_regions"], st["reclaimed_ram_frames"], st["ordinary_free_frames"],
            st["guests"], st["regions"])
    if seen != want:
        fail("%s: stats after the grace period: (reclaims, regions, RAM frames reclaimed, ordinary frames free, "
             "guests, regions) %s, expected %s" % (where, seen, want))
    empty = {"guests": 0, "regions": 0, "p2m_runs": 0}

    def state_now():
        rc, v = verify(state)
        return rc, v, {k: v.get("records", {}).get(k) for k in empty}

    wait_until(lambda x: x[0] == 0 and x[1]["ok"] and x[1]["violations"] == 0 and x[2] == empty, 10,
               "the state directory to verify with nothing of the old run left", probe=state_now)
    aside = [x for x in os.listdir(state) if x.startswith("previous-")]
    if aside:
        fail("%s: previous-* in the state directory: %s" % (where, aside))
    # memory is handed out again: an allocation goes through (and is given back), so the
    # next cycle's VMMs may attach
    r = vcmactl(d, "--json", "alloc", "1M")
    if r.returncode != 0:
        fail("%s: every restored guest is reclaimed, the pool is all free, and vcmactl alloc 1M still fails: exit %d, "
             "%s\nvcmad's log since the restart:\n%s" % (where, r.returncode, r.stderr.strip(), d.log_since(mark)))
    a = json.loads(r.stdout)
    if vcmactl(d, "free", a["handle"]).returncode != 0:
        fail("%s: vcmactl free %s failed" % (where, a["handle"]))
    if nv and HANDING_OUT not in d.log_since(mark):
        fail("%s: vcmad does not say it hands out memory again once the restored VMs are reclaimed:\n%s"
             % (where, d.log_since(mark)))
    return {"guests": ng, "regions": nr, "vms": nv, "busy": busy, "checked_ms": checked_ms, "held_ms": held_ms,
            "late": late}




# reattach_grace_ms: the clients count it from when they saw vcmad go, vcmad from its
# start; a few seconds, so that they make it back on a loaded machine
REATTACH_GRACE_MS = 4000
# a VMM that misses the pause deadline is cut off: 200 ms (the default) is a load effect
# on a small machine running four clients, vcmad and this test
PAUSE_TIMEOUT_MS = 1000
REATTACH_CONFIG = """
[daemon]
lend_share = 100%%
relend_idle_ms = 20
reattach_grace_ms = %d
pause_timeout_ms = %d
[machine]
memory = 256M
[pool main]
size = 64M
""" % (REATTACH_GRACE_MS, PAUSE_TIMEOUT_MS)

NAMES = set(VMS) | {GUEST_NAME}
REATTACHED_RE = re.compile(r"guest (\d+) \((\S*)\) reattached (\d+) ms after the restart: (\d+) region\(s\)"
                           r"( and its RAM)? kept")


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
    """torture_guest's log as a list of events, in order: (word, args...)."""
    ev = []
    with open(path) as f:
        for line in f:
            if not line.endswith("\n"):
                break  # being written
            w = line.split()
            if w:
                ev.append(w)
    return ev


class GuestLog:
    """What the guest's log says up to event n (all of it by default)."""

    def __init__(self, ev, n=None):
        ev = ev[:n] if n is not None else ev
        self.ev = ev
        self.answered = {}  # handle: (size, bus)
        self.freeing, self.freed = set(), set()
        self.order = []  # ("A" | "F", handle)
        self.problems = []
        self.id = None
        self.alloc_us, self.free_us = [], []
        self.restarts, self.restart_of = 0, {}
        for w in ev:
            k = w[0]
            if k == "LOST":
                self.restarts += 1
            elif k == "START":
                self.id = int(w[1])
            elif k == "ANSWERED":
                h = int(w[1], 16)
                if h in self.answered:
                    # a freed handle value is not issued again (PROTOCOL.md §6), not
                    # after a restart either (region.h, vcma_regions_insert_at)
                    self.problems.append("handle %#x answered twice (%s, then %d restart(s) later at %s)"
                                         % (h, "answered at %#x, freed" % self.answered[h][1] if h in self.freeing
                                            else "answered at %#x and still held" % self.answered[h][1],
                                            self.restarts - self.restart_of[h], w[3]))
                self.answered[h] = (int(w[2]), int(w[3], 16))
                self.restart_of[h] = self.restarts
                self.alloc_us.append(int(w[4]))
                self.order.append(("A", h))
            elif k == "FREEING":
                h = int(w[1], 16)
                self.freeing.add(h)
                self.order.append(("F", h))
            elif k == "FREED":
                self.freed.add(int(w[1], 16))
                if w[3] == "sync":
                    self.free_us.append(int(w[2]))
            elif k in ("BADPATTERN", "NOTZERO", "ERROR", "MISSING"):
                self.problems.append(" ".join(w))

    def held(self):
        return {h: sb for h, sb in self.answered.items() if h not in self.freeing}

    def count(self, word):
        return sum(1 for w in self.ev if w[0] == word)

    def index(self, word, nth):
        """Index of the nth (1-based) event `word`, or None."""
        seen = 0
        for i, w in enumerate(self.ev):
            if w[0] == word:
                seen += 1
                if seen == nth:
                    return i
        return None


def check_p2m(by, gid, frames):
    """The VM's p2m runs cover gfns [0, frames) exactly once; returns the run count."""
    runs = sorted((r["first_gfn"], r["count"]) for r in by.get("p2m", []) if r["vm"] == gid)
    nxt = 0
    for gfn, count in runs:
        if gfn != nxt or count <= 0:
            return None
        nxt += count
    return len(runs) if nxt == frames else None


def check_state(by, counts_seen, where, ids):
    """The dump by of a state directory holds the four clients with their ids, and
    counts what verify counted (counts_seen); every VM's p2m covers its RAM once."""
    guests_by_name = {r["name"]: r["id"] for r in by.get("guest", [])}
    counts = {"meta": len(by.get("meta", [])), "pools": len(by.get("pool", [])),
              "guests": len(by.get("guest", [])), "regions": len(by.get("region", [])),
              "p2m_runs": len(by.get("p2m", [])), "lenders": len(by.get("lender", []))}
    if counts_seen is not None and counts != counts_seen:
        fail("%s: the dump counts %s, state verify %s" % (where, counts, counts_seen))
    if guests_by_name != ids or counts["guests"] != len(NAMES):
        fail("%s: the state has guests %s, the clients are %s" % (where, by.get("guest"), ids))
    for name in VMS:
        if check_p2m(by, ids[name], VM_FRAMES) is None:
            fail("%s: %s's p2m does not cover its %d pages exactly once: %s"
                 % (where, name, VM_FRAMES, [r for r in by.get("p2m", []) if r["vm"] == ids[name]]))
    if check_p2m(by, ids[GUEST_NAME], 1) is None:
        fail("%s: torture_guest's one page of RAM is not backed once: %s"
             % (where, [r for r in by.get("p2m", []) if r["vm"] == ids[GUEST_NAME]]))
    others = [r for r in by.get("region", []) if r["guest"] != ids[GUEST_NAME]]
    if others:
        fail("%s: regions recorded for guests that never allocate: %s" % (where, others))


def stats(d):
    return ctl(d, "stats")["daemon"]


def guest_regions(d, gid):
    """vcmad's live list of guest gid's regions: {handle: (bus, size)}."""
    rl = ctl(d, "regions")
    return {int(r["handle"], 16): (r["mfn"] * 4096, r["frames"] * 4096) for r in rl["regions"] if r["guest"] == gid}


def client_output(paths):
    out = []
    for p in paths:
        try:
            with open(p) as f:
                out.append("%s:\n%s" % (os.path.basename(p), f.read()[-1500:]))
        except OSError:
            pass
    return "\n".join(out)


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, len(v) * p // 100)] if v else 0


def reclaim_main():
    """The clients stop when vcmad goes (no reattach): every restart waits out its grace
    period and reclaims what it took back."""
    lat = {"alloc": [], "free": []}  # microseconds, as the guest measured them (reported, not asserted)

    totals = dict(answered=0, recorded=0, in_flight=0, free_kept=0, free_kept_answered=0, vm_pages=0, moved=0, pauses=0,
                  guest_verified=0, taken_guests=0, taken_regions=0, taken_vms=0, busy=0, late=0)
    t_start = time.monotonic()
    grace_ms = RECLAIM_GRACE_MS
    d = Vcmad(VCMAD, reclaim_config(grace_ms))
    state = d.state_dir
    # what is free of ordinary memory with nobody attached: so it must be after each reclaim
    ordinary_free = ctl(d, "stats")["daemon"]["ordinary_free_frames"]
    for cycle in range(CYCLES):
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
        g = reclaim_read_guest_log(glog)
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
                or counts["guests"] != len(VMS) + 1 or guests_by_name[GUEST_NAME] != g["id"]:
            fail("cycle %d (seed %d): the dump (%s, guests %s) is not what verify counted (%s), or not these guests "
                 "(torture_guest is id %s)" % (cycle, seed, counts, by.get("guest"), v["records"], g["id"]))
        for name in VMS:
            if reclaim_check_p2m(by, guests_by_name, name, VM_FRAMES) is None:
                fail("cycle %d (seed %d): %s's p2m does not cover its %d pages exactly once: %s"
                     % (cycle, seed, name, VM_FRAMES,
                        [r for r in by.get("p2m", []) if r["vm"] == guests_by_name[name]]))
        if reclaim_check_p2m(by, guests_by_name, GUEST_NAME, 1) is None:
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
        if not os.path.exists(os.path.join(d.rundir, "machine.mem")):
            fail("cycle %d (seed %d): the machine memory file %s/machine.mem did not outlive vcmad"
                 % (cycle, seed, d.rundir))

        # the restart: the state taken back, held for the grace period, then reclaimed
        rec = what_was_recorded(by)
        t_launch = time.monotonic()
        d = Vcmad(VCMAD, reclaim_config(grace_ms), reuse=d)
        t_ready = time.monotonic()
        rs = restart_checks(d, cycle, seed, rec, mark, t_launch, t_ready, grace_ms, ordinary_free)
        if rs["late"]:
            # the machine is too loaded to list and allocate within the grace period: the
            # next restarts get a longer one (bounded: this cannot hide a failure for long)
            if grace_ms >= GRACE_MAX_MS:
                fail("cycle %d (seed %d): restart: the checks while the restored guests wait did not fit in "
                     "reattach_grace_ms %d (%s)" % (cycle, seed, grace_ms, rs["late"]))
            log("cycle %d: the grace period of %d ms ended before the checks while waiting were done (%s): the next "
                "restarts wait %d ms" % (cycle, grace_ms, rs["late"], grace_ms * 2))
            grace_ms *= 2
            totals["late"] += 1

        kept_answered = kept_freed & g["freed"]
        print("cycle %d: seed %d, crash after %.3f s: %d region(s) answered, %d held, %d recorded (%d in flight, %d "
              "freed but not yet committed, %d of them after the guest had the FREE's answer), txn %d; VMs verified "
              "%d pages, moved %d in %d pause(s); guest verified %d region(s) after the crash; restart took back %d "
              "guests / %d regions / %d VMs (%s, checked in %.0f ms, reclaimed after %.0f ms), all reclaimed after "
              "the grace period: ok"
              % (cycle, seed, delay, len(g["answered"]), len(held), len(recorded), len(unknown), len(kept_freed),
                 len(kept_answered), by["meta"][0]["last_txn"], vm_pages, moved, pauses, g["verified"][0],
                 rs["guests"], rs["regions"], rs["vms"],
                 "not checked while waiting: the grace period ended first" if rs["late"] else rs["busy"],
                 rs["checked_ms"], rs["held_ms"]), flush=True)
        totals["answered"] += len(g["answered"])
        totals["recorded"] += len(recorded)
        totals["in_flight"] += len(unknown)
        totals["free_kept"] += len(kept_freed)
        totals["free_kept_answered"] += len(kept_answered)
        totals["vm_pages"] += vm_pages
        totals["moved"] += moved
        totals["pauses"] += pauses
        totals["guest_verified"] += g["verified"][0]
        totals["taken_guests"] += rs["guests"]
        totals["taken_regions"] += rs["regions"]
        totals["taken_vms"] += rs["vms"]
        totals["busy"] += rs["busy"] != "no VM in the record"
        lat["alloc"] += g["alloc_us"]
        lat["free"] += g["free_us"]
        if not os.environ.get("VCMA_TORTURE_KEEP"):
            os.unlink(glog)

    d.stop()
    log("as the guest saw them: ALLOC answered (1-8 MiB, vacating) p50 %d us, p99 %d us, max %d us; awaited FREE "
        "p50 %d us, p99 %d us, max %d us" % (pct(lat["alloc"], 50), pct(lat["alloc"], 99), max(lat["alloc"], default=0),
                                  pct(lat["free"], 50), pct(lat["free"], 99), max(lat["free"], default=0)))
    check(totals["answered"] > 0 and totals["moved"] > 0,
          "the workload did its job: %d regions answered, %d VM pages moved (vacated or relent) over the run"
          % (totals["answered"], totals["moved"]))
    check(totals["taken_regions"] > 0 and totals["busy"] > 0,
          "the restarts had something to take back: %d region(s) over the run, ALLOCs refused while VMs waited in %d "
          "restart(s) (%d ran out of grace before the checks while waiting were done; reattach_grace_ms ended at %d)"
          % (totals["taken_regions"], totals["busy"], totals["late"], grace_ms))
    print("crash-torture: %d cycle(s) from seed %d in %.0f s: no violation, nothing lost; %d region(s) answered, %d "
          "recorded at the crashes (%d in flight, %d freed but not yet committed, %d of them answered), %d held "
          "region(s) verified after the crashes, VMs verified %d pages and moved %d in %d pause(s); restarts took back "
          "%d guests / %d regions / %d VMs, all reclaimed after the grace period"
          % (CYCLES, SEED, time.monotonic() - t_start, totals["answered"], totals["recorded"], totals["in_flight"],
             totals["free_kept"], totals["free_kept_answered"], totals["guest_verified"], totals["vm_pages"],
             totals["moved"], totals["pauses"], totals["taken_guests"], totals["taken_regions"], totals["taken_vms"]))
    pass


def reattach_main():
    """One set of clients across every cycle: each restart takes them back."""
    t_start = time.monotonic()
    d = Vcmad(VCMAD, REATTACH_CONFIG)
    state = d.state_dir
    glog = os.path.join(d.dir, "guest.log")
    errs = {name: os.path.join(d.dir, "%s.err" % name) for name in NAMES}
    vms = [simvm(d, name, "--ram", "16M", "--alloc", "none", "--vcpus", "1", "--duration", "36000",
                 "--seed", str(SEED * 10 + i), stderr=open(errs[name], "w"))
           for i, name in enumerate(VMS)]
    guest = subprocess.Popen([GUEST, d.sock, GUEST_NAME, POOL, str(SEED), glog, "6", "36000", "hold"],
                             stdout=open(errs[GUEST_NAME] + ".out", "w"), stderr=open(errs[GUEST_NAME], "w"))
    vcmatest._running.append(guest)  # killed at exit if a check fails
    gl = wait_attached(d, *NAMES)
    ids = {name: gl[name]["id"] for name in NAMES}
    err_paths = list(errs.values())


    def clients_alive(where):
        dead = [(n, p.returncode) for n, p in zip(VMS + (GUEST_NAME,), vms + [guest]) if p.poll() is not None]
        if dead:
            fail("%s: client(s) exited: %s\n%s\nvcmad:\n%s" % (where, dead, client_output(err_paths), d.logtext()[-3000:]))


    totals = dict(recorded=0, in_flight=0, free_kept=0, taken_regions=0, restore_back=0, retries=0,
                  reattach_ms=[], guest_checked=0, granted_freed=0)
    for cycle in range(CYCLES):
        seed = SEED + cycle
        rng = random.Random(seed)
        delay = rng.uniform(0.2, 1.5)
        where = "cycle %d (seed %d)" % (cycle, seed)
        log("cycle %d: seed %d, crash after %.3f s" % (cycle, seed, delay))
        # the moment of the crash is the thing under test: a random point of the workload
        time.sleep(delay)
        if not d.alive():
            fail("%s: vcmad died by itself before the kill (exit %s):\n%s" % (where, d.proc.returncode,
                                                                                d.logtext()[-3000:]))
        d.kill()
        mark = d.log_mark()

        # ---- the state directory the crash left ----
        rc, v = verify(state)
        if rc != 0 or not v["ok"] or v["violations"] != 0:
            fail("%s: state verify after the crash: exit %d, %s" % (where, rc, json.dumps(v)))
        by = dump(state)
        check_state(by, v["records"], where + ": after the crash", ids)
        # the guest sees vcmad gone (LOST); what it logged by then is all it was told
        wait_until(lambda g: g.count("LOST") == cycle + 1, 30, "%s: torture_guest noticing vcmad gone" % where,
                   probe=lambda: GuestLog(read_guest_log(glog)))
        g = GuestLog(read_guest_log(glog))
        recorded = {r["handle"]: r for r in by.get("region", [])}
        held = g.held()
        lost = sorted(h for h in held if h not in recorded)
        if lost:
            fail("%s: LOST: region(s) %s answered and never freed are not recorded"
                 % (where, ", ".join("%#x" % h for h in lost)))
        wrong = [(h, held[h], recorded[h]) for h in held
                 if (recorded[h]["first_mfn"] * 4096, recorded[h]["frames"] * 4096) != (held[h][1], held[h][0])]
        if wrong:
            fail("%s: region(s) recorded at other frames than the guest was answered: %s" % (where, wrong))
        last_answer = max((i for i, (kind, _) in enumerate(g.order) if kind == "A"), default=-1)
        may_be_kept = {h for kind, h in g.order[last_answer + 1:] if kind == "F"}
        extra = set(recorded) - set(held)
        kept_freed = extra & g.freeing
        unknown = extra - set(g.answered)
        stale = kept_freed - may_be_kept
        if stale:
            fail("%s: region(s) %s still recorded although an ALLOC sent after their FREE was answered"
                 % (where, ", ".join("%#x" % h for h in sorted(stale))))
        if len(unknown) > 1:
            fail("%s: %d regions recorded that the guest never heard of (at most the one ALLOC in flight): %s"
                 % (where, len(unknown), ", ".join("%#x" % h for h in sorted(unknown))))
        if not os.path.exists(os.path.join(d.rundir, "machine.mem")):
            fail("%s: the machine memory file %s/machine.mem did not outlive vcmad" % (where, d.rundir))
        clients_alive(where + ", vcmad dead")

        # ---- the restart: everything taken back, every client reattached ----
        nr = len(recorded)
        nruns = len(by.get("p2m", []))
        t_launch = time.monotonic()
        d = Vcmad(VCMAD, REATTACH_CONFIG, reuse=d)
        where = "cycle %d (seed %d): restart" % (cycle, seed)
        text = d.log_since(mark)
        m = TAKING_RE.search(text)
        if not m or m.group(1) != state:
            fail("%s: vcmad does not say it takes back the previous run's state in %s:\n%s" % (where, state, text[-3000:]))
        got = tuple(int(x) for x in m.group(2, 3, 4))
        if got != (len(NAMES), nr, nruns):
            fail("%s: vcmad says the store holds %d guest(s), %d region(s), %d p2m run(s); the dump after the crash "
                 "found %d, %d, %d" % ((where,) + got + (len(NAMES), nr, nruns)))
        m = TOOK_RE.search(text)
        if not m:
            fail("%s: vcmad does not say it took the state back:\n%s" % (where, text[-3000:]))
        got = tuple(int(x) for x in m.group(1, 2, 3, 4))
        if got != (len(NAMES), nr, len(NAMES), REATTACH_GRACE_MS):
            fail("%s: vcmad took back %d guest(s) with %d region(s) and %d VM(s), %d ms to reattach; the record has %d, "
                 "%d, %d (grace %d ms)" % ((where,) + got + (len(NAMES), nr, len(NAMES), REATTACH_GRACE_MS)))
        aside = [p for p in os.listdir(state) if p.startswith("previous-")]
        if aside or ASIDE_MARK in text:
            fail("%s: the previous state was set aside (%s) although it was taken back:\n%s" % (where, aside, text[-3000:]))

        def reattached():
            return {int(m.group(1)): m for m in REATTACHED_RE.finditer(d.log_since(mark))}

        back = poll_until(lambda: len(reattached()) >= len(NAMES) or DETACHED_RE.search(d.log_since(mark))
                          or not d.alive(), REATTACH_GRACE_MS / 1000 + 20)
        text = d.log_since(mark)
        if not d.alive():
            fail("%s: vcmad died after the restart (exit %s):\n%s" % (where, d.proc.returncode, text[-3000:]))
        if DETACHED_RE.search(text):
            fail("%s: vcmad reclaimed a client that was to reattach:\n%s\n%s" % (where, text[-3000:],
                                                                               client_output(err_paths)))
        ra = reattached()
        if set(ra) != set(ids.values()):
            fail("%s: reattached: %s; the clients are %s\n%s\n%s"
                 % (where, sorted(ra), ids, text[-3000:], client_output(err_paths)))
        per_guest = {gid: 0 for gid in ids.values()}
        for r in recorded.values():
            per_guest[r["guest"]] += 1
        for name, gid in ids.items():
            m = ra[gid]
            if m.group(2) != name or int(m.group(4)) != per_guest[gid] or not m.group(5):
                fail("%s: %s; the dump has guest %d (%s) with %d region(s) and its RAM"
                     % (where, m.group(0), gid, name, per_guest[gid]))
            totals["reattach_ms"].append(int(m.group(3)))

        # the guest: vcmad listed what the dump has; every held region intact
        g_ev = wait_until(lambda ev: GuestLog(ev).count("REATTACHED") >= cycle + 1, 30,
                          "%s: torture_guest logging REATTACHED" % where, probe=lambda: read_guest_log(glog))
        gfull = GuestLog(g_ev)
        i_back, i_re = gfull.index("BACK", cycle + 1), gfull.index("REATTACHED", cycle + 1)
        i_lost = gfull.index("LOST", cycle + 1)
        if i_back is None or not i_lost < i_back < i_re:
            fail("%s: torture_guest's log does not have LOST, BACK, REATTACHED in that order: %s"
                 % (where, g_ev[i_lost:i_re + 1]))
        listed = {int(w[1], 16): (int(w[2], 16), int(w[3])) for w in g_ev[i_back:i_re] if w[0] == "LISTED"}
        want_listed = {h: (r["first_mfn"] * 4096, r["frames"] * 4096) for h, r in recorded.items()}
        if listed != want_listed:
            fail("%s: vcmad listed the guest's regions (handle: bus, size) %s; the dump of the crash has %s"
                 % (where, {"%#x" % h: x for h, x in listed.items()}, {"%#x" % h: x for h, x in want_listed.items()}))
        g_at = GuestLog(g_ev, i_re + 1)
        if g_at.problems:
            fail("%s: torture_guest: %s" % (where, g_at.problems))
        n_re, bad_re = int(g_ev[i_re][1]), int(g_ev[i_re][2])
        held_now = g_at.held()
        if (n_re, bad_re) != (len(held_now), 0):
            fail("%s: torture_guest says REATTACHED %d %d; its log says it holds %d region(s)"
                 % (where, n_re, bad_re, len(held_now)))
        retried = [w for w in g_ev[i_lost:i_re] if w[0] == "RETRY"]
        pending = {int(w[2], 16) for w in retried if w[1] in ("free", "free_sync")}
        granted = set(listed) - set(g_at.answered)  # an ALLOC in flight at the crash, granted
        if len(granted) > 1:
            fail("%s: vcmad listed %d regions the guest never heard of (at most the ALLOC in flight): %s"
                 % (where, len(granted), sorted(granted)))
        want_live = {h: (bus, size) for h, (size, bus) in held_now.items()}

        def live_ok(live):
            return {h: x for h, x in live.items() if h not in pending or h in want_live} == want_live

        live = wait_until(live_ok, 10, "%s: vcmad's live list of torture_guest's regions to be what it holds %s "
                          "(plus a FREE to be made again: %s)" % (where, {"%#x" % h: x for h, x in want_live.items()},
                                                                   sorted(pending)),
                          probe=lambda: guest_regions(d, ids[GUEST_NAME]))

        # counters: everyone back, nobody reclaimed
        st = stats(d)
        seen = {k: st[k] for k in ("restored_guests", "restored_regions", "restored_vms", "restore_back",
                                   "restore_reclaimed", "restore_waiting", "restore_vms_waiting", "reclaims")}
        want = {"restored_guests": len(NAMES), "restored_regions": nr, "restored_vms": len(NAMES),
                "restore_back": len(NAMES), "restore_reclaimed": 0, "restore_waiting": 0, "restore_vms_waiting": 0,
                "reclaims": 0}
        if seen != want:
            fail("%s: stats %s, expected %s" % (where, seen, want))
        gl = {x["name"]: x for x in ctl(d, "guests")["guests"]}
        if {n: x["id"] for n, x in gl.items()} != ids or any(x["link"] == "restored" for x in gl.values()):
            fail("%s: vcmactl guests lists %s; the clients are %s, all back" % (where, [(x["id"], x["name"], x["link"])
                                                                                   for x in gl.values()], ids))
        # the live state: no frame owned twice, every VM's RAM backed once
        rc, v = verify(state)
        if rc != 0 or not v["ok"] or v["violations"] != 0:
            fail("%s: live state verify: exit %d, %s" % (where, rc, json.dumps(v)))
        check_state(dump(state), None, where + ": live state", ids)
        clients_alive(where)
        guest.send_signal(signal.SIGUSR1)  # go on
        totals["recorded"] += nr
        totals["in_flight"] += len(unknown)
        totals["free_kept"] += len(kept_freed)
        totals["taken_regions"] += nr
        totals["restore_back"] += st["restore_back"]
        totals["retries"] += len(retried)
        totals["guest_checked"] += n_re
        totals["granted_freed"] += len(granted)
        print("%s: crash after %.3f s: %d region(s) held, %d recorded (%d in flight, %d freed but not yet committed); "
              "restart took back %d guests / %d regions / %d p2m runs; all 4 reattached after %s ms, the guest "
              "checked %d region(s) intact, %d call(s) retried, %d granted in flight and freed; live list = held: ok"
              % ("cycle %d: seed %d" % (cycle, seed), delay, len(held), nr, len(unknown), len(kept_freed), len(NAMES),
                 nr, nruns, "/".join(str(int(ra[ids[n]].group(3))) for n in sorted(NAMES)), n_re, len(retried),
                 len(granted)), flush=True)

    # ---- the end: counters, then the clients stop and say how it went ----
    st = stats(d)
    check(st["reclaims"] == 0 and st["restore_reclaimed"] == 0,
          "no client reclaimed by the last vcmad (reclaims %d, restore_reclaimed %d)"
          % (st["reclaims"], st["restore_reclaimed"]))
    check(totals["restore_back"] == len(NAMES) * CYCLES,
          "restore_back summed over the %d restarts: %d = %d clients x %d" % (CYCLES, totals["restore_back"], len(NAMES),
                                                                             CYCLES))
    for p in vms + [guest]:
        p.send_signal(signal.SIGTERM)
    vm_pages = moved = pauses = retried_calls = 0
    for name, p in zip(VMS, vms):
        try:
            out, _ = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            fail("%s did not stop within 60 s of SIGTERM" % name)
        try:
            s = json.loads(out)
        except ValueError:
            fail("%s printed no JSON summary (exit %d): %r\n%s" % (name, p.returncode, out[:300],
                                                                   client_output([errs[name]])))
        if p.returncode != 0 or s["corruptions"] or s["pattern_errors"] or s["errors"] or s["reattaches"] != CYCLES \
                or s["reattach_failed"] or s["host_gone"]:
            fail("%s: exit %d, %d corrupt page(s), %d pattern error(s), %d error(s), %d reattach(es) of %d (failed %s, "
                 "host_gone %s)\n%s" % (name, p.returncode, s["corruptions"], s["pattern_errors"], s["errors"],
                                        s["reattaches"], CYCLES, s["reattach_failed"], s["host_gone"],
                                        client_output([errs[name]])))
        vm_pages += s["vcpu_pages_verified"]
        moved += s["remapped_pages"]
        pauses += s["pauses"]["count"]
        retried_calls += s["calls_retried"]
    check(True, "the 3 VMs: 0 corrupt pages, 0 pattern errors, 0 errors, %d reattaches each; %d pages verified, %d moved "
          "in %d pause(s), %d guest call(s) retried" % (CYCLES, vm_pages, moved, pauses, retried_calls))
    try:
        guest.wait(timeout=60)
    except subprocess.TimeoutExpired:
        guest.kill()
        fail("torture_guest did not stop within 60 s of SIGTERM")
    g = GuestLog(read_guest_log(glog))
    verified = [w for w in g.ev if w[0] == "VERIFIED"]
    held = g.held()
    if guest.returncode != 0 or g.problems or len(verified) != 1 or verified[0][1:] != [str(len(held)), "0"] \
            or g.count("REATTACHED") != CYCLES:
        fail("torture_guest: exit %d, problems %s, %s (it held %d), %d reattach(es) of %d\n%s"
             % (guest.returncode, g.problems, verified, len(held), g.count("REATTACHED"), CYCLES,
                client_output([errs[GUEST_NAME]])))
    check(True, "torture_guest: exit 0, %d reattaches, every pattern intact (VERIFIED %d 0), %d call(s) retried"
          % (CYCLES, len(held), g.count("RETRY")))
    d.stop()
    log("as the guest saw them: ALLOC answered (1-8 MiB, vacating) p50 %d us, p99 %d us, max %d us; awaited FREE "
        "p50 %d us, p99 %d us, max %d us; reattached (vcmad's count from its start) p50 %d ms, max %d ms"
        % (pct(g.alloc_us, 50), pct(g.alloc_us, 99), max(g.alloc_us, default=0), pct(g.free_us, 50), pct(g.free_us, 99),
           max(g.free_us, default=0), pct(totals["reattach_ms"], 50), max(totals["reattach_ms"], default=0)))
    check(len(g.answered) > 0 and moved > 0,
          "the workload did its job: %d regions answered, %d VM pages moved (vacated or relent) over the run"
          % (len(g.answered), moved))
    check(totals["taken_regions"] > 0, "the restarts had regions to take back: %d over the run" % totals["taken_regions"])
    if not os.environ.get("VCMA_TORTURE_KEEP"):
        os.unlink(glog)
    print("crash-torture: %d cycle(s) from seed %d in %.0f s: no violation, nothing lost; %d region(s) answered, %d "
          "recorded at the crashes (%d in flight, %d freed but not yet committed), %d taken back; %d reattaches "
          "(restore_back %d), none reclaimed; the guest checked %d held region(s) after the reattaches, retried %d "
          "call(s); VMs verified %d pages and moved %d in %d pause(s), 0 corrupt"
          % (CYCLES, SEED, time.monotonic() - t_start, len(g.answered), totals["recorded"], totals["in_flight"],
             totals["free_kept"], totals["taken_regions"], len(NAMES) * CYCLES, totals["restore_back"],
             totals["guest_checked"], g.count("RETRY"), vm_pages, moved, pauses))


if MODE == "reattach":
    reattach_main()
else:
    reclaim_main()
print("PASS")
