"""Workload traces of a virtualized cockpit, the input every policy of the comparison
replays (bench/compare/compare.py).

Guests (each runs a RAM workload and owns one device that asks for buffers):

  cluster  instrument cluster: a display's double buffer, 2 x 8 MiB, re-made on a
           mode change
  ivi      infotainment: a video codec's buffers, 1/2/4/8 MiB and a mix up to 32 MiB
  rearcam  rear camera: nothing while driving forward; at the reverse-gear moment
           six camera buffers are needed at once (the burst)

Phases, in order:
  sizes  1, 2, 4 and 8 MiB ALLOC+FREE from the codec, rounds apart in time so idle
         frames are lent again between them (the seeds' success rate per size)
  burst  the reverse-gear moment, again and again: 4 x 4 MiB + 2 x 2 MiB at once,
         held, freed
  long   a long mixed run: every device allocates and frees sizes up to 32 MiB with
         random hold times; it fragments whatever the pool holds

Every device keeps within its own peak (cluster 16 MiB, ivi 56 MiB, rearcam 24 MiB),
and the peaks add up to the pool: a static carve-out sized for each peak uses exactly
the memory the shared pool has, and free plus lent capacity always suffices.

A trace is a list of operations:
  ("A", id, requester, bytes, phase)   allocate; id names the buffer
  ("F", id)                            free it
  ("W", ms)                            idle time: guests keep running, nothing asks
  ("S", label)                         take a fragmentation/utilization sample
Text form, one per line, is what bench/compare/vcma-replay.c reads.
"""
import random

MiB = 1 << 20
PAGE = 4096

# name, RAM, peak of the device's buffers, the RAM workload's share of pages in use
GUESTS = [
    ("cluster", 48 * MiB, 16 * MiB, 0.60),
    ("ivi", 96 * MiB, 56 * MiB, 0.75),
    ("rearcam", 32 * MiB, 24 * MiB, 0.50),
]
POOL = sum(g[2] for g in GUESTS)  # 96 MiB
SIZES = [1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB]
MIX = [1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB, 16 * MiB, 32 * MiB]
MIX_W = [6, 6, 5, 4, 2, 1]


class Scale:
    """How long each phase runs: 'default' fits the 10-minute budget, 'quick' is a smoke run."""

    def __init__(self, name):
        self.name = name
        q = name == "quick"
        self.rounds = 8 if q else 40        # ALLOC+FREE per size in phase sizes
        self.bursts = 3 if q else 12        # reverse-gear moments
        self.long_ops = 80 if q else 600    # allocations in phase long
        self.gap_ms = 40                    # idle gap: > vcmad's relend_idle_ms, frames are lent again
        self.sample_every = 10 if q else 25  # long-run allocations between samples


def generate(scale, seed=1):
    rng = random.Random(seed)
    ops = []
    nid = [0]

    def alloc(req, size, phase):
        nid[0] += 1
        ops.append(("A", nid[0], req, size, phase))
        return nid[0]

    ops.append(("S", "start"))
    # cluster's display double buffer stays allocated through the run (re-made in 'long')
    display = [alloc("cluster", 8 * MiB, "sizes"), alloc("cluster", 8 * MiB, "sizes")]
    ops.append(("W", scale.gap_ms))
    for size in SIZES:
        for _ in range(scale.rounds):
            i = alloc("ivi", size, "sizes")
            ops.append(("F", i))
            ops.append(("W", scale.gap_ms))
    ops.append(("S", "sizes"))
    for b in range(scale.bursts):
        cam = [alloc("rearcam", s, "burst") for s in (4 * MiB,) * 4 + (2 * MiB,) * 2]
        # the codec keeps working while the camera shows
        i = alloc("ivi", rng.choice(SIZES), "burst")
        ops.append(("W", scale.gap_ms))
        for c in cam + [i]:
            ops.append(("F", c))
        ops.append(("W", scale.gap_ms))
    ops.append(("S", "burst"))
    # long: each device holds buffers with random lifetimes, within its own peak
    held = {g[0]: [] for g in GUESTS}
    held["cluster"] = [(d, 8 * MiB) for d in display]
    peak = {g[0]: g[2] for g in GUESTS}
    for k in range(scale.long_ops):
        req = rng.choices(["cluster", "ivi", "rearcam"], [1, 4, 2])[0]
        if req == "cluster":
            size = 8 * MiB  # a mode change: one of the two display buffers is re-made
        elif req == "rearcam":
            size = rng.choice([2 * MiB, 4 * MiB])
        else:
            size = rng.choices(MIX, MIX_W)[0]
        # free this device's oldest buffers until the new one fits its peak, and some at random
        while held[req] and sum(s for _, s in held[req]) + size > peak[req]:
            ops.append(("F", held[req].pop(0)[0]))
        for g in held:
            if held[g] and g != "cluster" and rng.random() < 0.25:
                ops.append(("F", held[g].pop(rng.randrange(len(held[g])))[0]))
        if size > peak[req]:
            continue
        held[req].append((alloc(req, size, "long"), size))
        if rng.random() < 0.3:
            ops.append(("W", scale.gap_ms))
        if (k + 1) % scale.sample_every == 0:
            ops.append(("S", "long-%d" % (k + 1)))
    for g in held:
        for i, _ in held[g]:
            ops.append(("F", i))
    ops.append(("W", scale.gap_ms * 3))
    ops.append(("S", "end"))
    return ops


def peaks(ops):
    """Each requester's peak of outstanding bytes, computed from the trace itself."""
    live, cur, pk = {}, {}, {}
    for op in ops:
        if op[0] == "A":
            live[op[1]] = (op[2], op[3])
            cur[op[2]] = cur.get(op[2], 0) + op[3]
            pk[op[2]] = max(pk.get(op[2], 0), cur[op[2]])
        elif op[0] == "F":
            r, s = live.pop(op[1])
            cur[r] -= s
    return pk


def to_text(ops):
    lines = []
    for op in ops:
        if op[0] == "A":
            lines.append("A %d %s %d %s" % op[1:])
        else:
            lines.append("%s %s" % (op[0], op[1]))
    return "\n".join(lines) + "\n"
