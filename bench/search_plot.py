"""Plot ``bench/search.py --json`` runs: p95 per query, before and after, per backend.

    .venv/bin/python bench/search_plot.py OUT.png LABEL=RUN.json [LABEL=RUN.json ...]

Each ``LABEL=RUN.json`` is one run (e.g. ``sqlite before=/tmp/a.json``); bars are grouped
by query, one bar per run, on a log scale, with the 50 ms goal of issue 22 drawn across.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    out, *specs = sys.argv[1:]
    runs = []
    for spec in specs:
        label, _, path = spec.partition("=")
        runs.append((label, json.loads(Path(path).read_text())))
    names = [row["name"] for row in runs[0][1]["rows"]]
    fig, ax = plt.subplots(figsize=(11, 6))
    width = 0.8 / len(runs)
    for n, (label, run) in enumerate(runs):
        p95 = {row["name"]: row["p95"] for row in run["rows"]}
        xs = [i + (n - (len(runs) - 1) / 2) * width for i in range(len(names))]
        load = run["load"][0]
        ax.bar(xs, [p95.get(name, 0) for name in names], width, label=f"{label} (load {load:.1f})")
    ax.axhline(50, color="red", linestyle="--", linewidth=1, label="goal: p95 < 50 ms")
    ax.set_yscale("log")
    ax.set_ylabel("p95 over HTTP, ms (log scale)")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([textwrap.fill(name, 18) for name in names], fontsize=7)
    ax.set_title("Search at 100,000 offers, one request at a time (bench/search.py)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
