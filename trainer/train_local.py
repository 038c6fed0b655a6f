"""``funnelrank train``: the fast experiment path, no TFX.

Reads the data through the same adapters as the pipeline, fits vocabularies and dense
statistics in process (``trainer.preprocess``, the same maths as the Transform component),
trains the same network and loss code under MirroredStrategy (checkpointing to
``<out>/backup`` so a killed run resumes when started again with the same ``--out``), and
writes ``metrics.json``::

    {"heads": {"ctr": {"auc": .., "logloss": .., ...}, ...}, "examples_per_sec": .., "rows": ..}
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Dict, Optional

import numpy as np
import pandas as pd
import tensorflow as tf

from funnelrank.data import adapters
from schemas.features import transformed_name
from trainer import config as config_lib
from trainer import preprocess
from trainer.data import from_arrays
from trainer.fit import evaluate_heads, fit_model, format_report
from trainer.model import FeatureInfo
from trainer.strategy import make_strategy

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


VALIDATION_SALT = 0x5EED_0F_5A1D


def hash_split(frame: pd.DataFrame, eval_percent: int, salt: int = 0):
    """Deterministic split by a hash of each row's content (like ExampleGen's hash split).

    Splitting a split again needs another ``salt``: with the same one its rows all fall in
    the buckets they were selected by. The salt is mixed into the row hash (pandas' own
    ``hash_key`` only affects text columns).
    """
    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    if salt:
        with np.errstate(over="ignore"):
            hashes = ((hashes ^ np.uint64(salt)) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(33)
    buckets = hashes % 100
    is_eval = buckets < eval_percent
    return frame[~is_eval].reset_index(drop=True), frame[is_eval].reset_index(drop=True)


def load_splits(cfg: config_lib.ExperimentConfig, work_dir: str) -> Dict[str, pd.DataFrame]:
    """Validated train / eval (/ test) frames for ``cfg.data``."""
    prepared = adapters.prepare(cfg.data, work_dir)
    log.info("%s", adapters.describe_drops(prepared))
    if prepared.total_stats.rows_dropped:
        print(adapters.describe_drops(prepared))
    frames = adapters.load_frames(prepared)
    if prepared.hash_split:
        train, evaluation = hash_split(frames["all"], cfg.data.eval_percent)
        return {"train": train, "eval": evaluation}, prepared.spec
    return frames, prepared.spec


def with_adm(cfg: config_lib.ExperimentConfig, spec, frames):
    """ADM masks (``transform.adm``, NumPy) added to every split; returns (spec, frames)."""
    from schemas import features
    from transform import adm

    try:
        spec = features.with_adm(spec)
    except ValueError as e:
        raise config_lib.ConfigError(f"adm.enabled: {e}") from e
    params = adm.AdmParams.for_spec(spec, cfg.adm.window_seconds,
                                    cfg.adm.thresholds[0] if len(cfg.adm.thresholds) == 1
                                    else cfg.adm.thresholds)
    t0 = time.perf_counter()
    frames = adm.add_to_frames(frames, params)
    shares = [float(frames["train"][k].mean()) for k in spec.adm_mask_keys]
    log.info("ADM (T=%ds, alpha=%s) in %.1fs: share of train rows per action mask %s",
             params.window_seconds, list(params.thresholds), time.perf_counter() - t0,
             [round(x, 3) for x in shares])
    return spec, frames


def train(cfg: config_lib.ExperimentConfig, out_dir: str) -> Dict:
    """Runs the whole fast path; returns the metrics dict (also written to out_dir)."""
    os.makedirs(out_dir, exist_ok=True)
    log.info("config: %s", json.dumps(config_lib.to_dict(cfg), sort_keys=True))
    # Before any dataset exists: a shuffle's order depends on the global seed too, so without
    # this a run's data order would depend on what ran earlier in the process.
    tf.keras.utils.set_random_seed(cfg.train.seed)
    frames, spec = load_splits(cfg, os.path.join(out_dir, "data"))
    rows = {k: len(v) for k, v in frames.items()}
    if cfg.adm.enabled:
        spec, frames = with_adm(cfg, spec, frames)
    log.info("rows per split: %s", rows)
    pre = preprocess.fit(frames["train"], spec)
    arrays = {k: pre.transform(v) for k, v in frames.items()}
    info = FeatureInfo(vocab_sizes=pre.vocab_sizes, dense_keys=spec.dense_keys,
                       num_actions=spec.num_actions)

    strategy = make_strategy()
    global_batch = cfg.train.batch_size * strategy.num_replicas_in_sync
    train_arrays, validation = arrays["train"], None
    if cfg.train.early_stopping_patience:
        if "test" in arrays:  # eval is a validation split, test the held-out one
            validation = arrays["eval"]
        else:
            train_frame, val_frame = hash_split(frames["train"], cfg.train.validation_percent,
                                                VALIDATION_SALT)
            train_arrays, validation = pre.transform(train_frame), pre.transform(val_frame)
            rows = {**rows, "train": len(train_frame), "validation": len(val_frame)}
            log.info("early stopping validates on %d rows held out of train", len(val_frame))
    train_ds = from_arrays(train_arrays, info.input_names, spec, global_batch, shuffle=True,
                           seed=cfg.train.seed)
    eval_ds = from_arrays(arrays["eval"], info.input_names, spec, cfg.train.eval_batch_size)
    val_ds = None if validation is None else from_arrays(
        validation, info.input_names, spec, cfg.train.eval_batch_size)

    label_keys = {"click": transformed_name(spec.click_key),
                  "conversion": transformed_name(spec.conversion_key)}

    def meta_rows():
        return {k: v[:cfg.meta.max_rows] for k, v in train_arrays.items()}, label_keys

    t0 = time.perf_counter()
    # BackupAndRestore: a run killed mid-epoch and started again with the same --out resumes
    # from the last checkpoint (every train.checkpoint_every_steps steps).
    model, progress = fit_model(cfg, info, train_ds, val_ds, strategy, meta_rows=meta_rows,
                                backup_dir=os.path.join(out_dir, "backup"))
    train_seconds = time.perf_counter() - t0

    result = {"heads": evaluate_heads(model.network, eval_ds),
              "examples_per_sec": progress.examples_per_sec,
              "train_seconds": train_seconds, "rows": rows,
              "replicas": strategy.num_replicas_in_sync, **progress.summary,
              "config": config_lib.to_dict(cfg)}
    if "test" in arrays:
        test_ds = from_arrays(arrays["test"], info.input_names, spec, cfg.train.eval_batch_size)
        result["test_heads"] = evaluate_heads(model.network, test_ds)
    if cfg.meta.test_task_eval:  # MAN Sec. 4.3 test tasks on the held-out split's partitions
        from trainer.meta import evaluate_test_tasks

        split = "test" if "test" in arrays else "eval"
        result["test_tasks"] = {"split": split, **evaluate_test_tasks(
            model, arrays[split], info.input_names, label_keys,
            transformed_name(cfg.meta.partition_key), cfg.meta, cfg.train.seed)}
    print(format_report(result["heads"]))
    print(f"training: {progress.examples_per_sec:.0f} examples/s over "
          f"{cfg.train.epochs} epoch(s), {train_seconds:.1f}s")
    for head, learned in (progress.summary.get("objective") or {}).items():
        if isinstance(learned, dict) and "weight" in learned:
            print(f"learned task weight {head}: {learned['weight']:.5f} "
                  f"(log sigma {learned['log_sigma']:+.4f})")
    if "meta" in progress.summary:
        meta = progress.summary["meta"]
        print(f"meta stage: {meta['steps']} steps over {meta['partitions']} partitions, query "
              f"loss {meta['query_loss_first']:.5f} -> {meta['query_loss_last']:.5f}")
    with open(os.path.join(out_dir, METRICS_FILE), "w") as f:
        json.dump(result, f, indent=2, default=_json_default)
    model.network.save(os.path.join(out_dir, "model"), save_format="tf")
    with open(os.path.join(out_dir, "preprocessor.json"), "w") as f:
        f.write(pre.to_json())
    log.info("wrote %s", os.path.join(out_dir, METRICS_FILE))
    return result


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
