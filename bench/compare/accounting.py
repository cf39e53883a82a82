"""What the comparison reports, computed from the records of a replay (the same code
for every policy; tests/unit/test_compare_accounting.py checks it on a trace whose
answer is known).

A record of an allocation: (id, requester, bytes, phase, ok, errno name, ns, pages
moved or None, windows tried or None, feasible). feasible: free plus lent capacity
would do, pins aside: an aligned window the policy's own layout had no region in
(for vcma computed here from the live regions' addresses, vcma_feasible()).
A sample: (label, frames usable by guests' RAM, frames not held by regions, frames in
all, largest allocatable window in MiB)."""
MiB = 1 << 20
ALIGN_CAP = 1 * MiB


def vcma_feasible(ops, allocs, bus, base, size):
    """Fill in feasible for vcma's records: replay the trace's frees against the
    regions vcma returned (bus: id -> bus address) and ask, before each allocation,
    whether an aligned window of its size overlaps no live region."""
    rec = {a[0]: a for a in allocs}
    live = {}
    out = []
    for op in ops:
        if op[0] == "A":
            a = rec[op[1]]
            n = a[2]
            al = min(ALIGN_CAP, 1 << (n - 1).bit_length())
            spans = list(live.values())
            ok = False
            start = (base + al - 1) // al * al
            while start + n <= base + size:
                hit = [e for b, e in spans if b < start + n and e > start]
                if not hit:
                    ok = True
                    break
                start = (max(hit) + al - 1) // al * al
            out.append(tuple(a[:9]) + (ok,))
            if a[4]:
                live[op[1]] = (bus[op[1]], bus[op[1]] + n)
        elif op[0] == "F":
            live.pop(op[1], None)
    return out


def percentile(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def account(allocs, samples):
    """Returns a dict: per size (bytes, or 'mix' for > 8 MiB) attempts/ok/feasible/
    ok_feasible; overall counts; latency p50/p99/max in us of successful allocations;
    idle utilization (sample 'end': usable / all frames); fragmentation series."""
    per = {}
    for a in allocs:
        key = a[2] if a[2] <= 8 * MiB else "mix"
        s = per.setdefault(key, {"attempts": 0, "ok": 0, "feasible": 0, "ok_feasible": 0})
        s["attempts"] += 1
        s["ok"] += a[4]
        s["feasible"] += bool(a[9])
        s["ok_feasible"] += bool(a[4] and a[9])
    lat = [a[6] / 1000 for a in allocs if a[4]]
    idle = [s for s in samples if s[0] == "end"]
    return {
        "sizes": per,
        "attempts": len(allocs),
        "ok": sum(1 for a in allocs if a[4]),
        "feasible": sum(1 for a in allocs if a[9]),
        "ok_feasible": sum(1 for a in allocs if a[4] and a[9]),
        "p50_us": percentile(lat, 50), "p99_us": percentile(lat, 99), "max_us": max(lat) if lat else None,
        "idle_usable": idle[-1][1] / idle[-1][3] if idle else None,
        "frag": [(s[0], s[4]) for s in samples],
        "usable": [(s[0], s[1] / s[3]) for s in samples],
    }


def rate(ok, n):
    return "%.1f%% (%d/%d)" % (100.0 * ok / n, ok, n) if n else "-"
