"""Model selection inside a benchmark grid: per seed, the run that a validation metric prefers.

A grid file may name selections, each a row built from its candidate runs::

    selections:
      - {label: "MAN, meta stage chosen on validation", among: [MAN, "MAN, stronger meta"],
         metric: validation.ctcvr.auc}        # optional mode: max (default) or min

For every seed the candidate with the best ``metric`` (``max``: highest; ``min``: lowest, for a
LogLoss) on that seed is chosen, the first listed on a tie, and the row takes every metric of
the chosen run on that seed. Choosing on ``validation.*`` (the validation split, see
``metrics.json``'s ``validation_heads``) keeps the eval split out of the choice: a row picked on
eval would report the best of several draws and overstate itself.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Sequence

from schemas.config import ConfigError

KEYS = {"label", "among", "metric"}
MODES = ("max", "min")


def check_selections(path: str, selections: Any, labels: Sequence[str],
                     metrics: Sequence[str]) -> None:
    """Checks a grid's ``selections`` before anything trains.

    Raises:
      ConfigError: Naming ``path``, the selection's index and what is wrong.
    """
    if not isinstance(selections, list):
        raise ConfigError(f"{path}: selections must be a list of mappings with keys "
                          f"{sorted(KEYS)} (and optionally mode), got {selections!r}")
    seen = set(labels)
    for i, sel in enumerate(selections):
        if not isinstance(sel, dict) or not KEYS <= set(sel) or set(sel) - KEYS - {"mode"}:
            raise ConfigError(f"{path}: selections[{i}] needs the keys {sorted(KEYS)} (and "
                              f"optionally mode), got {sel!r}")
        if sel["label"] in seen:
            raise ConfigError(f"{path}: selections[{i}].label = {sel['label']!r} is already "
                              f"the label of a run or selection")
        seen.add(sel["label"])
        among = sel["among"]
        if not isinstance(among, list) or len(among) < 2 or len(set(among)) != len(among):
            raise ConfigError(f"{path}: selections[{i}].among must list 2 or more different "
                              f"runs, got {among!r}")
        unknown = [label for label in among if label not in labels]
        if unknown:
            raise ConfigError(f"{path}: selections[{i}].among names {unknown}, not runs of the "
                              f"grid; runs are {list(labels)}")
        if sel["metric"] not in metrics:
            raise ConfigError(f"{path}: selections[{i}].metric = {sel['metric']!r} is not one "
                              f"of the grid's metrics {list(metrics)}")
        if sel.get("mode", "max") not in MODES:
            raise ConfigError(f"{path}: selections[{i}].mode must be one of {list(MODES)}, got "
                              f"{sel['mode']!r}")


def select(results: Mapping[str, Any], selections: Sequence[Mapping[str, Any]],
           summary) -> List[Dict[str, Any]]:
    """The selection rows of ``results`` (``run_grid``'s dict), in ``results["runs"]``'s entry
    shape plus ``chosen`` (the chosen run's label per seed) and ``selection`` (the spec).

    Selections with a candidate that ``results`` lacks (a ``--runs`` subset) are skipped; a
    seed where every candidate's metric is NaN takes NaN for every metric.

    Args:
      results: ``{"runs": [{"label", "metrics": {m: {"values": [...]}}}, ...]}``.
      selections: Checked selection specs.
      summary: ``values -> {"mean", "std", "values"}`` (the grid's per-run summary).
    """
    by_label = {run["label"]: run for run in results["runs"]}
    rows = []
    for sel in selections:
        if any(label not in by_label for label in sel["among"]):
            continue
        runs = [by_label[label] for label in sel["among"]]
        sign = 1.0 if sel.get("mode", "max") == "max" else -1.0
        metrics = list(runs[0]["metrics"])
        seeds = len(runs[0]["metrics"][sel["metric"]]["values"])
        chosen, values = [], {m: [] for m in metrics}
        for s in range(seeds):
            scores = [run["metrics"][sel["metric"]]["values"][s] for run in runs]
            finite = [(sign * v, -k) for k, v in enumerate(scores) if not math.isnan(v)]
            if not finite:
                chosen.append(None)
                for m in metrics:
                    values[m].append(float("nan"))
                continue
            best = runs[-max(finite)[1]]
            chosen.append(best["label"])
            for m in metrics:
                values[m].append(best["metrics"][m]["values"][s])
        rows.append({"label": sel["label"], "config": None, "overrides": {},
                     "metrics": {m: summary(values[m]) for m in metrics},
                     "chosen": chosen, "selection": dict(sel)})
    return rows
