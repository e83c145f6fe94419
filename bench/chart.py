#!/usr/bin/env python3
"""chart.py — draws the benchmark chart from results.json (written by bench/bench.ts).

    python chart.py results.json chart.png

Three panels: throughput per arm (wrk, closed loop), then p50 and p99 at the fixed rate.
Bars are medians over rounds, dots the individual rounds, labels the ratio to arm A.
Needs matplotlib (bench/run installs it into bench/.venv).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ARMS = ["A", "B", "C", "D"]
LABELS = {
    "A": "A\nno agent",
    "B": "B\nSidelight\n(100% exported)",
    "C": "C\nsidecar proxy\n(nginx + log)",
    "D": "D\nSidelight\n(server filtered)",
}
COLORS = {"A": "#7f7f7f", "B": "#1f77b4", "C": "#d62728", "D": "#9ecae1"}


def main(src: str, dst: str) -> None:
    with open(src) as fh:
        r = json.load(fh)
    runs = r["runs"]
    arms = r["summary"]["arms"]
    rate = r["meta"]["fixedRate"]

    def rounds(phase, key):
        out = {}
        for a in ARMS:
            vals = []
            for x in runs:
                if x["arm"] == a and x["phase"] == phase:
                    v = x["rps"] if key == "rps" else x["rate"][key]
                    vals.append(v)
            out[a] = vals
        return out

    panels = [
        ("Throughput (requests/s, higher is better)", "rpsMedian", "rpsRatio", rounds("throughput", "rps"), 1.0),
        (f"p50 latency at {rate:,} req/s (µs)", "p50UsMedian", "p50Ratio", rounds("fixed", "p50Us"), 1.0),
        (f"p99 latency at {rate:,} req/s (µs)", "p99UsMedian", "p99Ratio", rounds("fixed", "p99Us"), 1.0),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    for ax, (title, key, rkey, per_round, _) in zip(axes, panels):
        xs = range(len(ARMS))
        med = [arms[a][key] for a in ARMS]
        ax.bar(xs, med, color=[COLORS[a] for a in ARMS], width=0.65, zorder=2)
        for i, a in enumerate(ARMS):
            vals = per_round[a]
            ax.scatter([i] * len(vals), vals, color="black", s=12, zorder=3, alpha=0.7)
            ratio = arms[a][rkey]
            label = "A" if a == "A" else f"×{ratio:.2f}"
            top = max([med[i]] + vals)
            ax.annotate(label, (i, top), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=9)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([LABELS[a] for a in ARMS], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3, zorder=0)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.08)
    m = r["machine"]
    fig.suptitle(
        f"Sidelight overhead — {r['meta']['date'][:10]} {r['meta']['sha']} — {m['nproc']} vCPU {m['cpuModel']}, "
        f"nginx return 200, loopback; bars: median of {r['meta']['config']['rounds']} interleaved rounds, dots: rounds",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: chart.py results.json chart.png")
    main(sys.argv[1], sys.argv[2])
