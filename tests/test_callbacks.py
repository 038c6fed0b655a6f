"""trainer.callbacks: progress and divergence checks when Keras calls them once per
``train.steps_per_execution`` steps."""
import logging
import math
import types

import numpy as np
import pytest
import tensorflow as tf

from trainer.callbacks import DivergenceGuard, ProgressLogger
from trainer.errors import TrainingDivergedError


def _calls(callback, spans, logs=None):
    for begin, end in spans:  # Keras passes NumPy integers
        callback.on_train_batch_begin(np.int64(begin))
        callback.on_train_batch_end(np.int64(end), logs or {"loss": tf.constant(0.5)})


def test_progress_counts_every_step_of_each_call_and_logs_when_an_interval_is_crossed(caplog):
    progress = ProgressLogger(global_batch=32, epochs=1, steps_per_epoch=10, every=5)
    with caplog.at_level(logging.INFO, logger="trainer.callbacks"):
        progress.on_epoch_begin(0)
        _calls(progress, [(0, 3), (4, 7), (8, 9)])  # 4 steps per call, then the 2 left
        progress.on_epoch_end(0, {"loss": 0.5})
    assert progress.train_examples == 10 * 32
    assert type(progress.state()["train_examples"]) is int  # written to JSON by Checkpoints
    assert "resumed_at" not in progress.summary
    lines = [r.getMessage() for r in caplog.records if " step " in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/1 step 8/10",
                                                      "epoch 1/1 step 10/10"]
    assert "loss=0.5000" in lines[0]


def test_progress_sees_a_resume_from_the_first_step_of_the_first_call():
    progress = ProgressLogger(global_batch=32, epochs=2, steps_per_epoch=10, every=0)
    progress.on_epoch_begin(0)
    _calls(progress, [(4, 7)])
    assert progress.summary["resumed_at"] == {"epoch": 1, "step": 5}
    fresh = ProgressLogger(global_batch=32, epochs=2, steps_per_epoch=10, every=0)
    fresh.on_epoch_begin(0)
    _calls(fresh, [(0, 7)])
    assert "resumed_at" not in fresh.summary


def test_divergence_names_the_steps_of_the_call_it_was_seen_in():
    guard = DivergenceGuard()
    guard.set_model(types.SimpleNamespace(
        optimizer=types.SimpleNamespace(iterations=tf.Variable(16, dtype=tf.int64)),
        stop_training=False))
    guard.on_epoch_begin(0)
    _calls(guard, [(0, 7)])  # finite: nothing happens
    with pytest.raises(TrainingDivergedError,
                       match=r"training diverged at epoch 1, one of steps 9-16 "
                             r"\(train.steps_per_execution\) \(optimizer step 16\): "
                             r"non-finite \['loss'\]"):
        _calls(guard, [(8, 15)], {"loss": tf.constant(math.nan), "batch_rows": 32})
    with pytest.raises(TrainingDivergedError, match=r"at epoch 1, step 17 \(optimizer"):
        _calls(guard, [(16, 16)], {"loss": tf.constant(math.inf)})
