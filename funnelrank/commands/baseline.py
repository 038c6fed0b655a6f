"""``funnelrank train --baseline NAME``: a non-neural baseline on a config's prepared splits.

The data goes through the same steps as ``funnelrank train`` (``train.load_splits``: prepare,
validate, split into train / validation / eval; ``transform.preprocessor`` fitted on train),
then ``trainer.baselines`` fits one model per task and writes ``<out>/metrics.json`` in the
networks' shape (``heads`` from the eval split; ``validation_heads``; ``baseline`` with what
validation chose). Nothing is exported: a baseline is a yardstick, not a servable model.
"""
from __future__ import annotations

import os
from typing import Dict

from schemas import config as config_lib
from schemas import features
from trainer import baselines
from trainer.evaluation import format_report
from trainer.session import METRICS_FILE, write_json
from transform import preprocessor

from funnelrank.commands import train as train_local


def run(cfg: config_lib.ExperimentConfig, baseline: baselines.Baseline, out_dir: str) -> Dict:
    """Fits ``baseline`` on ``cfg``'s data; returns the metrics dict (also written to
    ``<out_dir>/metrics.json``)."""
    os.makedirs(out_dir, exist_ok=True)
    metrics_path = os.path.join(out_dir, METRICS_FILE)
    if os.path.exists(metrics_path):
        os.remove(metrics_path)
    baselines.task_rows(cfg.tasks, cfg.funnel, cfg.data.labels)  # refuse early, before data
    prepared, spec, frames = train_local.load_splits(cfg, os.path.join(out_dir, "data"))
    pre = preprocessor.fit(frames["train"], spec)
    arrays = {k: pre.transform(v) for k, v in frames.items()}
    result = baselines.run(baseline, spec, pre.vocab_sizes, cfg.tasks, cfg.funnel, arrays,
                           num_actions=spec.num_actions, seed=cfg.train.seed)
    metrics = {**result, "rows": dict(prepared.rows), "config": config_lib.to_dict(cfg),
               "dataset_spec": features.spec_to_dict(spec)}
    write_json(metrics_path, metrics)
    print(format_report(metrics["heads"]))
    print(f"{baseline.name}: fitted in {metrics['train_seconds']:.1f}s; chosen on validation: "
          f"{metrics['baseline']['tasks']}")
    return metrics
