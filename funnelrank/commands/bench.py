"""``funnelrank bench``: a grid of fast-path trainings on the same data, seeds averaged.

A grid file (YAML) names the runs::

    name: pwiser
    rows: 500000                 # synthetic rows, generated once (data.seed fixed)
    seeds: [1, 2, 3]             # train.seed values; each run is repeated per seed
    epochs: 1                    # optional override of train.epochs for every run
    data: null                   # optional CSV/dir instead of generated rows
    synthetic_mode: default      # optional world of the generated rows (default, hard, clean)
    adapter: synthetic           # optional; ali_ccp for the real sample
    overrides: {train.early_stopping_patience: 2}  # optional: under every run's overrides
    metrics: [ctr.auc, ctcvr.auc]
    runs:
      - {label: "MMoE + BCE", config: configs/mmoe.yaml}
      - {label: "MMoE + PWiseR", config: configs/mmoe.yaml, overrides: {loss.name: pwiser}}
      - {label: "LR", config: configs/mmoe.yaml, baseline: {name: logistic, C: [0.03, 0.1]}}
    selections:                  # optional: per seed, the run a validation metric prefers
      - {label: "best MMoE on validation", among: ["MMoE + BCE", "MMoE + PWiseR"],
         metric: validation.ctcvr.auc}      # (funnelrank.commands.selection)
    claims:                      # optional: paired per-seed comparisons (commands/claims.py)
      - {claim: "PWiseR keeps CTCVR AUC", run: "MMoE + PWiseR", base: "MMoE + BCE",
         metric: ctcvr.auc}

Every run trains with ``funnelrank.commands.train.train``, or, when it names a ``baseline``
(``logistic`` or ``lightgbm``, a name or a mapping with its arguments, see
``trainer.baselines``), fits that baseline per task on the same config's splits
(``funnelrank.commands.baseline.run``); the table gives mean +- std over seeds
of each metric (``<head>.<metric>`` from metrics.json, ``validation.<head>.<metric>`` from its
``validation_heads``, ``train.<key>`` for top-level keys such as ``examples_per_sec``). Results
go to ``<out>/<name>.json``, ``<out>/<name>.md`` and ``<out>/<name>.png`` (the quality metrics
with error bars), with the selection rows, the claims' paired per-seed differences (mean, 95%
interval, sign test) in the JSON's ``claims`` and under the table, and per seed each run's
learned task weights, meta query-loss trajectory and validation history (``details``); the
generated data and every run's model go to ``work/bench/<name>/``. ``bench`` keeps every
finished run in ``work/bench/cache`` (``run_cache``; ``--no-cache`` trains all): a killed grid
resumes with its finished runs, and a run two grids share (same config, data bytes and code)
trains once. ``report_stored`` (``bench
--report``) rebuilds the table and the claims from a stored ``<name>.json`` without training.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import tensorflow as tf
import yaml

from funnelrank.commands import baseline as baseline_cmd
from funnelrank.commands import claims as claims_lib
from funnelrank.commands import selection as selection_lib
from funnelrank.commands import train as train_local
from funnelrank.commands.run_cache import RunCache
from schemas import config as config_lib
from trainer import baselines

log = logging.getLogger(__name__)

# metrics.json sections kept per seed in the results file: the recipe's learned state (task
# weights), the meta stage (query-loss trajectory), early stopping (validation history).
DETAILS = ("objective", "meta", "early_stopping", "validation")


@dataclasses.dataclass(frozen=True)
class Grid:
    name: str
    runs: List[Dict[str, Any]]
    seeds: List[int]
    metrics: List[str]
    rows: int = 500_000
    epochs: Optional[int] = None
    data: Optional[str] = None
    adapter: Optional[str] = None
    synthetic_mode: Optional[str] = None
    overrides: Dict[str, Any] = dataclasses.field(default_factory=dict)
    selections: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    claims: List[Dict[str, str]] = dataclasses.field(default_factory=list)


def check_runs(path: str, runs: List[Any]) -> None:
    """Checks the runs of a grid or variants file before anything runs: each a mapping with
    ``label`` and ``config`` (and optionally ``overrides`` and ``baseline``), every baseline
    parsing.

    Raises:
      ConfigError: Naming ``path`` and the run's index.
    """
    for i, run in enumerate(runs):
        if not isinstance(run, dict) or not {"label", "config"} <= set(run):
            raise config_lib.ConfigError(f"{path}: runs[{i}] needs 'label' and 'config', got "
                                         f"{run!r}")
        extra = sorted(set(run) - {"label", "config", "overrides", "baseline"})
        if extra:  # e.g. an unquoted label with a comma in a YAML flow mapping
            raise config_lib.ConfigError(f"{path}: runs[{i}] has unknown key(s) {extra}; "
                                         f"quote labels that contain ',' or ':'")
        if run.get("baseline") is not None:  # refused before anything runs
            baselines.parse(run["baseline"], f"{path}: runs[{i}].baseline")


def load_grid(path: str, rows: Optional[int] = None, seeds: Optional[List[int]] = None,
              only: Optional[List[str]] = None) -> Grid:
    """Reads a grid file; ``rows``/``seeds`` override its values, ``only`` keeps the runs with
    those labels (in the file's order).

    Raises:
      ConfigError: Unknown keys, runs without label/config, or ``only`` naming no run.
    """
    with open(path) as f:
        raw = yaml.safe_load(f)
    fields = {f.name for f in dataclasses.fields(Grid)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise config_lib.ConfigError(f"{path}: unknown grid key(s) {unknown}; expected some of "
                                     f"{sorted(fields)}")
    check_runs(path, raw.get("runs") or [])
    mode = raw.get("synthetic_mode")
    if mode is not None and mode not in config_lib.SYNTHETIC_MODES:
        raise config_lib.ConfigError(f"{path}: synthetic_mode must be one of "
                                     f"{list(config_lib.SYNTHETIC_MODES)}, got {mode!r}")
    if not isinstance(raw.get("overrides") or {}, dict):
        raise config_lib.ConfigError(f"{path}: overrides must map config keys to values (they "
                                     f"apply to every run), got {raw['overrides']!r}")
    labels = [run["label"] for run in raw.get("runs") or []]
    selections = raw.get("selections") or []
    selection_lib.check_selections(path, selections, labels, raw.get("metrics") or [])
    claims_lib.check_claims(path, raw.get("claims") or [],
                            labels + [sel["label"] for sel in selections],
                            raw.get("metrics") or [])
    grid = Grid(**{**raw, "claims": raw.get("claims") or [], "selections": selections,
                   "overrides": raw.get("overrides") or {}})
    if only:
        labels = [run["label"] for run in grid.runs]
        missing = [label for label in only if label not in labels]
        if missing:
            raise config_lib.ConfigError(f"{path}: no run labelled {missing}; runs are {labels}")
        grid = dataclasses.replace(grid, runs=[r for r in grid.runs if r["label"] in only])
    if rows is not None:
        grid = dataclasses.replace(grid, rows=rows)
    if seeds:
        grid = dataclasses.replace(grid, seeds=list(seeds))
    return grid


def _metric(result: Mapping, dotted: str) -> float:
    head, _, name = dotted.partition(".")
    if head == "train":
        return float(result[name])
    if head == "validation":  # the final model on the validation split (model selection)
        head, _, name = name.partition(".")
        return float(result.get("validation_heads", {}).get(head, {}).get(name, float("nan")))
    if head in ("test_tasks", "test_tasks_before"):  # meta.test_task_eval's pooled query rows
        which = "after" if head == "test_tasks" else "before"
        head, _, name = name.partition(".")
        pooled = (result.get("test_tasks") or {}).get("pooled", {}).get(which, {})
        return float(pooled.get(head, {}).get(name, float("nan")))
    return float(result["heads"].get(head, {}).get(name, float("nan")))


def run_grid(grid: Grid, out_dir: str, work_dir: Optional[str] = None,
             cache: Optional[RunCache] = None) -> Dict[str, Any]:
    """Runs every (run, seed); returns the summary and writes it to ``out_dir``.

    Args:
      grid: The grid.
      out_dir: Where ``<name>.json`` and ``<name>.md`` go (small files, meant to be committed).
      work_dir: Generated data, prepared splits and each run's model and metrics (large);
        default ``work/bench/<name>``.
      cache: Finished runs (``run_cache``): a (run, seed) found there is read back, not
        trained, and every trained one is stored as soon as it ends. None: train everything.
    """
    os.makedirs(out_dir, exist_ok=True)
    work_dir = work_dir or os.path.join("work", "bench", grid.name)
    data_path = grid.data
    if data_path is None:
        from transform.ingest import synthetic

        data_path = synthetic.write_csv(os.path.join(work_dir, "data"), grid.rows, seed=7,
                                        mode=grid.synthetic_mode or "default")
    results: Dict[str, Any] = {"grid": dataclasses.asdict(grid), "runs": []}
    for run in grid.runs:
        per_seed, details = [], []
        for seed in grid.seeds:
            overrides = {"data.path": data_path, "train.seed": seed, **grid.overrides,
                         **dict(run.get("overrides") or {})}
            if grid.epochs is not None:
                overrides["train.epochs"] = grid.epochs
            if grid.adapter is not None:
                overrides["data.adapter"] = grid.adapter
            cfg = config_lib.load(run["config"], overrides)
            material = (cache.material(config_lib.to_dict(cfg), run.get("baseline"))
                        if cache is not None else None)
            result = cache.get(material) if cache is not None else None
            if result is not None:
                log.info("%s seed %d: finished run read back from %s", run["label"], seed,
                         cache.cache_dir)
            else:
                result = _train_one(run, cfg, seed, work_dir)
                if cache is not None:
                    cache.put(material, result)
            per_seed.append({m: _metric(result, m) for m in grid.metrics})
            details.append({key: result[key] for key in DETAILS if key in result})
        summary = {m: _summary([r[m] for r in per_seed]) for m in grid.metrics}
        entry = {"label": run["label"], "config": run["config"],
                 "overrides": run.get("overrides") or {}, "metrics": summary,
                 "details": details}
        if run.get("baseline") is not None:
            entry["baseline"] = run["baseline"]
        results["runs"].append(entry)
    return report(grid, results, out_dir)


def _train_one(run: Mapping[str, Any], cfg, seed: int, work_dir: str) -> Dict[str, Any]:
    t0 = time.perf_counter()
    tf.keras.backend.clear_session()
    out = os.path.join(work_dir, "runs", _slug(run["label"]), f"seed{seed}")
    if run.get("baseline") is not None:
        result = baseline_cmd.run(cfg, baselines.parse(run["baseline"],
                                                       f"runs[{run['label']!r}].baseline"), out)
    else:
        result = train_local.train(cfg, out)
    log.info("%s seed %d: %.0fs", run["label"], seed, time.perf_counter() - t0)
    return result


def report(grid: Grid, results: Dict[str, Any], out_dir: str) -> Dict[str, Any]:
    """Adds ``grid``'s selection rows to ``results`` (replacing stored ones) and evaluates its
    claims, prints the table and the claims, writes ``<name>.json``, ``<name>.md`` and
    ``<name>.png`` to ``out_dir``; returns the results."""
    runs = [run for run in results["runs"] if "selection" not in run]
    results = {**results, "runs": runs + selection_lib.select(
        {"runs": runs}, grid.selections, _summary)}
    results["claims"] = claims_lib.evaluate(results, grid.claims)
    text = markdown_table(results)
    claims_text = claims_lib.markdown(results["claims"], results["grid"]["seeds"])
    if claims_text:
        text += "\n\n" + claims_text
    print(text)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{grid.name}.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(out_dir, f"{grid.name}.md"), "w") as f:
        f.write(text + "\n")
    from funnelrank.commands.plots import grid_plot

    grid_plot(results, os.path.join(out_dir, f"{grid.name}.png"))
    return results


def report_stored(grid: Grid, out_dir: str) -> Dict[str, Any]:
    """:func:`report` on the stored ``<out_dir>/<name>.json`` (no training): the runs the file
    holds, with the grid file's current claims.

    Raises:
      FileNotFoundError: Naming the results file when there is none.
    """
    path = os.path.join(out_dir, f"{grid.name}.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no stored results {path}: run the grid first (funnelrank "
                                f"bench --grid ... without --report)")
    with open(path) as f:
        stored = json.load(f)
    stored["grid"] = {**stored["grid"], "claims": grid.claims, "selections": grid.selections}
    return report(grid, stored, out_dir)


def write_report(path: str, report: Dict[str, Any]) -> Dict[str, Any]:
    """Writes a benchmark script's ``report`` as JSON to ``path`` (directories made), with the
    machine (cores, Python, platform, TensorFlow if loaded) and the UTC date added."""
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(),
               "platform": platform.platform()}
    if "tensorflow" in sys.modules:
        machine["tensorflow"] = sys.modules["tensorflow"].__version__
    report = {**report, "machine": machine,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    return report


def result_of(command: List[str], what: str, **kwargs) -> Dict[str, Any]:
    """Runs a benchmark's child process and returns the JSON of its ``RESULT {...}`` line.

    Raises:
      SystemExit: naming ``what`` with the end of the child's stderr, when it fails or prints
        no result line.
    """
    proc = subprocess.run(command, capture_output=True, text=True, **kwargs)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        why = f"exit {proc.returncode}" if proc.returncode else "exit 0, no RESULT line"
        raise SystemExit(f"{what} failed ({why}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _summary(values: List[float]) -> Dict[str, Any]:
    """Mean and (population) std over the finite values; NaN when there are none."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return {"mean": float("nan"), "std": float("nan"), "values": values}
    return {"mean": float(np.mean(finite)), "std": float(np.std(finite)), "values": values}


def markdown_table(results: Mapping[str, Any]) -> str:
    metrics = results["grid"]["metrics"]
    seeds = results["grid"]["seeds"]
    lines = ["| run | " + " | ".join(metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    for run in results["runs"]:
        cells = []
        for m in metrics:
            s = run["metrics"][m]
            if math.isnan(s["mean"]):
                cells.append("n/a")
            elif abs(s["mean"]) >= 100:  # throughputs
                cells.append(f"{s['mean']:.0f} ± {s['std']:.0f}")
            elif m.endswith("seconds"):
                cells.append(f"{s['mean']:.1f} ± {s['std']:.1f}")
            else:
                cells.append(f"{s['mean']:.4f} ± {s['std']:.4f}")
        lines.append(f"| {run['label']} | " + " | ".join(cells) + " |")
    lines.append(f"\nmean ± std over train seeds {seeds}")
    for run in results["runs"]:
        if "chosen" in run:
            sel = run["selection"]
            lines.append(f"\n{run['label']}: per seed the {sel.get('mode', 'max')} of "
                         f"{sel['metric']} among {sel['among']}; chosen: {run['chosen']}")
    return "\n".join(lines)


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label).strip("_").lower()
