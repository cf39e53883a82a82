#!/usr/bin/env python3
"""vcma against the alternatives, side by side, on one cockpit trace (cockpit.py):

  vcma       the real vcmad (sim backend) with one vcma-simvm per guest (run_vcma.py)
  carve-out  each guest's fixed reservation, sized for its peak (policies.py)
  CMA-like   in-guest CMA as mm/cma.c does it, on the same frames (policies.py)
  Linux      alloc_contig_range() in Debian's kernel under QEMU TCG (run_kernel.py)

each without pins and with a pinned share of guest pages. Prints a Markdown table,
writes it with PNG plots (matplotlib) into the results folder.

usage: compare.py BUILD_DIR [--quick] [--no-kernel] [--out DIR] [--pin SHARE]
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import accounting  # noqa: E402
import cockpit  # noqa: E402
import policies  # noqa: E402

MiB = cockpit.MiB
T0 = time.monotonic()


def progress(msg):
    t = int(time.monotonic() - T0)
    print("[%02d:%02d] %s" % (t // 60, t % 60, msg), flush=True)


def us(x):
    if x is None:
        return "-"
    return "%.0f" % x if x >= 10 else "%.1f" % x


def vcma_ratio(allocs, floor_ns_per_mib, size):
    """vcma's time per MiB against its copy floor: p50 of successful allocations of
    this size in the sizes phase (lent windows: drop, or pause+copy+remap)."""
    t = [a[6] / (a[2] / MiB) for a in allocs if a[2] == size and a[3] == "sizes" and a[4]]
    p = accounting.percentile(t, 50)
    return p / floor_ns_per_mib if p else None


def table(results, kernel, floor, pin):
    sizes = [1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB]
    out = []
    out.append("| policy | pinned | 1 MiB | 2 MiB | 4 MiB | 8 MiB | mix 16-32 MiB | all, where capacity sufficed "
               "| latency p50 / p99 / max (us) | guest pause p50 / p99 / max (us) | idle pool usable by guests |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for (name, ps), r in results.items():
        a = r["acc"]
        cells = []
        for s in sizes + ["mix"]:
            x = a["sizes"].get(s)
            cells.append("%.0f%%" % (100.0 * x["ok"] / x["attempts"]) if x else "-")
        if name == "vcma":
            pz = r["pauses"]
            pause = "%s / %s / %s" % (us(max(p["p50_us"] for p in pz.values())),
                                      us(max(p["p99_us"] for p in pz.values())),
                                      us(max(p["max_us"] for p in pz.values())))
        elif name == "CMA-like":
            pause = "per page: %s (each migrated page)" % us(floor / 256 / 1000)
        else:
            pause = "none"
        lat = "%s / %s / %s" % (us(a["p50_us"]), us(a["p99_us"]), us(a["max_us"]))
        if name == "carve-out":
            lat += " (bitmap only)"
        elif name == "CMA-like":
            lat += " (model: pages moved x floor)"
        out.append("| %s | %s | %s | %s | %s | %s |" % (
            name, "%g%%" % (ps * 100), " | ".join(cells),
            accounting.rate(a["ok_feasible"], a["feasible"]), lat + " | " + pause,
            "%.1f%%" % (100 * a["idle_usable"])))
    out.append("")
    out.append("Time per MiB as a ratio to a copy floor measured in the same place (page-by-page copy to "
               "scattered pages): vcma against its floor on this host (%.0f us/MiB), Linux's "
               "alloc_contig_range() against copy_page() in its own guest (%s). "
               "p50 of whole requests: for Linux from its first window tried, failed windows included, as "
               "cma_alloc() spends it." % (floor / 1000, kernel and ", ".join(
                   "%s: %.0f us/MiB" % (t, kernel[t]["floor_ns_per_mib"] / 1000) for t in ("nopin", "pin")) or "not run"))
    out.append("")
    out.append("| engine | pinned | 1 MiB | 2 MiB | 4 MiB | 8 MiB | requests ok | windows tried per request |")
    out.append("|---|---|---|---|---|---|---|---|")
    for (name, ps), r in results.items():
        if name != "vcma":
            continue
        ratios = [vcma_ratio(r["allocs"], floor, s) for s in sizes]
        n = sum(1 for x in r["allocs"] if x[3] == "sizes")
        ok = sum(1 for x in r["allocs"] if x[3] == "sizes" and x[4])
        out.append("| vcma (vacate lent window) | %g%% | %s | %s | 1.00 |" % (
            ps * 100, " | ".join("%.2fx" % x if x else "-" for x in ratios), accounting.rate(ok, n)))
    if kernel:
        for tag, ps in (("nopin", 0.0), ("pin", pin)):
            k = kernel[tag]
            fl = k["floor_ns_per_mib"]
            ok = sum(v["ok"] for v in k["sizes"].values())
            n = ok + sum(v["fail"] for v in k["sizes"].values())
            win = sum(v["windows"] for v in k["sizes"].values())
            label = "%g%% (%d pages)" % (ps * 100, k.get("pinned_pages", 0)) if ps else "0%"
            out.append("| Linux %s alloc_contig_range, QEMU TCG | %s | %s | %s | %.2f |" % (
                kernel["kernel"], label,
                " | ".join("%.2fx" % (k["sizes"][s]["req_ns_per_mib_p50"] / fl) for s in (1, 2, 4, 8)),
                accounting.rate(ok, n), win / n if n else 0))
    else:
        out.append("| Linux alloc_contig_range | not run | - | - | - | - | - | - |")
    return "\n".join(out)


def plots(results, outdir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    files = []
    keys = list(results)
    labels = ["%s, %g%% pinned" % (n, p * 100) for n, p in keys]
    sizes = [1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB, "mix"]
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=80)
    w = 0.8 / len(keys)
    for i, k in enumerate(keys):
        acc = results[k]["acc"]["sizes"]
        ys = [100.0 * acc[s]["ok"] / acc[s]["attempts"] if s in acc else 0 for s in sizes]
        ax.bar([j + i * w for j in range(len(sizes))], ys, w, label=labels[i])
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(sizes))])
    ax.set_xticklabels(["1 MiB", "2 MiB", "4 MiB", "8 MiB", "16-32 MiB"])
    ax.set_ylabel("success %")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    ax.set_title("Allocation success per size (same trace)")
    fig.tight_layout()
    files.append("compare-success.png")
    fig.savefig(os.path.join(outdir, files[-1]))
    plt.close(fig)
    for key, fname, ylabel, title in (
            ("frag", "compare-fragmentation.png", "largest allocatable window (MiB)",
             "Fragmentation over the run"),
            ("usable", "compare-usable.png", "share of the pool backing guest RAM",
             "Memory usable by guests over the run")):
        fig, ax = plt.subplots(figsize=(8, 3.4), dpi=80)
        for i, k in enumerate(keys):
            series = results[k]["acc"][key]
            ax.plot(range(len(series)), [v for _, v in series], marker=".", label=labels[i])
        series = results[keys[0]]["acc"][key]
        step = max(1, len(series) // 10)
        ax.set_xticks(range(0, len(series), step))
        ax.set_xticklabels([series[j][0] for j in range(0, len(series), step)], rotation=30, fontsize=7)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        files.append(fname)
        fig.savefig(os.path.join(outdir, fname))
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 3.4), dpi=80)
    for i, k in enumerate(keys):
        lat = sorted(a[6] / 1000 for a in results[k]["allocs"] if a[4] and a[6] > 0)
        if lat:
            ax.plot(lat, [100.0 * (j + 1) / len(lat) for j in range(len(lat))], label=labels[i])
    ax.set_xscale("log")
    ax.set_xlabel("allocation latency (us; carve-out is a bitmap search, not shown)")
    ax.set_ylabel("% of successful allocations")
    ax.set_title("Latency CDF")
    ax.legend(fontsize=7)
    fig.tight_layout()
    files.append("compare-latency.png")
    fig.savefig(os.path.join(outdir, "compare-latency.png"))
    plt.close(fig)
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-kernel", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "results"))
    ap.add_argument("--pin", type=float, default=0.02, help="pinned share of guest pages (default 0.02)")
    a = ap.parse_args()
    scale = cockpit.Scale("quick" if a.quick else "default")
    os.makedirs(a.out, exist_ok=True)
    ops = cockpit.generate(scale)
    pk = cockpit.peaks(ops)
    nalloc = sum(1 for op in ops if op[0] == "A")
    progress("trace: %d allocations (%s), peaks %s MiB, pool %d MiB" % (
        nalloc, scale.name, {k: v // MiB for k, v in pk.items()}, cockpit.POOL // MiB))
    fl = subprocess.run([os.path.join(a.build, "bench", "vcma-replay"), "--floor"], capture_output=True,
                        text=True, check=True).stdout.split()
    floor = float(fl[1])
    progress("copy floor on this host: %.0f us per MiB (page by page, scattered)" % (floor / 1000))
    import run_vcma
    results = {}
    for ps in (0.0, a.pin):
        progress("vcma: vcmad + 3 vcma-simvm guests, %g%% of guest pages pinned" % (ps * 100))
        r = run_vcma.run(a.build, ops, ps, progress)
        results[("vcma", ps)] = r
        for cls in (policies.CarveOut, policies.CmaLike):
            progress("%s: replaying, %g%% pinned" % (cls.name, ps * 100))
            results[(cls.name, ps)] = policies.replay(cls(cockpit.GUESTS, pk, ps, floor / 256, seed=1), ops)
    order = [(n, p) for n in ("vcma", "carve-out", "CMA-like") for p in (0.0, a.pin)]
    results = {k: results[k] for k in order}
    for k, r in results.items():
        r["acc"] = accounting.account(r["allocs"], r["samples"])
    kernel = None
    if not a.no_kernel:
        import run_kernel
        kernel, why = run_kernel.run(a.pin, 4 if a.quick else 16, progress)
        if not kernel:
            progress("kernel: not run: " + why)
    text = table(results, kernel, floor, a.pin)
    wall = time.monotonic() - T0
    head = ("Trace: %d allocations (%s scale; sizes %d rounds per size, %d reverse-gear bursts, %d long-run "
            "allocations), pool %d MiB = the three devices' peaks (cluster %d, ivi %d, rearcam %d MiB); guests' RAM "
            "%s MiB. Wall time %.0f s." % (
                nalloc, scale.name, scale.rounds, scale.bursts, scale.long_ops, cockpit.POOL // MiB,
                pk["cluster"] // MiB, pk["ivi"] // MiB, pk["rearcam"] // MiB,
                "/".join(str(g[1] // MiB) for g in cockpit.GUESTS), wall))
    print()
    print(head)
    print()
    print(text)
    files = plots(results, a.out)
    with open(os.path.join(a.out, "compare.md"), "w") as f:
        f.write(head + "\n\n" + text + "\n\n" + "\n".join("![%s](%s)" % (x, x) for x in files) + "\n")
    with open(os.path.join(a.out, "compare.json"), "w") as f:
        json.dump({"floor_ns_per_mib": floor, "kernel": kernel, "wall_s": wall,
                   "policies": {"%s/%g" % k: {"acc": r["acc"], "pauses": r.get("pauses")}
                                for k, r in results.items()}}, f, indent=1, default=str)
    progress("wrote %s (compare.md, compare.json, %s)" % (os.path.normpath(a.out), ", ".join(files)))
    # goals
    for p in (0.0, a.pin):
        acc = results[("vcma", p)]["acc"]
        small = [acc["sizes"][s] for s in (1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB)]
        good = all(x["ok_feasible"] == x["feasible"] for x in small)
        print("goal: vcma 100%% of 1/2/4/8 MiB where capacity sufficed, %g%% pinned: %s" %
              (p * 100, "PASS" if good else "MISS"))
        print("goal: >= 95%% of the idle pool usable by guests, %g%% pinned: %s (%.1f%%)" %
              (p * 100, "PASS" if acc["idle_usable"] >= 0.95 else "MISS", 100 * acc["idle_usable"]))


if __name__ == "__main__":
    main()
