"""Model fitting and offline evaluation shared by the TFX ``run_fn`` and ``funnelrank train``."""
from __future__ import annotations

import logging
import math
import time
from typing import Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from schemas.features import action_head, transformed_name
from trainer import metrics as offline
from trainer.config import ConfigError, ExperimentConfig
from trainer.data import predict
from trainer.errors import TrainingDivergedError
from trainer.model import FeatureInfo, build_networks
from trainer.objectives import build_objective
from trainer.training import FunnelModel

log = logging.getLogger(__name__)


class ProgressLogger(tf.keras.callbacks.Callback):
    """Logs loss, AUCs and examples/sec every ``every`` steps and at each epoch end.

    Also notes where a run restored from a BackupAndRestore checkpoint resumed
    (``summary["resumed_at"]``).
    """

    def __init__(self, global_batch: int, every: int = 100):
        super().__init__()
        self.global_batch = global_batch
        self.every = every
        self.train_seconds = 0.0
        self.train_examples = 0
        self.summary: Dict[str, object] = {}  # objective report, meta stage, early stopping
        self._first_batch = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._t0 = time.perf_counter()
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        if self._first_batch:
            self._first_batch = False
            if batch > 0 or self._epoch > 0:  # BackupAndRestore put us mid-run
                self.summary["resumed_at"] = {"epoch": self._epoch + 1, "step": int(batch) + 1}
                log.info("resumed from a checkpoint at epoch %d, step %d", self._epoch + 1,
                         batch + 1)
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


class DivergenceGuard(tf.keras.callbacks.Callback):
    """Stops training at the first non-finite loss term (Keras' TerminateOnNaN only prints
    ``Invalid loss``): raises :class:`TrainingDivergedError` naming the epoch, the step, every
    term's value and the batch (rows, clicks, conversions of the first replica's batch)."""

    BATCH_KEYS = ("batch_rows", "batch_clicks", "batch_conversions")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        terms = {k: float(v) for k, v in logs.items()
                 if k not in self.BATCH_KEYS and not k.endswith("_auc")}
        bad = sorted(k for k, v in terms.items() if not math.isfinite(v))
        if not bad:
            return
        self.model.stop_training = True
        stats = ", ".join(f"{k[6:]}={int(logs[k])}" for k in self.BATCH_KEYS if k in logs)
        step = int(self.model.optimizer.iterations.numpy())
        raise TrainingDivergedError(
            f"training diverged at epoch {self._epoch + 1}, step {batch + 1} (optimizer step "
            f"{step}): non-finite {bad}; loss terms {_fmt(terms)}; batch: {stats or 'n/a'}. "
            "Lower train.learning_rate or check the input; a BackupAndRestore checkpoint, if "
            "any, still holds the weights from before.")


def _fmt(logs) -> str:
    return ", ".join(f"{k}={float(v):.4f}" for k, v in sorted((logs or {}).items()))


def build_model(cfg: ExperimentConfig, info: FeatureInfo) -> FunnelModel:
    """Network(s) + loss recipe (and its training-only layers); call inside a strategy scope."""
    objective = build_objective(cfg.loss)
    networks = build_networks(cfg.model, info, seed=cfg.train.seed, aux=objective.AUX)
    objective.build(networks.training)
    return FunnelModel(networks.inference, objective, networks.training)


def precision_policy(cfg: ExperimentConfig) -> str:
    """``mixed_float16`` when ``train.mixed_precision`` is set and a GPU is present."""
    if not cfg.train.mixed_precision:
        return "float32"
    if not tf.config.list_logical_devices("GPU"):
        log.info("train.mixed_precision is set but there is no GPU: training in float32")
        return "float32"
    return "mixed_float16"


MetaRows = Callable[[], Tuple[Mapping[str, np.ndarray], Mapping[str, str]]]


def fit_model(cfg: ExperimentConfig, info: FeatureInfo, train_ds: tf.data.Dataset,
              eval_ds: Optional[tf.data.Dataset], strategy: tf.distribute.Strategy,
              backup_dir: Optional[str] = None, steps_per_epoch: Optional[int] = None,
              log_every: int = 100, meta_rows: Optional[MetaRows] = None):
    """Builds the model under ``strategy.scope()`` and fits it (then meta-trains it).

    Stage 1 is Keras ``fit`` (early stopping on ``eval_ds`` when
    ``train.early_stopping_patience`` > 0, best weights restored). Stage 2, when
    ``meta.enabled``, meta-trains the fusion layers (:mod:`trainer.meta`) on rows from
    ``meta_rows``.

    Args:
      cfg: Experiment config (model, loss, train, meta sections are used).
      info: Input vocabulary sizes and dense features.
      train_ds, eval_ds: Batched datasets of (features, labels) at the global batch size;
        ``eval_ds`` is the validation data of ``fit`` (may be None without early stopping).
      strategy: Distribution strategy (model, optimizer and metrics are created in its scope).
      backup_dir: If set, BackupAndRestore checkpoints there every
        ``cfg.train.checkpoint_every_steps`` steps; a killed run resumes from it.
      steps_per_epoch: Steps per epoch if the dataset is repeated, else None.
      log_every: Progress line interval in steps.
      meta_rows: Returns ``(arrays, label_keys)``: in-memory train rows (``<key>_xf`` ->
        ``[N, 1]`` plus label columns) and canonical label -> column; needed by stage 2.

    Returns:
      (FunnelModel, ProgressLogger) - the logger holds the measured training throughput and,
      in ``summary``, the recipe's report (e.g. learned task weights), the early-stopping
      epoch and the meta stage's summary.

    Raises:
      ConfigError: Early stopping without validation data, or meta without rows or with a
        partition key that is not a sparse feature.
    """
    patience = cfg.train.early_stopping_patience
    if patience and eval_ds is None:
        raise ConfigError("train.early_stopping_patience needs validation data")
    if cfg.meta.enabled:
        if meta_rows is None:
            raise ConfigError("meta.enabled needs the train rows (meta_rows)")
        if cfg.meta.partition_key not in info.vocab_sizes:
            raise ConfigError(f"meta.partition_key: expected one of the sparse features "
                              f"{sorted(info.vocab_sizes)}, got {cfg.meta.partition_key!r}")
    policy = precision_policy(cfg)
    tf.keras.mixed_precision.set_global_policy(policy)
    try:
        with strategy.scope():
            model = build_model(cfg, info)
            model.compile(optimizer=tf.keras.optimizers.Adam(cfg.train.learning_rate),
                          jit_compile=cfg.train.jit_compile)
    finally:  # the policy only matters while layers are built
        tf.keras.mixed_precision.set_global_policy("float32")
    progress = ProgressLogger(cfg.train.batch_size * strategy.num_replicas_in_sync, log_every)
    callbacks = [progress, DivergenceGuard()]
    stopper = None
    if patience:
        stopper = tf.keras.callbacks.EarlyStopping(
            monitor=cfg.train.early_stopping_monitor, mode="max", patience=patience,
            restore_best_weights=True)
        callbacks.append(stopper)
    if backup_dir:
        callbacks.append(tf.keras.callbacks.BackupAndRestore(
            backup_dir, save_freq=cfg.train.checkpoint_every_steps, delete_checkpoint=True))
    model.fit(train_ds, validation_data=eval_ds, epochs=cfg.train.epochs,
              steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=0)
    if stopper is not None:
        history = model.history.history.get(cfg.train.early_stopping_monitor)
        if history is None:
            raise ConfigError(f"train.early_stopping_monitor: {cfg.train.early_stopping_monitor!r}"
                              f" is not a training log key; have {sorted(model.history.history)}")
        best = int(np.argmax(history))
        progress.summary["early_stopping"] = {"epochs_run": len(history), "best_epoch": best + 1,
                                              "best": float(history[best])}
        log.info("stage 1: best %s %.5f at epoch %d of %d", cfg.train.early_stopping_monitor,
                 history[best], best + 1, len(history))
    progress.summary["steps"] = int(model.optimizer.iterations.numpy())
    report = model.objective.report()
    if report:
        progress.summary["objective"] = report
        log.info("loss recipe %s learned: %s", cfg.loss.name, report)
    if cfg.meta.enabled:
        from trainer.meta import meta_train

        arrays, label_keys = meta_rows()
        progress.summary["meta"] = meta_train(
            model, arrays, info.input_names, label_keys,
            transformed_name(cfg.meta.partition_key), cfg.meta, strategy, cfg.train.seed)
    return model, progress


def select_target_action(outputs: Mapping[str, np.ndarray],
                         labels: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Adds ``cvr`` (each sample's pCVR of its OWN target action, KAML Sec. 4.1.4) and
    ``ctcvr = ctr * cvr`` to the outputs of a per-action model (heads ``cvr_<j>``); the
    target comes from the ADM original indicators. Other models pass through unchanged."""
    heads = [h for h in outputs if h.startswith("cvr_")]
    if not heads or "adm_original" not in labels:
        return dict(outputs)
    per_action = np.stack([outputs[action_head(j)] for j in range(len(heads))], axis=1)
    target = np.argmax(labels["adm_original"], axis=1)
    selected = per_action[np.arange(len(target)), target]
    return {**outputs, "cvr": selected, "ctcvr": outputs["ctr"] * selected}


def evaluate_heads(network: tf.keras.Model, ds: tf.data.Dataset) -> Dict[str, Dict[str, float]]:
    """Exact per-head AUC, LogLoss and GAUC (cvr on clicked impressions only).

    The ctr head also gets ``auc_conversion``: the AUC of pCTR against the conversion label
    over all impressions, i.e. how well the CTR ranking puts converting impressions first
    (PWiseR's "conversion-weighted" view of CTR ranking, robust to noisy clicks).

    Per-action models (KAML) are scored as the paper does: every sample only on its target
    action. ``cvr`` is then the overall entry (each clicked sample's target-action pCVR against
    its conversion label), ``cvr_<j>`` the clicked samples whose target is action ``j``, and
    ``ctcvr`` uses ``ctr * cvr`` over all impressions.

    Returns:
      ``{head: {"auc", "logloss", "count", "positives", ["gauc"], ["auc_conversion"]}}``.
    """
    outputs, labels = predict(network, ds)
    outputs = select_target_action(outputs, labels)
    click = labels["click"]
    targets = {"ctr": (click, None), "ctcvr": (click * labels["conversion"], None),
               "cvr": (labels["conversion"], click)}
    if "adm_original" in labels:
        for j in range(labels["adm_original"].shape[1]):
            targets[action_head(j)] = (labels["conversion"],
                                       click * labels["adm_original"][:, j])
    report: Dict[str, Dict[str, float]] = {}
    for head, probs in outputs.items():
        if head not in targets:  # an extra task's head (AdaFTR's view): no label known here
            continue
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
