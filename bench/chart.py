"""Draw bench/results.json as bench/results.png: streamfs beside the peer of each benchmark.

    .venv/bin/pip install -e '.[bench]'   # matplotlib
    .venv/bin/python bench/chart.py

The figures are the ones the benchmarks printed (see bench/RESULTS.md); this script
only draws them, each panel on its own scale, with the target written under it.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    comparisons = json.loads((HERE / "results.json").read_text())["comparisons"]
    fig, axes = plt.subplots(1, len(comparisons), figsize=(4 * len(comparisons), 4))
    for ax, c in zip(axes, comparisons, strict=True):
        names = ["streamfs", c["peer_name"].replace(" ", "\n", 1)]
        values = [c["streamfs"], c["peer"]]
        ours_better = (c["streamfs"] > c["peer"]) == c["higher_is_better"]
        colors = ["#2b8a3e" if ours_better else "#c92a2a", "#868e96"]
        bars = ax.bar(names, values, color=colors)
        ax.bar_label(bars, labels=[f"{v:,.1f}" if v < 100 else f"{v:,.0f}" for v in values])
        ax.set_title(c["title"], fontsize=10)
        ax.set_xlabel(f"target: {c['target']}", fontsize=9)
        ax.margins(y=0.15)
    fig.suptitle("streamfs vs peers, same run (2 cores); green: streamfs ahead", fontsize=11)
    fig.tight_layout()
    out = HERE / "results.png"
    fig.savefig(out, dpi=100)
    print(out)


if __name__ == "__main__":
    main()
