"""Benchmark plots: matplotlib PNGs written beside the benchmark tables.

* :func:`grid_plot`: a ``funnelrank bench`` grid, one panel per quality metric (AUC, GAUC,
  ...), a bar per run at the mean over seeds with the standard deviation as error bar.
* :func:`throughput_plot`: ``benchmarks/throughput.py``'s report, training and inference
  examples/s of each model per implementation (this project against the peers).

``python -m funnelrank.commands.plots RESULT.json ...`` redraws the PNG of saved results
(``<name>.png`` beside each JSON file).
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Dict, List, Mapping, Optional


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def quality_metrics(metrics: List[str]) -> List[str]:
    """The grid metrics plotted as quality: not run statistics (``train.*``)."""
    return [m for m in metrics if not m.startswith("train.")]


def grid_plot(results: Mapping[str, Any], path: str) -> Optional[str]:
    """Writes the grid's quality metrics as a PNG to ``path`` (None when it has none).

    Args:
      results: ``funnelrank.commands.bench.run_grid``'s results (or its saved JSON).
      path: The PNG file.
    """
    metrics = quality_metrics(results["grid"]["metrics"])
    if not metrics or not results["runs"]:
        return None
    plt = _pyplot()
    labels = [run["label"] for run in results["runs"]]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics) + 1.6,
                                                       0.38 * len(labels) + 1.4),
                             sharey=True, squeeze=False)
    y = list(range(len(labels)))
    for ax, metric in zip(axes[0], metrics):
        means = [run["metrics"][metric]["mean"] for run in results["runs"]]
        stds = [run["metrics"][metric]["std"] for run in results["runs"]]
        finite = [(m, s) for m, s in zip(means, stds) if not math.isnan(m)]
        if not finite:
            ax.set_title(f"{metric} (n/a)")
            continue
        ax.barh(y, [0.0 if math.isnan(m) else m for m in means],
                xerr=[0.0 if math.isnan(s) else s for s in stds], capsize=3, color="#4878a8")
        low = min(m - s for m, s in finite)
        high = max(m + s for m, s in finite)
        margin = max((high - low) * 0.15, 0.005)
        ax.set_xlim(max(low - margin, 0.0), high + margin)  # zoomed: AUCs differ in the 2nd digit
        for yi, m in zip(y, means):
            if math.isnan(m):
                ax.text(ax.get_xlim()[0], yi, " n/a", va="center", fontsize=8)
        ax.set_title(metric)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y)
    axes[0][0].set_yticklabels(labels)
    axes[0][0].invert_yaxis()
    seeds = results["grid"].get("seeds")
    fig.suptitle(f"{results['grid']['name']}: mean ± std over train seeds {seeds}")
    fig.tight_layout()
    return _save(fig, path, plt)


def throughput_plot(report: Mapping[str, Any], path: str) -> str:
    """Writes training and inference examples/s per model and implementation to ``path``.

    Args:
      report: ``benchmarks/throughput.py``'s report (or its saved JSON): ``results`` rows
        with ``model``, ``peer``, ``train_examples_per_sec``, ``inference_examples_per_sec``.
      path: The PNG file.
    """
    plt = _pyplot()
    rows = report["results"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    peers = list(dict.fromkeys(r["peer"] for r in rows))
    value = {(r["model"], r["peer"]): r for r in rows}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / max(len(peers), 1)
    for ax, key, title in ((axes[0], "train_examples_per_sec", "training"),
                           (axes[1], "inference_examples_per_sec", "inference")):
        for i, peer in enumerate(peers):
            xs = [m + (i - (len(peers) - 1) / 2) * width for m in range(len(models))]
            ys = [value[(model, peer)][key] if (model, peer) in value else 0.0
                  for model in models]
            ax.bar(xs, [y / 1000 for y in ys], width, label=peer)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models)
        ax.set_ylabel("thousand examples / s")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"Throughput, {report.get('rows')} rows, batch {report.get('batch')}")
    fig.tight_layout()
    return _save(fig, path, plt)


def _save(fig, path: str, plt) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_file(json_path: str) -> Optional[str]:
    """The PNG of a saved result (grid or throughput), written beside it."""
    with open(json_path) as f:
        results: Dict[str, Any] = json.load(f)
    png = os.path.splitext(json_path)[0] + ".png"
    if results.get("benchmark") == "throughput":
        return throughput_plot(results, png)
    if "grid" in results:
        return grid_plot(results, png)
    raise ValueError(f"{json_path}: neither a bench grid result nor a throughput report")


def main(argv: Optional[List[str]] = None) -> int:
    for path in (sys.argv[1:] if argv is None else argv):
        print(plot_file(path) or f"{path}: nothing to plot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
