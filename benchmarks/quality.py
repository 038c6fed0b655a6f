"""Learning quality (issue 16): training defaults chosen on VALIDATION data over three data sets.

Data sets (generated once into ``--data-dir``, data seed 7, ``--rows`` rows each):

* ``default``: the synthetic log (``funnelrank generate``), read with the synthetic preset;
* ``hard``: ``funnelrank generate --mode hard`` (rarer ids, user/item biases, a segment x
  category interaction, a bot segment), synthetic preset;
* ``strings``: the default log with ids as text and 5 % of the feature cells empty
  (``funnelrank generate --string-ids --missing-rate 0.05``), read with ``adapter: csv`` and
  the features declared with ``dtype: auto`` (:data:`STRINGS_DATA`).

Each data set is prepared and preprocessed once (``funnelrank train``'s own steps); then every
variant (a label and config overrides on top of ``--config``) and seed trains through
``trainer.session.TrainingSession`` and is scored on the **validation** split only
(``--split validation``, the default: the split early stopping also watches). The eval split
is scored only with ``--split eval``, for the final benchmark of chosen settings, never to
choose them. Baselines (``baseline: logistic`` / ``lightgbm`` in a variant) run on the same
arrays.

Usage::

    python benchmarks/quality.py --variants benchmarks/grids/quality/sweep1.yaml \\
        --datasets default,hard,strings --seeds 1 --out benchmarks/results/quality/tuning.json

Results: one JSON with every run (per-head AUC / LogLoss / GAUC, the epochs run and the best
epoch, the validation history) written after each run, so a partial sweep is kept.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from schemas._env import ensure_legacy_keras  # noqa: E402

ensure_legacy_keras()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import yaml  # noqa: E402

from funnelrank.commands import train as train_local  # noqa: E402
from funnelrank.commands.bench import check_runs, write_report  # noqa: E402
from schemas import config as config_lib  # noqa: E402
from trainer import baselines  # noqa: E402
from trainer.model import FeatureInfo  # noqa: E402
from trainer.session import SplitData, TrainingSession  # noqa: E402
from transform import preprocessor  # noqa: E402
from transform.ingest import synthetic  # noqa: E402

log = logging.getLogger("quality")

STRINGS_DATA = {
    "data.adapter": "csv",
    "data.features": {
        "sparse": ["user_id", "item_id", "category_id", "advertiser_id", "ad_task_id",
                   "target_action", "device", "hour", "user_segment"],
        "dense": ["user_activity", "item_quality", "price", "ad_bid"],
        "user": "user_id"},
    "data.labels": {"ctr": "click", "cvr": "conversion"},
}
DATASETS = {
    "default": {"mode": "default"},
    "hard": {"mode": "hard"},
    "strings": {"mode": "default", "string_ids": True, "missing_rate": 0.05},
}


def dataset_csv(name: str, data_dir: str, rows: int) -> str:
    """The data set's CSV, generated on first use."""
    out = os.path.join(data_dir, f"{name}_{rows}")
    path = os.path.join(out, "impressions.csv")
    if not os.path.exists(path):
        synthetic.write_csv(out, rows, seed=7, **DATASETS[name])
    return path


def data_overrides(name: str, path: str) -> Dict[str, Any]:
    return {"data.path": path, **(STRINGS_DATA if name == "strings" else {})}


def prepared_arrays(cfg, work_dir: str):
    """``(spec, info, {split: arrays}, rows)`` of ``cfg``'s data (prepared once)."""
    prepared, spec, frames = train_local.load_splits(cfg, work_dir)
    pre = preprocessor.fit(frames["train"], spec)
    arrays = {k: pre.transform(v) for k, v in frames.items()}
    info = FeatureInfo(vocab_sizes=pre.vocab_sizes, dense_keys=spec.dense_keys,
                       num_actions=spec.num_actions)
    return spec, info, arrays, dict(prepared.rows), pre.vocab_sizes


def run_network(cfg, spec, info, arrays, split: str) -> Dict[str, Any]:
    tf.keras.backend.clear_session()
    session = TrainingSession(cfg, spec, info)
    t0 = time.perf_counter()
    model, progress = session.fit(SplitData(arrays=arrays["train"]),
                                  SplitData(arrays=arrays["validation"]))
    seconds = time.perf_counter() - t0
    heads = session.evaluate(model, SplitData(arrays=arrays[split]))
    history = {k: [float(x) for x in v] for k, v in model.history.history.items()
               if k.startswith("val_")}
    stop = progress.summary.get("early_stopping") or progress.summary.get("validation") or {}
    return {"heads": heads, "history": history, "epochs_run": stop.get("epochs_run"),
            "best_epoch": stop.get("best_epoch"), "train_seconds": seconds,
            "examples_per_sec": progress.examples_per_sec}


def run_baseline(cfg, spec, vocab_sizes, arrays, split: str, baseline) -> Dict[str, Any]:
    result = baselines.run(baselines.parse(baseline), spec, vocab_sizes, cfg.tasks, cfg.funnel,
                           arrays, num_actions=spec.num_actions, seed=cfg.train.seed)
    heads = result["heads"] if split == "eval" else result["validation_heads"]
    return {"heads": heads, "baseline": result["baseline"],
            "train_seconds": result["train_seconds"]}


def load_variants(path: str) -> Dict[str, Any]:
    """Reads and checks a variants file (``{config: FILE, overrides: {...}, runs: [{label,
    overrides | baseline}]}``; the file's ``overrides`` go under every trained run's own).

    Every run's overrides must give a valid config on top of ``config`` and every baseline must
    parse, so that a typo fails here and not after hours of earlier runs.

    Raises:
      ConfigError: Unknown keys, a run without a label, a repeated label, an invalid override
        or baseline (the message names the file and the run's index or label).
    """
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    unknown = sorted(set(raw) - {"config", "runs", "overrides"})
    if unknown or not raw.get("runs"):
        raise config_lib.ConfigError(f"{path}: expected keys 'config' and 'runs' (a non-empty "
                                     f"list), optionally 'overrides'; got {sorted(raw)}")
    shared = raw.get("overrides") or {}
    if not isinstance(shared, dict):
        raise config_lib.ConfigError(f"{path}: overrides must map config keys to values (they "
                                     f"apply to every run), got {shared!r}")
    if shared:  # under every run's own overrides (baselines read only the data keys)
        raw["runs"] = [{**run, "overrides": {**shared, **dict(run.get("overrides") or {})}}
                       if isinstance(run, dict) and "baseline" not in run else run
                       for run in raw["runs"]]
    base = raw.get("config", "configs/mmoe.yaml")
    check_runs(path, [{"config": base, **run} if isinstance(run, dict) else run
                      for run in raw["runs"]])
    seen = set()
    for run in raw["runs"]:
        if run["label"] in seen:
            raise config_lib.ConfigError(f"{path}: label {run['label']!r} appears twice")
        seen.add(run["label"])
        try:  # every override on top of the run's config, as main() will load it
            config_lib.load(run.get("config", base), dict(run.get("overrides") or {}))
        except config_lib.ConfigError as e:
            raise config_lib.ConfigError(f"{path}: run {run['label']!r}: {e}") from e
    return raw


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", required=True,
                   help="YAML: {config: FILE, runs: [{label, overrides | baseline}]}")
    p.add_argument("--datasets", default="default,hard,strings")
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--seeds", default="1")
    p.add_argument("--split", choices=["validation", "eval"], default="validation")
    p.add_argument("--only", help="labels to run, separated by ';'")
    p.add_argument("--data-dir", default="work/quality")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    spec_file = load_variants(args.variants)
    runs = spec_file["runs"]
    if args.only:
        keep = [x.strip() for x in args.only.split(";")]
        runs = [r for r in runs if r["label"] in keep]
    seeds = [int(s) for s in args.seeds.split(",")]
    report: Dict[str, Any] = {"variants": args.variants, "split": args.split,
                              "rows": args.rows, "seeds": seeds, "runs": []}
    if os.path.exists(args.out):  # resume: keep what is there, skip what ran
        with open(args.out) as f:
            report["runs"] = json.load(f).get("runs", [])
    done = {(r["dataset"], r["label"], r["seed"]) for r in report["runs"]}
    for name in args.datasets.split(","):
        path = dataset_csv(name, args.data_dir, args.rows)
        base = config_lib.load(spec_file.get("config", "configs/mmoe.yaml"),
                               data_overrides(name, path))
        spec, info, arrays, rows, vocab = prepared_arrays(
            base, os.path.join(args.data_dir, "prepared", f"{name}_{args.rows}"))
        for run in runs:
            for seed in seeds:
                if (name, run["label"], seed) in done:
                    continue
                overrides = {**data_overrides(name, path), **dict(run.get("overrides") or {}),
                             "train.seed": seed}
                cfg = config_lib.load(run.get("config", spec_file.get("config",
                                                                      "configs/mmoe.yaml")),
                                      overrides)
                t0 = time.perf_counter()
                if run.get("baseline") is not None:
                    result = run_baseline(cfg, spec, vocab, arrays, args.split, run["baseline"])
                else:
                    result = run_network(cfg, spec, info, arrays, args.split)
                entry = {"dataset": name, "label": run["label"], "seed": seed,
                         "overrides": run.get("overrides") or {},
                         "baseline": run.get("baseline"), "rows": rows, **result}
                report["runs"].append(entry)
                aucs = {h: round(m["auc"], 4) for h, m in result["heads"].items()}
                log.info("%s | %s | seed %d: %s, epochs %s (best %s), %.0fs", name,
                         run["label"], seed, aucs, result.get("epochs_run"),
                         result.get("best_epoch"), time.perf_counter() - t0)
                write_report(args.out, report)
    print(summary_table(report))
    return 0


def summary_table(report: Dict[str, Any]) -> str:
    """Markdown: mean +- std over seeds of each head's AUC, per data set and label."""
    rows: Dict[tuple, Dict[str, list]] = {}
    for r in report["runs"]:
        cell = rows.setdefault((r["dataset"], r["label"]), {})
        for head, m in r["heads"].items():
            cell.setdefault(head, []).append(m["auc"])
        if r.get("epochs_run"):
            cell.setdefault("epochs", []).append(r["best_epoch"])
    lines = [f"{report['split']} split: AUC mean ± std over seeds {report['seeds']}", "",
             "| data | run | ctr | cvr | ctcvr | best epoch |", "|---|---|---|---|---|---|"]
    for (dataset, label), cell in rows.items():
        def fmt(head):
            v = cell.get(head)
            return f"{np.mean(v):.4f} ± {np.std(v):.4f}" if v else "n/a"
        epochs = ",".join(str(e) for e in cell.get("epochs", [])) or "-"
        lines.append(f"| {dataset} | {label} | {fmt('ctr')} | {fmt('cvr')} | {fmt('ctcvr')} "
                     f"| {epochs} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
