#!/usr/bin/env python3
"""chart.py — draws the benchmark chart from results.json (written by bench/bench.ts).

    python chart.py results.json chart.png

Three panels: throughput per arm (wrk, closed loop); p50 and p99 latency at the fixed rate of
50% of A's throughput (log scale: arms that cannot sustain it are saturated); p50 and p99 at the
lower fixed rate (log scale too: a p99 can be many times its p50). Bars are medians over
rounds, dots the individual rounds, labels the ratio to arm A. Needs matplotlib (bench/run installs it into bench/.venv).
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


def per_round(runs, phase, get):
    return {a: [get(x) for x in runs if x["arm"] == a and x["phase"] == phase] for a in ARMS}


def label_for(arm, ratio):
    if arm == "A":
        return "A"
    return f"×{ratio:,.0f}" if ratio >= 10 else f"×{ratio:.2f}"


def throughput_panel(ax, r):
    arms = r["summary"]["arms"]
    rounds = per_round(r["runs"], "throughput", lambda x: x["rps"])
    med = [arms[a]["rpsMedian"] for a in ARMS]
    ax.bar(range(4), med, color=[COLORS[a] for a in ARMS], width=0.65, zorder=2)
    for i, a in enumerate(ARMS):
        ax.scatter([i] * len(rounds[a]), rounds[a], color="black", s=12, zorder=3, alpha=0.7)
        ax.annotate(label_for(a, arms[a]["rpsRatio"]), (i, max([med[i]] + rounds[a])),
                    textcoords="offset points", xytext=(0, 4), ha="center", fontsize=9)
    ax.set_title("Throughput, wrk -c32 (requests/s, higher is better)", fontsize=10)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.1)


def latency_panel(ax, r, phase, key, title, log):
    arms = r["summary"]["arms"]
    width = 0.38
    for j, (pk, rk, alpha) in enumerate([("p50UsMedian", "p50Ratio", 0.55), ("p99UsMedian", "p99Ratio", 1.0)]):
        field = "p50Us" if j == 0 else "p99Us"
        rounds = per_round(r["runs"], phase, lambda x, f=field: x["rate"][f])
        xs = [i + (j - 0.5) * width for i in range(4)]
        med = [arms[a][key][pk] for a in ARMS]
        ax.bar(xs, med, width=width * 0.95, color=[COLORS[a] for a in ARMS], alpha=alpha, zorder=2,
               label="p50" if j == 0 else "p99")
        for i, a in enumerate(ARMS):
            ax.scatter([xs[i]] * len(rounds[a]), rounds[a], color="black", s=8, zorder=3, alpha=0.6)
            txt = label_for(a, arms[a][key][rk])
            if not arms[a][key]["sustained"] and j == 1:
                txt += "\n(saturated)"
            ax.annotate(txt, (xs[i], max([med[i]] + rounds[a])), textcoords="offset points",
                        xytext=(0, 3), ha="center", fontsize=7)
    if log:
        ax.set_yscale("log")
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi * 8)
    else:
        ax.set_ylim(0, ax.get_ylim()[1] * 1.15)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")


def main(src: str, dst: str) -> None:
    with open(src) as fh:
        r = json.load(fh)
    rate = r["meta"]["fixedRate"]
    low = r["meta"]["config"]["lowRate"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.4))
    throughput_panel(axes[0], r)
    latency_panel(axes[1], r, "fixed", "fixed",
                  f"Latency at {rate:,} req/s = 50% of A's max (µs, log; lighter: p50, darker: p99)", True)
    latency_panel(axes[2], r, "low", "low", f"Latency at {low:,} req/s (µs, log; lighter: p50, darker: p99)", True)
    for ax in axes:
        ax.set_xticks(range(4))
        ax.set_xticklabels([LABELS[a] for a in ARMS], fontsize=8)
        ax.grid(axis="y", alpha=0.3, zorder=0)
    m = r["machine"]
    fig.suptitle(
        f"Sidelight overhead, {r['meta']['date'][:10]} {r['meta']['sha']}: {m['nproc']} vCPU {m['cpuModel']}, "
        f"nginx return 200 on loopback; bars = median of {r['meta']['config']['rounds']} interleaved rounds, "
        f"dots = rounds, labels = ratio to A",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: chart.py results.json chart.png")
    main(sys.argv[1], sys.argv[2])
