"""One training session: the decisions ``funnelrank train`` and the TFX Trainer share.

Both paths are thin adapters around :class:`TrainingSession`: they say where the splits come
from (:class:`SplitData`: in-memory arrays, or transformed TFRecords) and where the model
goes; the session makes every other decision, in one place:

* seed (TF's global seed before any dataset exists, so a shuffle never depends on what ran
  before in the process), distribution strategy and global batch;
* the datasets (a full reshuffle each epoch; TFRecord splits parsed into memory when
  ``train.in_memory`` is set);
* the model (network + loss recipe, under the strategy, with the precision policy and XLA
  setting), fit with validation on the ``validation`` split every epoch, early stopping on it
  when ``train.early_stopping_patience`` > 0 (best weights restored), checkpoints, progress
  with ETA, TensorBoard logs, the divergence guard;
* MAN's meta stage on the train rows;
* evaluation of every head on the ``eval`` split and the one shape of ``metrics.json``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from schemas import config as config_lib
from schemas import features
from schemas import tasks as tasks_lib
from schemas.config import ConfigError, ExperimentConfig
from trainer import data as data_lib
from trainer import tracing
from trainer import baselines, warm_start, wide_init
from trainer.callbacks import (Checkpoints, DivergenceGuard, MinRoundsEarlyStopping,
                               ProgressLogger)
from trainer.evaluation import evaluate_heads, format_report
from trainer.funnel_model import FunnelModel
from trainer.model import FeatureInfo, build_networks
from trainer.objectives import build_objective
from trainer.optimizers import FusedAdam, WarmupDecay, make_optimizer
from trainer.strategy import configure_threads, make_strategy
from trainer.warm_start import WarmStart

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


@dataclasses.dataclass(frozen=True)
class SplitData:
    """Where one split's transformed rows are: ``arrays`` (``<key>_xf`` -> ``[N, 1]``) or
    gzipped transformed TFRecord ``files`` with their parse ``feature_spec``."""

    arrays: Optional[Mapping[str, np.ndarray]] = None
    files: Optional[Sequence[str]] = None
    feature_spec: Optional[Mapping] = None
    count: Optional[int] = None

    @property
    def rows(self) -> Optional[int]:
        """Rows of the split (known for arrays, or when the caller counted the files)."""
        if self.arrays is None:
            return self.count
        return len(next(iter(self.arrays.values())))

    def in_memory(self, columns: Sequence[str]) -> "SplitData":
        """The same split as arrays (TFRecords parsed once), its rows in
        :func:`~trainer.data.in_canonical_order`: the same rows train the same model under
        the same seed, in whatever order the pipeline wrote them. With ``count`` the columns
        are allocated once and filled (:func:`~trainer.data.load_transformed`'s ``rows``)."""
        if self.arrays is not None:
            return self
        return SplitData(arrays=data_lib.in_canonical_order(
            data_lib.load_transformed(self.files, self.feature_spec, columns,
                                      rows=self.count)))


def precision_policy(cfg: ExperimentConfig) -> str:
    """``mixed_float16`` when ``train.mixed_precision`` is set and a GPU is present."""
    if not cfg.train.mixed_precision:
        return "float32"
    if not tf.config.list_logical_devices("GPU"):
        log.info("train.mixed_precision is set but there is no GPU: training in float32")
        return "float32"
    return "mixed_float16"


def build_model(cfg: ExperimentConfig, info: FeatureInfo,
                steps_per_epoch: Optional[int] = None) -> FunnelModel:
    """Network(s) + loss recipe (and its training-only layers), with the tables' optimizer
    when ``train.sparse_optimizer`` is set; call inside a strategy scope. Leaves tf_keras's
    own code to AutoGraph's do-not-convert list first (:mod:`trainer.tracing`), so that every
    caller (the session, the speed benchmarks) traces the model as the product does."""
    tracing.skip_tf_keras_conversion()
    objective = build_objective(cfg.loss, cfg.tasks)
    networks = build_networks(cfg.model, info, seed=cfg.train.seed, aux=objective.AUX,
                              funnel=cfg.funnel)
    objective.build(networks.training)
    sparse = None
    if cfg.train.sparse_optimizer is not None:
        sparse = make_optimizer(cfg.train.sparse_optimizer, learning_rate(
            cfg, cfg.train.sparse_learning_rate or cfg.train.learning_rate, steps_per_epoch))
    return FunnelModel(networks.inference, objective, networks.training,
                       heads=tasks_lib.heads(cfg.tasks, cfg.funnel, info.num_actions),
                       auc_every=cfg.train.train_auc_every, sparse_optimizer=sparse)


def compile_model(model: FunnelModel, cfg: ExperimentConfig,
                  steps_per_epoch: Optional[int] = None,
                  steps_per_call: Optional[int] = None) -> FunnelModel:
    """Compiles ``model`` as the session trains it: :class:`FusedAdam` at ``train``'s learning
    rate (schedule), :func:`steps_per_execution` steps per call (at most ``steps_per_call``,
    the steps between two validations, when known), XLA when ``train.jit_compile``, and the
    optimizers' variables made (:meth:`FunnelModel.build_optimizers`). Call inside the
    strategy scope; the speed benchmarks call it too, so that they time the step the product
    trains with."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    model.compile(optimizer=FusedAdam(learning_rate(cfg, cfg.train.learning_rate,
                                                    steps_per_epoch)),
                  steps_per_execution=steps_per_execution(cfg, replicas, steps_per_call),
                  jit_compile=cfg.train.jit_compile)
    model.build_optimizers()  # the train step then creates no variable: traced once
    return model


def steps_per_execution(cfg: ExperimentConfig, replicas: int,
                        steps_per_call: Optional[int] = None) -> int:
    """``train.steps_per_execution`` on one replica, at most ``steps_per_call`` (the steps
    between two validations, when known); 1 over several replicas.

    Under MirroredStrategy a cross-replica gather inside Keras' multi-step loop aborts when
    the last, partial batch gives the replicas other shapes than the full ones before it
    ("Shape mismatch in the collective instance"; seen on 2 logical CPU replicas). A call of
    one step is traced once, a multi-step loop twice (autograph traces the loop's body to
    find its outputs); a loop that could only ever run one step is not worth that second
    trace."""
    if replicas > 1:
        return 1
    steps = cfg.train.steps_per_execution
    return min(steps, steps_per_call) if steps_per_call else steps


def learning_rate(cfg: ExperimentConfig, peak: float, steps_per_epoch: Optional[int] = None):
    """``peak``, or the ``train.lr_schedule`` schedule that reaches it after the warm-up.

    Raises:
      ConfigError: A decay without ``train.lr_decay_steps`` when the steps per epoch are
        unknown (TFRecords streamed without a row count).
    """
    t = cfg.train
    if t.lr_schedule == "constant" and not t.lr_warmup_steps:
        return peak
    decay_steps = t.lr_decay_steps
    if decay_steps is None and steps_per_epoch:
        decay_steps = t.epochs * steps_per_epoch
    if decay_steps is None:
        if t.lr_schedule != "constant":
            raise ConfigError(f"train.lr_schedule {t.lr_schedule!r} needs train.lr_decay_steps "
                              f"here: the train split's row count is unknown")
        decay_steps = t.lr_warmup_steps + 1
    if t.lr_schedule != "constant" and decay_steps <= t.lr_warmup_steps:
        raise ConfigError(f"train.lr_warmup_steps ({t.lr_warmup_steps}) must be shorter than "
                          f"the decay ({decay_steps} steps: epochs x steps per epoch)")
    return WarmupDecay(peak, t.lr_schedule, t.lr_warmup_steps, decay_steps, t.lr_floor)


def _epochs(validations: int, per_epoch: int):
    """Validation rounds as passes over the data: an int when whole, else a float."""
    return validations // per_epoch if validations % per_epoch == 0 else validations / per_epoch


def _monitor_mode(monitor: str) -> str:
    return "max" if monitor.endswith("auc") else "min"


class TrainingSession:
    """One run of one config on one dataset (see the module docstring).

    Args:
      cfg: The experiment config (parsed once by the caller and logged here).
      spec: The prepared dataset's spec (with ADM columns when ADM ran).
      info: Vocabulary sizes and dense features of the network's inputs.
      strategy: A distribution strategy to use instead of ``train.strategy``'s (tests,
        multi-worker runs set up by the caller).
      warm_start_from: Start the network from a previous model's weights
        (``trainer.warm_start``); a checkpoint of this run, when it resumes, still wins.
    """

    def __init__(self, cfg: ExperimentConfig, spec: features.DatasetSpec, info: FeatureInfo,
                 strategy: Optional[tf.distribute.Strategy] = None,
                 warm_start_from: Optional[WarmStart] = None):
        self.cfg, self.spec, self.info = cfg, spec, info
        self.warm_start_from = warm_start_from
        self.warm_start_report: Optional[Dict] = None
        self.wide_start: Optional[baselines.FittedBaseline] = None  # model.wide_init
        self.wide_init_report: Optional[Dict] = None
        log.info("config: %s", json.dumps(config_lib.to_dict(cfg), sort_keys=True))
        configure_threads(cfg.train.intra_op_threads, cfg.train.inter_op_threads)
        # Before any dataset exists: a shuffle's order depends on the global seed too.
        tf.keras.utils.set_random_seed(cfg.train.seed)
        tracing.skip_tf_keras_conversion()  # before any model is built or traced
        self.strategy = strategy or make_strategy(cfg.train.strategy)
        self.replicas = self.strategy.num_replicas_in_sync
        self.global_batch = cfg.train.batch_size * self.replicas
        self.columns = data_lib.dataset_columns(info.input_names, spec)

    # -- data -----------------------------------------------------------------------------
    def load_in_memory(self, split: SplitData) -> bool:
        """``train.in_memory``, or when null: the split fits in ``train.memory_budget_mb``
        (rows x columns x 8 bytes; parsing TFRecords every step costs more than the step of
        the zoo's models on small machines, docs/benchmarks.md)."""
        if self.cfg.train.in_memory is not None:
            return self.cfg.train.in_memory
        if split.rows is None:
            return False
        need_mb = split.rows * len(self.columns) * 8 / 2 ** 20
        fits = need_mb <= self.cfg.train.memory_budget_mb
        log.info("train split: %d rows need ~%.0f MB in memory (budget %d MB): %s", split.rows,
                 need_mb, self.cfg.train.memory_budget_mb,
                 "training from memory" if fits else "streaming the TFRecords")
        return fits

    def dataset(self, split: SplitData, training: bool) -> tf.data.Dataset:
        """Batches of ``(features, labels)``: shuffled at the global batch for training,
        in order at ``train.eval_batch_size`` otherwise."""
        batch = self.global_batch if training else self.cfg.train.eval_batch_size
        if split.arrays is not None:
            return data_lib.from_arrays(split.arrays, self.info.input_names, self.spec, batch,
                                        shuffle=training, seed=self.cfg.train.seed)
        return data_lib.from_transformed(split.files, split.feature_spec, self.info.input_names,
                                         self.spec, batch, shuffle=training,
                                         seed=self.cfg.train.seed,
                                         shuffle_buffer=self.cfg.train.shuffle_buffer)

    # -- training -------------------------------------------------------------------------
    def fit(self, train: SplitData, validation: SplitData, backup_dir: Optional[str] = None,
            log_dir: Optional[str] = None):
        """Builds the model under the strategy and fits it on the splits; then the meta stage.

        Returns:
          (FunnelModel, ProgressLogger): the logger holds the run's throughput and, in
          ``summary``, early stopping, the recipe's learned state and the meta stage.
        """
        if train.arrays is None and self.load_in_memory(train):
            t0 = time.perf_counter()
            train = train.in_memory(self.columns)
            log.info("train split parsed into memory: %d rows in %.1fs", train.rows,
                     time.perf_counter() - t0)
        steps = None if train.rows is None else -(-train.rows // self.global_batch)
        if self.cfg.model.wide_init is not None and self.warm_start_from is None:
            limit = self.cfg.model.wide_init_max_rows
            if train.arrays is None:  # streams: the regression's rows are read once
                log.warning("model.wide_init: the train split streams; the regression is "
                            "fitted on its first %d rows (one row from each file in turn)",
                            limit)
                sample = data_lib.load_transformed(train.files, train.feature_spec,
                                                   self.columns, max_rows=limit,
                                                   rows=train.count)
            else:
                sample = wide_init.sample_rows(train.arrays, limit, self.cfg.train.seed)
            validation = validation.in_memory(self.columns)  # parsed once, trained on below
            self.wide_start = wide_init.fit_logistic(
                self.cfg, self.spec, self.info.vocab_sizes, sample, validation.arrays)
        meta_arrays = None
        if self.cfg.meta.enabled:
            meta_arrays = lambda: train.in_memory(self.columns).arrays  # noqa: E731
        return self.fit_datasets(self.dataset(train, training=True),
                                 self.dataset(validation, training=False), steps, backup_dir,
                                 log_dir, meta_arrays)

    def build(self, steps_per_epoch: Optional[int] = None,
              steps_per_call: Optional[int] = None) -> FunnelModel:
        """The compiled model under the strategy, with the precision policy, from the
        ``warm_start_from`` weights when given; ``steps_per_epoch`` lays out the learning-rate
        schedule (``train.lr_schedule``), ``steps_per_call`` caps the steps per call of the
        train function (:func:`compile_model`)."""
        cfg = self.cfg
        tf.keras.mixed_precision.set_global_policy(precision_policy(cfg))
        try:
            with self.strategy.scope():
                model = build_model(cfg, self.info, steps_per_epoch)
                if self.warm_start_from is not None:
                    self.warm_start_report = warm_start.apply(model.network,
                                                              self.warm_start_from)
                elif cfg.model.wide_init is not None:
                    if self.wide_start is None:
                        raise ConfigError("model.wide_init needs TrainingSession.fit (the "
                                          "train and validation rows), not ready datasets")
                    self.wide_init_report = wide_init.apply(model.network, self.wide_start,
                                                            cfg.model.wide_frozen)
                compile_model(model, cfg, steps_per_epoch, steps_per_call)
        finally:  # the policy only matters while layers are built
            tf.keras.mixed_precision.set_global_policy("float32")
        return model

    def fit_datasets(self, train_ds: tf.data.Dataset, val_ds: Optional[tf.data.Dataset],
                     steps_per_epoch: Optional[int] = None, backup_dir: Optional[str] = None,
                     log_dir: Optional[str] = None,
                     meta_arrays: Optional[Callable[[], Mapping[str, np.ndarray]]] = None):
        """:meth:`fit` on ready ``(features, labels)`` datasets (batched at the global batch
        for training); ``val_ds`` None means no validation (then no early stopping).

        Raises:
          ConfigError: Early stopping without validation data; meta without rows or with a
            partition key that is not a sparse feature.
        """
        cfg = self.cfg
        if cfg.train.early_stopping_patience and val_ds is None:
            raise ConfigError("train.early_stopping_patience needs validation data")
        if cfg.meta.enabled:
            if meta_arrays is None:
                raise ConfigError("meta.enabled needs the train rows in memory")
            if cfg.meta.partition_key not in self.info.vocab_sizes:
                raise ConfigError(f"meta.partition_key: expected one of the sparse features "
                                  f"{sorted(self.info.vocab_sizes)}, got "
                                  f"{cfg.meta.partition_key!r}")
        rounds = cfg.train.validations_per_epoch
        fit_epochs, round_steps = cfg.train.epochs, steps_per_epoch
        if rounds > 1 and val_ds is not None and not steps_per_epoch:
            log.warning("train.validations_per_epoch=%d: the train split's row count is "
                        "unknown, so validation runs once per epoch", rounds)
            rounds = 1
        if rounds > 1 and val_ds is not None:
            # Rounds of ceil(steps / rounds) steps; as many as cover one pass, which is fewer
            # than asked when a pass has few steps (1000 rounds of one step each on a 24-step
            # pass would be 1000 steps: about 42 passes where the config asks for one).
            round_steps = -(-steps_per_epoch // rounds)
            covering = -(-steps_per_epoch // round_steps)
            if covering < rounds:
                log.warning("train.validations_per_epoch=%d: a pass over the train split has "
                            "%d steps, so validation runs every %d step(s), %d times per pass",
                            rounds, steps_per_epoch, round_steps, covering)
                rounds = covering
        if rounds > 1 and val_ds is not None:
            # A Keras "epoch" becomes 1/rounds of a pass over the data: validation (and early
            # stopping's patience) every round_steps steps of the repeated, reshuffled data.
            fit_epochs = cfg.train.epochs * rounds
            train_ds = train_ds.repeat()
        else:
            rounds, round_steps = 1, steps_per_epoch
        model = self.build(steps_per_epoch, steps_per_call=round_steps)
        monitor = cfg.train.early_stopping_monitor
        if (cfg.train.early_stopping_patience and monitor.startswith("val_")
                and monitor not in model.validation_log_keys):
            # Before training, not after it: validation's keys are known from the model.
            raise ConfigError(f"train.early_stopping_monitor: {monitor!r} is not a validation "
                              f"log key; have {sorted(model.validation_log_keys)}")
        progress = ProgressLogger(self.global_batch, fit_epochs, round_steps,
                                  cfg.train.log_every)
        callbacks = [progress, DivergenceGuard()]
        stopper = None
        if cfg.train.early_stopping_patience:
            stopper = MinRoundsEarlyStopping(
                min_rounds=math.ceil(cfg.train.early_stopping_min_epochs * rounds - 1e-9),
                monitor=cfg.train.early_stopping_monitor,
                mode=_monitor_mode(cfg.train.early_stopping_monitor),
                patience=cfg.train.early_stopping_patience, restore_best_weights=True)
            callbacks.append(stopper)
        if log_dir:
            callbacks.append(tf.keras.callbacks.TensorBoard(log_dir, update_freq="epoch",
                                                            profile_batch=0, write_graph=False))
        if backup_dir:
            # Keras counts the interval in calls of the train function (steps_per_execution
            # steps each): the interval in steps, rounded up to a multiple of it.
            every = -(-cfg.train.checkpoint_every_steps //
                      steps_per_execution(cfg, self.replicas, round_steps))
            callbacks.append(Checkpoints(backup_dir, every, progress, stopper))
        model.fit(train_ds, validation_data=val_ds, epochs=fit_epochs,
                  steps_per_epoch=round_steps if rounds > 1 else None,
                  callbacks=callbacks, verbose=0)
        history = progress.history  # every round's logs, those before a resume included
        monitor = cfg.train.early_stopping_monitor
        if stopper is not None and monitor not in history:
            raise ConfigError(f"train.early_stopping_monitor: {monitor!r} is not a training "
                              f"log key; have {sorted(history)}")
        if monitor in history:
            values = history[monitor]
            best = int(np.argmax(values) if _monitor_mode(monitor) == "max" else
                       np.argmin(values))
            # Epochs as passes over the data (fractions with several validations per epoch).
            progress.summary["early_stopping" if stopper else "validation"] = {
                "monitor": monitor, "epochs_run": _epochs(len(values), rounds),
                "best_epoch": _epochs(best + 1, rounds), "validations_per_epoch": rounds,
                "best": float(values[best]), "history": [float(v) for v in values]}
        progress.summary["steps"] = int(model.optimizer.iterations.numpy())
        if self.warm_start_report is not None:
            progress.summary["warm_start"] = self.warm_start_report
        if self.wide_init_report is not None:
            progress.summary["wide_init"] = self.wide_init_report
        report = model.objective.report()
        if report:
            progress.summary["objective"] = report
            log.info("loss recipe %s learned: %s", cfg.loss.name, report)
        if cfg.meta.enabled:
            from trainer.meta import meta_train

            keep = {k: v[:cfg.meta.max_rows] for k, v in meta_arrays().items()}
            progress.summary["meta"] = meta_train(
                model, keep, self.info.input_names, self.spec,
                features.transformed_name(cfg.meta.partition_key), cfg.meta, self.strategy,
                cfg.train.seed)
        return model, progress

    def evaluate(self, model: FunnelModel, split: SplitData) -> Dict[str, Dict[str, float]]:
        """Exact per-head metrics (``trainer.evaluation.evaluate_heads``) on a split: every
        head of the config's tasks, the derived ones too (a per-action model's ``cvr`` and
        ``ctcvr`` come from its target action's output, not from a network output)."""
        heads = tasks_lib.heads(self.cfg.tasks, self.cfg.funnel, self.info.num_actions)
        return evaluate_heads(model.network, self.dataset(split, training=False), heads)

    def evaluate_test_tasks(self, model: FunnelModel, split: SplitData) -> Dict:
        """MAN Sec. 4.3's test tasks on a split's partitions (``trainer.meta``)."""
        from trainer.meta import evaluate_test_tasks

        return {"split": "eval", **evaluate_test_tasks(
            model, split.in_memory(self.columns).arrays, self.info.input_names, self.spec,
            features.transformed_name(self.cfg.meta.partition_key), self.cfg.meta,
            self.cfg.train.seed)}

    def run(self, train: SplitData, validation: SplitData, evaluation: SplitData,
            rows: Mapping[str, int], backup_dir: Optional[str] = None,
            log_dir: Optional[str] = None):
        """fit -> evaluate on ``evaluation`` and on ``validation``; returns ``(model,
        metrics)`` (metrics.json: ``heads`` are the evaluation split's, ``validation_heads``
        the validation split's, for choosing between runs without looking at eval)."""
        t0 = time.perf_counter()
        model, progress = self.fit(train, validation, backup_dir, log_dir)
        train_seconds = time.perf_counter() - t0
        heads = self.evaluate(model, evaluation)
        validation_heads = self.evaluate(model, validation)
        test_tasks = self.evaluate_test_tasks(model, evaluation) \
            if self.cfg.meta.test_task_eval else None
        metrics = {"heads": heads, "validation_heads": validation_heads, "rows": dict(rows),
                   "examples_per_sec": progress.examples_per_sec,
                   "train_examples": progress.train_examples,
                   "train_seconds": train_seconds, "replicas": self.replicas,
                   **progress.summary, "config": config_lib.to_dict(self.cfg),
                   "dataset_spec": features.spec_to_dict(self.spec)}
        if test_tasks is not None:
            metrics["test_tasks"] = test_tasks
        log.debug("eval split:\n%s", format_report(heads))
        log.info("training: %.0f examples/s, %.1fs", progress.examples_per_sec, train_seconds)
        return model, metrics


def fit_model(cfg: ExperimentConfig, info: FeatureInfo, train_ds: tf.data.Dataset,
              val_ds: Optional[tf.data.Dataset], strategy: Optional[tf.distribute.Strategy] = None,
              spec: Optional[features.DatasetSpec] = None, **kwargs):
    """Fits on ready datasets: :meth:`TrainingSession.fit_datasets` of a session over ``spec``
    (for tests, benchmarks and callers that build their own ``tf.data`` pipelines).

    Returns:
      (FunnelModel, ProgressLogger).
    """
    if spec is None:
        spec = features.spec_from_config(cfg.data, cfg.funnel)
    return TrainingSession(cfg, spec, info, strategy).fit_datasets(train_ds, val_ds, **kwargs)


def write_json(path: str, value) -> str:
    """Writes strict JSON to ``path`` through a temporary name and a rename (never half a
    file). A non-finite number (the AUC of a head whose labels are one class) is written as
    ``null``: Python's ``NaN`` is not JSON, and jq or a browser refuse the whole file."""
    text = json.dumps(_finite_or_null(value), indent=2, allow_nan=False)
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        f.write(text)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
    return path


def _finite_or_null(value):
    """``value`` with NumPy scalars as Python numbers and NaN / infinities as None."""
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
