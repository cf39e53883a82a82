"""The policies an integrator would pick instead of vcma, replaying the same trace
frame by frame (4 KiB frames, the sim's machinery: same frames, same alignment rule,
same guests and the same pinned share). Everything they report is counted from what
happened to their frames in the replay; their times are migrated pages x the per-page
copy floor measured in the same run, i.e. a lower bound (the real-kernel row of the
report shows what Linux's own migration costs per MiB against its floor).

  carveout  each guest owns a fixed reservation sized for its own peak (what devices
            use today: reserved-memory with no-map, a per-device coherent pool); first
            fit in it; nobody else may use it, idle or not
  cma       in-guest CMA, as mm/cma.c and alloc_contig_range() do it: each guest's area
            is the same size as its carve-out but lives in its RAM and holds the guest's
            movable pages while idle; cma_alloc() walks the area's bitmap first fit
            from the start under one mutex, migrates every page in use in the window
            page by page, and when a page in the window is pinned (an extra reference
            migration cannot drop: GUP for in-flight I/O or DMA) the window fails with
            -EBUSY after its pages were migrated, and the next aligned window is tried

Frame states: FREE, USED (a guest page), PINNED (a guest page with a pin), REGION.
Idle gaps (W) let the guest's allocator put pages back on free CMA frames (its RAM
workload's share of pages in use) and move its pins around.
"""
import random

FREE, USED, PINNED, REGION = 0, 1, 2, 3
PAGE = 4096
FRAMES_PER_MIB = 256
ALIGN_CAP = 256          # natural alignment capped at 1 MiB (CONFIG_CMA_ALIGNMENT=8, vcma align_order 8)
PIN_CLUSTER = 16         # pinned pages come in 64 KiB buffers


def align_frames(n):
    a = 1
    while a < n and a < ALIGN_CAP:
        a <<= 1
    return a


class Area:
    """One guest's reservation (carveout) or CMA area (cma): frames 0..n-1."""

    def __init__(self, owner, nframes, fill, pin_share, rng, lendable):
        self.owner, self.n, self.fill, self.pin_share = owner, nframes, fill, pin_share
        self.rng, self.lendable = rng, lendable
        self.st = bytearray(nframes)
        if lendable:
            self.refill()

    def refill(self):
        """An idle gap: the guest's movable pages settle on free frames at its fill share;
        the pinned share of its pages is drawn again, in clusters of PIN_CLUSTER pages."""
        if not self.lendable:
            return
        st, rng = self.st, self.rng
        for i in range(self.n):
            if st[i] == PINNED:
                st[i] = USED
            if st[i] == FREE and rng.random() < self.fill:
                st[i] = USED
            elif st[i] == USED and rng.random() >= self.fill:
                st[i] = FREE
        used = [i for i in range(0, self.n, PIN_CLUSTER) if st[i] == USED]
        want = int(sum(1 for x in st if x == USED) * self.pin_share / PIN_CLUSTER + 0.5)
        for c in rng.sample(used, min(want, len(used))):
            for i in range(c, min(c + PIN_CLUSTER, self.n)):
                if st[i] == USED:
                    st[i] = PINNED

    def count(self, s):
        return self.st.count(s)

    def largest_window(self, ok):
        """Longest run of frames whose state is in ok."""
        best = run = 0
        for x in self.st:
            run = run + 1 if x in ok else 0
            best = max(best, run)
        return best


class Policy:
    name = "?"

    def __init__(self, guests, peaks, pin_share, floor_ns_per_page, seed):
        self.rng = random.Random(seed)
        self.floor = floor_ns_per_page
        self.areas = {}
        for name, _ram, _peak, fill in guests:
            mib = -(-peaks.get(name, 0) // (1 << 20))
            self.areas[name] = Area(name, mib * FRAMES_PER_MIB, fill, pin_share, self.rng, self.lendable)
        self.where = {}   # buffer id -> (area, first frame, frames)

    def total_frames(self):
        return sum(a.n for a in self.areas.values())

    def gap(self):
        for a in self.areas.values():
            a.refill()

    def free(self, bid):
        a, first, n = self.where.pop(bid)
        a.st[first:first + n] = bytes([FREE]) * n

    def feasible(self, req, nbytes):
        """Would free plus lent capacity do, pins aside: an aligned window of the
        requester's area that no region holds."""
        a, n = self.areas[req], nbytes // PAGE
        return any(REGION not in a.st[s:s + n] for s in range(0, a.n - n + 1, align_frames(n)))

    def sample(self):
        """(frames usable by guests' RAM, frames not held by regions, largest allocatable MiB)."""
        usable = sum(a.n - a.count(REGION) for a in self.areas.values()) if self.lendable else 0
        notreg = sum(a.n - a.count(REGION) for a in self.areas.values())
        ok = (FREE, USED) if self.lendable else (FREE,)
        largest = max(a.largest_window(ok) for a in self.areas.values()) / FRAMES_PER_MIB
        return usable, notreg, largest


class CarveOut(Policy):
    name = "carve-out"
    lendable = False

    def alloc(self, bid, req, nbytes):
        """Returns (ok, errno name or '', ns, pages moved, windows tried)."""
        a, n = self.areas[req], nbytes // PAGE
        al = align_frames(n)
        tried = 0
        for start in range(0, a.n - n + 1, al):
            tried += 1
            if not any(a.st[start:start + n]):
                a.st[start:start + n] = bytes([REGION]) * n
                self.where[bid] = (a, start, n)
                return True, "", 0.0, 0, tried
        return False, "ENOMEM", 0.0, 0, tried


class CmaLike(Policy):
    name = "CMA-like"
    lendable = True

    def alloc(self, bid, req, nbytes):
        a, n = self.areas[req], nbytes // PAGE
        al = align_frames(n)
        moved = tried = 0
        for start in range(0, a.n - n + 1, al):
            w = a.st[start:start + n]
            if REGION in w:          # the bitmap says taken: not a candidate
                continue
            tried += 1
            # isolate, then migrate every page in use page by page; a pinned page's
            # migration fails (after retries) and the whole range fails with -EBUSY
            used = w.count(USED)
            moved += used
            for i in range(start, start + n):
                if a.st[i] == USED:
                    a.st[i] = FREE   # migrated out of the area
            if PINNED in w:
                continue
            a.st[start:start + n] = bytes([REGION]) * n
            self.where[bid] = (a, start, n)
            return True, "", moved * self.floor, moved, tried
        return False, "EBUSY" if tried else "ENOMEM", moved * self.floor, moved, tried


def replay(policy, ops):
    """Replay a trace; returns the records the report computes everything from:
    allocs: [(id, requester, bytes, phase, ok, err, ns, pages moved, windows tried, feasible)],
    samples: [(label, usable frames, non-region frames, total frames, largest MiB)]."""
    allocs, samples = [], []
    live = set()
    for op in ops:
        if op[0] == "A":
            feasible = policy.feasible(op[2], op[3])
            ok, err, ns, moved, tried = policy.alloc(op[1], op[2], op[3])
            if ok:
                live.add(op[1])
            allocs.append((op[1], op[2], op[3], op[4], ok, err, ns, moved, tried, feasible))
        elif op[0] == "F":
            if op[1] in live:
                live.discard(op[1])
                policy.free(op[1])
        elif op[0] == "W":
            policy.gap()
        elif op[0] == "S":
            usable, notreg, largest = policy.sample()
            samples.append((op[1], usable, notreg, policy.total_frames(), largest))
    return {"allocs": allocs, "samples": samples}
