"""Model fitting and offline evaluation shared by the TFX ``run_fn`` and ``funnelrank train``."""
from __future__ import annotations

import logging
import math
import time
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from trainer import metrics as offline
from trainer.config import ExperimentConfig
from trainer.data import predict
from trainer.model import FeatureInfo, build_networks
from trainer.objectives import build_objective
from trainer.training import FunnelModel

log = logging.getLogger(__name__)


class ProgressLogger(tf.keras.callbacks.Callback):
    """Logs loss, AUCs and examples/sec every ``every`` steps and at each epoch end."""

    def __init__(self, global_batch: int, every: int = 100):
        super().__init__()
        self.global_batch = global_batch
        self.every = every
        self.train_seconds = 0.0
        self.train_examples = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._t0 = time.perf_counter()
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        if self.every and self._steps % self.every == 0:
            rate = self._steps * self.global_batch / (time.perf_counter() - self._t0)
            log.info("epoch %d step %d: %s (%.0f examples/s)", self._epoch + 1, self._steps,
                     _fmt(logs), rate)

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._t0
        self.train_seconds += seconds
        self.train_examples += self._steps * self.global_batch
        log.info("epoch %d done in %.1fs: %s", epoch + 1, seconds, _fmt(logs))

    @property
    def examples_per_sec(self) -> float:
        return self.train_examples / self.train_seconds if self.train_seconds else float("nan")


def _fmt(logs) -> str:
    return ", ".join(f"{k}={float(v):.4f}" for k, v in sorted((logs or {}).items()))


def build_model(cfg: ExperimentConfig, info: FeatureInfo) -> FunnelModel:
    """Network(s) + loss recipe (and its training-only layers); call inside a strategy scope."""
    objective = build_objective(cfg.loss)
    networks = build_networks(cfg.model, info, seed=cfg.train.seed, aux=objective.NEEDS_AUX)
    objective.build(networks.training)
    return FunnelModel(networks.inference, objective, networks.training)


def fit_model(cfg: ExperimentConfig, info: FeatureInfo, train_ds: tf.data.Dataset,
              eval_ds: Optional[tf.data.Dataset], strategy: tf.distribute.Strategy,
              backup_dir: Optional[str] = None, steps_per_epoch: Optional[int] = None,
              log_every: int = 100):
    """Builds the model under ``strategy.scope()`` and fits it.

    Args:
      cfg: Experiment config (model, loss, train sections are used).
      info: Input vocabulary sizes and dense features.
      train_ds, eval_ds: Batched datasets of (features, labels) at the global batch size.
      strategy: Distribution strategy (model, optimizer and metrics are created in its scope).
      backup_dir: If set, BackupAndRestore checkpoints there every
        ``cfg.train.checkpoint_every_steps`` steps; a killed run resumes from it.
      steps_per_epoch: Steps per epoch if the dataset is repeated, else None.
      log_every: Progress line interval in steps.

    Returns:
      (FunnelModel, ProgressLogger) - the logger holds the measured training throughput.
    """
    with strategy.scope():
        model = build_model(cfg, info)
        model.compile(optimizer=tf.keras.optimizers.Adam(cfg.train.learning_rate))
    progress = ProgressLogger(cfg.train.batch_size * strategy.num_replicas_in_sync, log_every)
    callbacks = [progress, tf.keras.callbacks.TerminateOnNaN()]
    if backup_dir:
        callbacks.append(tf.keras.callbacks.BackupAndRestore(
            backup_dir, save_freq=cfg.train.checkpoint_every_steps, delete_checkpoint=True))
    model.fit(train_ds, validation_data=eval_ds, epochs=cfg.train.epochs,
              steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=0)
    return model, progress


def evaluate_heads(network: tf.keras.Model, ds: tf.data.Dataset) -> Dict[str, Dict[str, float]]:
    """Exact per-head AUC, LogLoss and GAUC (cvr on clicked impressions only).

    The ctr head also gets ``auc_conversion``: the AUC of pCTR against the conversion label
    over all impressions, i.e. how well the CTR ranking puts converting impressions first
    (PWiseR's "conversion-weighted" view of CTR ranking, robust to noisy clicks).

    Returns:
      ``{head: {"auc", "logloss", "count", "positives", ["gauc"], ["auc_conversion"]}}``.
    """
    outputs, labels = predict(network, ds)
    click = labels["click"]
    targets = {"ctr": (click, None), "ctcvr": (click * labels["conversion"], None),
               "cvr": (labels["conversion"], click)}
    report: Dict[str, Dict[str, float]] = {}
    for head, probs in outputs.items():
        y, mask = targets[head]
        y_m, p_m = offline.masked(y, mask), offline.masked(probs, mask)
        entry = {"auc": offline.auc(y_m, p_m), "logloss": offline.logloss(y_m, p_m),
                 "count": int(len(y_m)), "positives": int(np.sum(y_m > 0.5))}
        if "user" in labels:
            entry["gauc"] = offline.gauc(offline.masked(labels["user"], mask), y_m, p_m)
        if head == "ctr":
            entry["auc_conversion"] = offline.auc(click * labels["conversion"], probs)
        report[head] = entry
    return report


def format_report(report: Dict[str, Dict[str, float]]) -> str:
    """One line per head: AUC, LogLoss (and GAUC)."""
    lines = []
    for head, m in report.items():
        extra = f"  GAUC {m['gauc']:.4f}" if "gauc" in m and not math.isnan(m["gauc"]) else ""
        lines.append(f"{head:>6}: AUC {m['auc']:.4f}  LogLoss {m['logloss']:.5f}{extra}  "
                     f"(n={m['count']}, positives={m['positives']})")
    return "\n".join(lines)
