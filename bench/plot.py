"""The PNG of `python -m bench`: deliveries/s, p50 and p99 per system per step (scenarios 1 and 2). Run by an
interpreter with matplotlib (bench/.venv-peers has it):

    bench/.venv-peers/bin/python bench/plot.py results.json out.png
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import matplotlib  # type: ignore[import-not-found]

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # type: ignore[import-not-found]


def main(source: str, target: str) -> None:
    results = json.loads(Path(source).read_text())
    scenarios = [(key, title) for key, title in (("fanout", "1 run x 1,000 subscribers"),
                 ("streams", "500 runs x 2 readers")) if results.get(key)]  # fmt: skip
    figure, axes = plt.subplots(2, max(1, len(scenarios)), figsize=(6 * max(1, len(scenarios)), 8), squeeze=False)
    for column, (key, title) in enumerate(scenarios):
        for system, steps in results[key].items():
            offered = [step["offered_per_s"] for step in steps]
            axes[0][column].plot(offered, [step["deliveries_per_s"] for step in steps], marker="o", label=system)
            p50 = [step.get("p50_ms") for step in steps]
            p99 = [step.get("p99_ms") for step in steps]
            (line,) = axes[1][column].plot(offered, p50, marker="o", label=f"{system} p50")
            style = {"marker": "x", "linestyle": "--", "color": line.get_color()}
            axes[1][column].plot(offered, p99, label=f"{system} p99", **style)
        axes[0][column].set(title=f"{title}: delivered", xlabel="offered deliveries/s", ylabel="deliveries/s")
        axes[1][column].set(title=f"{title}: latency", xlabel="offered deliveries/s", ylabel="ms", yscale="log")
        for axis in (axes[0][column], axes[1][column]):
            axis.grid(True, alpha=0.3)
            axis.legend(fontsize=7)
    title = textwrap.fill(f"python -m bench, {results['date']}: {results['machine']}", 160)
    figure.suptitle(title, fontsize=7)
    figure.tight_layout()
    figure.savefig(target, dpi=100)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
