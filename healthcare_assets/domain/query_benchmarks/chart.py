"""The index benchmarks' chart: each question's median with its index, forced to a COLLSCAN and in pandas."""

from __future__ import annotations

import textwrap

import numpy as np


def write_chart(results: list[dict], documents: int, notes: list[str], path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in Dagster steps
    import matplotlib.pyplot as plt

    names = [f"{r['name']}\n{r['bound']['kind']}, {r['indexed']['docs_fetched']:,} docs" for r in results]
    series = [("with index", "indexed", [r["indexed"]["median_ms"] for r in results]),
              ("forced COLLSCAN", "collscan", [r["collscan"]["median_ms"] for r in results]),
              ("pandas CSV scan", None, [r["pandas"]["median_ms"] if r["pandas"] else 0 for r in results])]
    y = np.arange(len(names))
    footnote = "\n".join(textwrap.fill(note, 160) for note in notes)
    note_in = 0.13 * (footnote.count("\n") + 1) + 0.1
    bottom_in = note_in + 0.35 + 0.55
    height = 0.6 + 0.75 * len(names) + bottom_in
    fig, ax = plt.subplots(figsize=(10, height))
    for offset, (label, block, values) in zip((-0.27, 0, 0.27), series):
        bars = ax.barh(y + offset, values, height=0.26, label=label)
        for bar, r in zip(bars, results):  # hatched: scaled from the scan sample, not timed on the collection
            if block and r[block]["measured_on"] == "sample":
                bar.set_hatch("//")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median latency, ms (log scale); hatched: scaled from a sample")
    ax.set_title(f"Index benchmarks on {documents:,} documents (under each query: what bounds it with its index)")
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", bbox_to_anchor=(0.5, note_in / height), ncol=3)
    fig.text(0.01, 0.05 / height, footnote, fontsize=7, va="bottom", ha="left")
    fig.subplots_adjust(left=0.2, right=0.98, top=1 - 0.6 / height, bottom=bottom_in / height)
    fig.savefig(path, dpi=110)
    plt.close(fig)
