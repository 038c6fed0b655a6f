"""``funnelrank train``: the fast experiment path, no TFX.

A thin adapter around :class:`trainer.session.TrainingSession`: the data is prepared exactly as
for the pipeline (``transform.ingest.prepare``: the same validation, types and split into
train / validation / eval), ADM runs in NumPy when enabled, vocabularies and dense statistics
are fitted in process (``transform.preprocessor``, the same maths as the Transform component),
and the outputs go to ``--out``::

    <out>/model/              the inference network (Keras SavedModel of its configs and
                              weights, no traced functions: ``funnelrank export`` makes the
                              serving model; ``tf.keras.models.load_model`` reloads it)
    <out>/preprocessor.json   vocabularies and z-score statistics (for ``funnelrank export``)
    <out>/metrics.json        written last: {"heads": {...}, "rows": ..., "examples_per_sec": ..}
    <out>/backup/             checkpoints while training (a killed run resumes from them)
    <out>/logs/               TensorBoard

Outputs are replaced atomically and in that order: a run killed while saving leaves either
the previous complete outputs or no ``metrics.json`` (the mark of a complete output).
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Dict, Optional

from schemas import config as config_lib
from schemas import features
from trainer import warm_start
from trainer.evaluation import format_report
from trainer.model import FeatureInfo
from trainer.session import METRICS_FILE, SplitData, TrainingSession, write_json
from transform import adm, preprocessor
from transform.ingest import prepare as ingest
from transform.preprocessing import NUM_OOV_BUCKETS

log = logging.getLogger(__name__)

PREPROCESSOR_FILE = "preprocessor.json"
MODEL_DIR = "model"


def load_splits(cfg: config_lib.ExperimentConfig, work_dir: str):
    """``(prepared, spec, frames)``: validated, typed splits (with ADM columns when enabled)."""
    spec = features.spec_from_config(cfg.data, cfg.funnel)
    prepared = ingest.prepare(cfg.data, spec, work_dir)
    if prepared.total_stats.rows_dropped:
        print(ingest.describe_drops(prepared))
    frames = ingest.load_frames(prepared)
    spec, params = adm.configure(cfg.adm, prepared.spec)
    if params is not None:
        t0 = time.perf_counter()
        frames = adm.add_to_frames(frames, params)
        log.info("ADM (T=%ds, alpha=%s) in %.1fs: share of train rows per action mask %s",
                 params.window_seconds, list(params.thresholds), time.perf_counter() - t0,
                 [round(float(frames["train"][k].mean()), 3) for k in spec.adm_mask_keys])
    return prepared, spec, frames


def write_outputs(out_dir: str, network, preprocessor_json: str, metrics: Dict) -> None:
    """Model and preprocessor first, metrics.json last, each through a temporary name."""
    metrics_path = os.path.join(out_dir, METRICS_FILE)
    if os.path.exists(metrics_path):  # from here on the old outputs are incomplete
        os.remove(metrics_path)
    staging = os.path.join(out_dir, f".{MODEL_DIR}.tmp")
    if os.path.exists(staging):
        shutil.rmtree(staging)
    # Without the per-layer call traces: 1 s instead of 5-8 s for the default MMoE. What
    # reads model/ rebuilds the network from its classes: `funnelrank export` and warm starts
    # read the weights only, tf.keras.models.load_model revives it from the layers' configs.
    network.save(staging, save_format="tf", save_traces=False)
    final = os.path.join(out_dir, MODEL_DIR)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(staging, final)
    tmp = os.path.join(out_dir, PREPROCESSOR_FILE + ".tmp")
    with open(tmp, "w") as f:
        f.write(preprocessor_json)
    os.replace(tmp, os.path.join(out_dir, PREPROCESSOR_FILE))
    write_json(metrics_path, metrics)


def train(cfg: config_lib.ExperimentConfig, out_dir: str,
          warm_start_from: Optional[str] = None) -> Dict:
    """Runs the fast path; returns the metrics dict (also written to ``out_dir``).

    Args:
      cfg: The experiment config.
      out_dir: Output directory (see the module docstring).
      warm_start_from: A previous ``funnelrank train`` output directory whose network's
        weights this run starts from (embedding rows follow their vocabulary entries;
        ``trainer.warm_start``).
    """
    os.makedirs(out_dir, exist_ok=True)
    prepared, spec, frames = load_splits(cfg, os.path.join(out_dir, "data"))
    pre = preprocessor.fit(frames["train"], spec)
    info = FeatureInfo(vocab_sizes=pre.vocab_sizes, dense_keys=spec.dense_keys,
                       num_actions=spec.num_actions)
    source = None
    if warm_start_from:
        source = warm_start.output_source(warm_start_from, pre.vocabularies, NUM_OOV_BUCKETS,
                                          features.transformed_name)
    elif cfg.train.warm_start:
        log.warning("train.warm_start applies to the TFX Trainer (the last blessed model); "
                    "funnelrank train starts from a previous output with --warm-start DIR")
    session = TrainingSession(cfg, spec, info, warm_start_from=source)
    data = {k: SplitData(arrays=pre.transform(v)) for k, v in frames.items()}
    model, metrics = session.run(data["train"], data["validation"], data["eval"],
                                 prepared.rows, backup_dir=os.path.join(out_dir, "backup"),
                                 log_dir=os.path.join(out_dir, "logs"))
    write_outputs(out_dir, model.network, pre.to_json(), metrics)
    print(format_report(metrics["heads"]))
    print(f"training: {metrics['examples_per_sec']:.0f} examples/s, "
          f"{metrics['train_seconds']:.1f}s")
    stopped = metrics.get("early_stopping")
    if stopped:
        print(f"early stopping: best {stopped['monitor']} {stopped['best']:.5f} at epoch "
              f"{stopped['best_epoch']} of {stopped['epochs_run']} (weights of that epoch kept)")
    for head, learned in (metrics.get("objective") or {}).items():
        if isinstance(learned, dict) and "weight" in learned:
            print(f"learned task weight {head}: {learned['weight']:.5f} "
                  f"(log sigma {learned['log_sigma']:+.4f})")
    started = metrics.get("warm_start")
    if started:
        print(f"warm start from {started['from']}: {started['restored']} variables copied, "
              f"{len(started['remapped_tables'])} embedding tables remapped "
              f"({started['new_rows']} new rows), {len(started['kept_initial'])} kept their "
              f"initialisation")
    if "meta" in metrics:
        meta = metrics["meta"]
        print(f"meta stage: {meta['steps']} steps over {meta['partitions']} partitions, query "
              f"loss {meta['query_loss_first']:.5f} -> {meta['query_loss_last']:.5f}")
    log.info("wrote %s", os.path.join(out_dir, METRICS_FILE))
    return metrics
