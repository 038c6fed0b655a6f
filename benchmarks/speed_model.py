"""The model every speed benchmark times: a shipped config's architecture, as the peers have it.

The shipped configs carry learning-quality extras that DeepCTR's and torch-rechub's MMoE / PLE
do not have (issue 16: a wide part, whole-feature embedding dropout, an L2 prior on every
table row each step, LazyAdam for the tables). The speed benchmarks (``throughput.py``,
``input_pipeline.py``, ``step_variants.py``, ``fused_variants.py``) switch them off so that
they time the same model as the peers (equal parameter counts) and as the issue-9 tables.

Also what they share to time it: the data (:func:`synthetic_rows`), the timed loop over a
compiled train function (:func:`timed_steps`) and an epoch timer (:func:`epoch_timer`).
"""
from __future__ import annotations

import os
import time
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SAME_MODEL_AS_PEERS = {"model.wide": False, "model.wide_init": None, "model.wide_frozen": False,
                       "model.deep_max_vocabulary": None, "model.embedding_feature_dropout": 0.0,
                       "model.embedding_l2": 0.0, "train.sparse_optimizer": None,
                       "train.sparse_learning_rate": None}


def speed_config(model_name: str, batch: int, overrides=None):
    """``configs/<model_name>.yaml`` at ``batch`` rows per step, without the quality extras
    (and with ``overrides``, ``--set`` style)."""
    from schemas import config as config_lib

    return config_lib.load(os.path.join(ROOT, "configs", f"{model_name}.yaml"),
                           {"train.batch_size": batch, **SAME_MODEL_AS_PEERS,
                            **(overrides or {})})


def steps_per_call(cfg, strategy) -> int:
    """Train steps one call of the compiled train function runs (``train.steps_per_execution``
    as the session applies it): the step benchmarks count steps, not calls."""
    from trainer.session import steps_per_execution

    return steps_per_execution(cfg, strategy.num_replicas_in_sync)


def configure_threads_as_trained(model_name: str = "mmoe") -> bool:
    """TF's thread pools as ``funnelrank train`` sets them for ``configs/<model_name>.yaml``
    (``train.intra_op_threads``, ``train.inter_op_threads``); call before TF's runtime
    starts, as the CLI does."""
    from trainer.strategy import configure_threads

    train = speed_config(model_name, 2048).train
    return configure_threads(train.intra_op_threads, train.inter_op_threads)


class Timed(NamedTuple):
    """What :func:`timed_steps` measured."""
    seconds: float  # wall time
    cpu_seconds: float  # this process's CPU time
    steps: int  # train steps run (calls x steps per call)


def timed_steps(train_fn, iterator, steps: int, spe: int) -> Timed:
    """Runs a compiled train function (``spe`` steps per call, ``train.steps_per_execution``)
    for about ``steps`` steps, ``max(1, steps // spe)`` calls, and waits for the last one
    (its loss read back) before stopping the clock."""
    calls = max(1, steps // spe)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(calls):
        logs = train_fn(iterator)
    float(logs["loss"])
    return Timed(time.perf_counter() - t0, time.process_time() - c0, calls * spe)


class SyntheticRows(NamedTuple):
    """The speed benchmarks' data: synthetic rows preprocessed as ``funnelrank train`` does."""
    spec: object  # schemas.features.DatasetSpec
    pre: object  # the fitted transform.preprocessor
    arrays: dict  # every transformed ``<key>_xf`` column
    info: object  # trainer.model.FeatureInfo
    columns: dict  # the columns the model and its labels read (``dataset_columns``)


def synthetic_rows(rows: int, seed: int = 7) -> SyntheticRows:
    """``rows`` rows of the synthetic generator (seed 7 in every speed benchmark), fitted
    and transformed by the preprocessor."""
    from trainer.data import dataset_columns
    from trainer.model import FeatureInfo
    from transform import preprocessor as preprocess
    from transform.ingest import synthetic

    spec = synthetic.spec()
    frame = synthetic.generate(rows, seed=seed)[list(spec.columns)]
    pre = preprocess.fit(frame, spec)
    arrays = pre.transform(frame)
    info = FeatureInfo(pre.vocab_sizes, spec.dense_keys)
    return SyntheticRows(spec, pre, arrays, info,
                         {k: arrays[k] for k in dataset_columns(info.input_names, spec)})


def epoch_timer(times: list):
    """A Keras callback that appends each epoch's wall seconds to ``times``."""
    import tensorflow as tf

    class EpochTimer(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    return EpochTimer()
