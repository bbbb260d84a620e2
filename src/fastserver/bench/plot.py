"""Draw a bench report: fastserver against the stdlib, workload by workload.

    python -m fastserver.bench.plot REPORT.json CHART.png

REPORT.json is what ``python -m fastserver bench --json REPORT.json`` writes;
``python -m fastserver bench --plot CHART.png`` calls draw() on the report of
the run it just made.  Needs matplotlib (``pip install 'fastserver[plot]'``).

The panels, with the stdlib's and fastserver's medians side by side and
fastserver's ratio to the stdlib written by its bar:

- server CPU time per operation, in µs (lower is better): the figure the
  bench compares, since on two cores the load generator often sets the
  pace of ops/s;
- throughput, in operations/s (higher is better);
- shutdown() latency, in ms on a log scale, when the report has that row.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

STDLIB_COLOR = "#999999"
FASTSERVER_COLOR = "#0072B2"  # colour-blind safe against the grey
BAR_HEIGHT = 0.38


class PlotError(Exception):
    pass


def require_matplotlib() -> Any:
    """matplotlib's pyplot on a file-only backend, or PlotError saying how to
    install it.  (Any: matplotlib is optional, and mypy does not follow it:
    pyproject.toml.)"""
    try:
        import matplotlib
    except ImportError:
        raise PlotError("drawing the chart needs matplotlib: "
                        "pip install 'fastserver[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")  # write files; never open a window
    from matplotlib import pyplot
    return pyplot


def paired_bars(axes: Any, labels: list[str], stdlib: list[float | None],
                fastserver: list[float | None], ratios: list[float | None], unit: str,
                better: str) -> None:
    """One stdlib and one fastserver bar per label, ratios by fastserver's."""
    from matplotlib.ticker import EngFormatter

    positions = range(len(labels))
    axes.barh([p - BAR_HEIGHT / 2 for p in positions], [v or 0 for v in stdlib],
              BAR_HEIGHT, color=STDLIB_COLOR, label="stdlib socketserver")
    axes.barh([p + BAR_HEIGHT / 2 for p in positions], [v or 0 for v in fastserver],
              BAR_HEIGHT, color=FASTSERVER_COLOR, label="fastserver")
    for position, value, ratio in zip(positions, fastserver, ratios):
        if value and ratio:
            axes.annotate(f" {ratio:.2f}x", (value, position + BAR_HEIGHT / 2),
                          va="center", fontsize=8)
    axes.set_yticks(list(positions))
    axes.set_yticklabels(labels)
    axes.invert_yaxis()  # the report's order, top to bottom
    axes.set_xlabel(f"{unit} ({better} is better)")
    axes.margins(x=0.15)  # room for the ratio labels
    axes.grid(axis="x", alpha=0.3)
    axes.xaxis.set_major_formatter(EngFormatter(sep=""))  # 150k, not 150000


def shutdown_bars(axes: Any, shutdown: dict[str, Any]) -> None:
    names = ["stdlib", "fastserver"]
    medians = [shutdown[name]["median_ms"] for name in names]
    axes.barh(names, medians, BAR_HEIGHT, color=[STDLIB_COLOR, FASTSERVER_COLOR])
    for position, value in enumerate(medians):
        axes.annotate(f" {value:.3g} ms", (value, position), va="center", fontsize=8)
    axes.set_xscale("log")
    axes.set_xlim(min(medians) / 3, max(medians) * 30)  # room for the labels
    axes.set_ylim(len(names) + 0.2, -1.2)  # thin bars, the report's order
    axes.set_xlabel(f"ms, median of {shutdown['trials']} (lower is better)")
    axes.set_title("shutdown() latency", fontsize=10)


def subtitle(meta: dict[str, Any]) -> str:
    parts = [f"Python {meta['python']}" if meta.get("python") else None,
             f"{meta['core']} core" if meta.get("core") else None,
             (f"medians of {meta['runs']} run(s) x {meta['duration']} s"
              if meta.get("runs") else None),
             meta.get("time", "")[:10] or None]
    return ", ".join(part for part in parts if part)


def draw(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the chart of ``report`` (run.py's --json structure) to ``path``."""
    pyplot = require_matplotlib()
    summary = report.get("summary") or []
    shutdown = report.get("shutdown")
    if not summary and not shutdown:
        raise PlotError("the report has no measurements to draw")
    widths = ([1, 1] if summary else []) + ([0.6] if shutdown else [])
    rows = max(len(summary), 2)
    figure, axes = pyplot.subplots(
        1, len(widths), figsize=(5 * sum(widths), 0.55 * rows + 1.6), squeeze=False,
        gridspec_kw={"width_ratios": widths})
    axes = list(axes[0])
    if summary:
        labels = [row["workload"] for row in summary]
        cpu, throughput = axes[0], axes[1]
        paired_bars(cpu, labels,
                    [row["stdlib"]["server_us_per_op"] for row in summary],
                    [row["fastserver"]["server_us_per_op"] for row in summary],
                    [row["ratio_us_per_op"] for row in summary],
                    "server CPU per operation, µs", "lower")
        cpu.set_title("server CPU per operation", fontsize=10)
        paired_bars(throughput, labels,
                    [row["stdlib"]["ops_per_sec"] for row in summary],
                    [row["fastserver"]["ops_per_sec"] for row in summary],
                    [row["ratio_ops_per_sec"] for row in summary],
                    "operations/s", "higher")
        throughput.set_title("throughput", fontsize=10)
        throughput.set_yticklabels([])
        # Below the panels, where it cannot cover a bar.
        figure.legend(*cpu.get_legend_handles_labels(), loc="lower center", ncol=2,
                      fontsize=8, frameon=False)
    if shutdown:
        shutdown_bars(axes[-1], shutdown)
    figure.suptitle("fastserver vs the stdlib's socketserver\n"
                    + subtitle(report.get("meta") or {}), fontsize=11)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="a report written by the bench's --json")
    parser.add_argument("chart", help="the image to write (.png, .svg, .pdf)")
    args = parser.parse_args(argv)
    with open(args.report) as f:
        report = json.load(f)
    try:
        draw(report, args.chart)
    except PlotError as exc:
        print(f"plot: {exc}", file=sys.stderr)
        return 2
    print(args.chart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
