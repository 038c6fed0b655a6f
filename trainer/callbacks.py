"""Keras callbacks of the training session: progress with ETA, divergence guard, checkpoints.

* :class:`ProgressLogger`: a line every ``every`` steps (epoch, step of steps, loss terms,
  examples/s, ETA of the run) and at each epoch end; measures throughput and keeps the epoch
  logs (the validation history) over the whole run, a resumed run included (the counters and
  the history travel with the checkpoint).
* :class:`DivergenceGuard`: stops at the first non-finite loss term naming the step and batch.
* :class:`Checkpoints`: BackupAndRestore every ``train.checkpoint_every_steps`` steps AND at
  every epoch end (so a killed run never starts over), and on SIGTERM (what Kubernetes sends
  before it kills a pod): the state is saved at the next step and :class:`TrainingPreempted`
  is raised; the same command started again resumes from there. Early stopping's state (its
  best value, epoch and weights, its patience count) travels with the checkpoint too, so a
  resumed run stops, and restores, as the uninterrupted run would have.
* :class:`MinRoundsEarlyStopping`: Keras' EarlyStopping that never stops before a minimum
  number of validation rounds, with its state saved and restored by :class:`Checkpoints`.
"""
from __future__ import annotations

import io
import json
import logging
import math
import signal
import threading
import time
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from trainer.errors import TrainingDivergedError, TrainingPreempted

log = logging.getLogger(__name__)

PROGRESS_FILE = "progress.json"
BEST_WEIGHTS_FILE = "best_weights.npz"


def fmt_logs(logs) -> str:
    return ", ".join(f"{k}={float(v):.4f}" for k, v in sorted((logs or {}).items()))


def fmt_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressLogger(tf.keras.callbacks.Callback):
    """Progress lines with ETA; the run's throughput (examples/s over every trained step).

    Args:
      global_batch: Examples per step.
      epochs: Epochs of the run (the maximum with early stopping).
      steps_per_epoch: Steps per epoch, or None when unknown (then no ETA in epoch 1).
      every: Line interval in steps (0: epoch lines only).
    """

    LOG_KEYS = ("batch_rows",)

    def __init__(self, global_batch: int, epochs: int, steps_per_epoch: Optional[int] = None,
                 every: int = 100):
        super().__init__()
        # Batch logs stay tensors (read only for a progress line): Keras otherwise copies them
        # to Python after every call, which waits for the step and stalls the next one.
        self._supports_tf_logs = True
        self.global_batch = global_batch
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.every = every
        self.train_seconds = 0.0  # over the whole run, resumed parts included
        self.train_examples = 0
        self.history: Dict[str, List[float]] = {}  # epoch logs, the resumed run's included
        self.summary: Dict[str, object] = {}
        self._first_batch = True
        self._epoch = 0

    def restore(self, state: Dict[str, float]) -> None:
        """Counters of the run before a resume (from the checkpoint's ``progress.json``)."""
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.train_examples = int(state.get("train_examples", 0))
        self.history = {k: [float(v) for v in values]
                        for k, values in state.get("history", {}).items()}

    def state(self) -> Dict[str, object]:
        seconds = self.train_seconds + (time.perf_counter() - self._t0 if hasattr(self, "_t0")
                                        else 0.0)
        return {"train_seconds": seconds,
                "train_examples": self.train_examples + self._steps * self.global_batch,
                "history": self.history}

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._t0 = time.perf_counter()
        self._steps = 0

    def on_train_batch_begin(self, batch, logs=None):
        self._begin = int(batch)  # the first step of this call (train.steps_per_execution)

    def on_train_batch_end(self, batch, logs=None):
        begin = getattr(self, "_begin", batch)
        if self._first_batch:
            self._first_batch = False
            if begin > 0 or self._epoch > 0:  # a checkpoint put us mid-run
                self.summary["resumed_at"] = {"epoch": self._epoch + 1, "step": int(begin) + 1}
                log.info("resumed from a checkpoint at epoch %d, step %d", self._epoch + 1,
                         begin + 1)
        before = self._steps
        self._steps += int(batch) + 1 - begin  # Keras may pass NumPy integers
        if self.every and self._steps // self.every > before // self.every:
            elapsed = time.perf_counter() - self._t0
            rate = self._steps * self.global_batch / elapsed
            total = f"/{self.steps_per_epoch}" if self.steps_per_epoch else ""
            log.info("epoch %d/%d step %d%s: %s (%.0f examples/s, ETA %s)", self._epoch + 1,
                     self.epochs, batch + 1, total,
                     fmt_logs({k: v for k, v in (logs or {}).items()
                               if not k.startswith("batch_")}),
                     rate, fmt_seconds(self._eta(batch + 1, elapsed)))

    def _eta(self, step: int, elapsed: float) -> float:
        if not self.steps_per_epoch:
            return math.nan
        per_step = elapsed / max(self._steps, 1)
        left = (self.steps_per_epoch - step) + (self.epochs - self._epoch - 1) * \
            self.steps_per_epoch
        return left * per_step

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._t0
        self.train_seconds += seconds
        self.train_examples += self._steps * self.global_batch
        if self.steps_per_epoch is None and self._steps:  # known after the first epoch
            self.steps_per_epoch = self._steps
        self._steps = 0
        self._t0 = time.perf_counter()
        for key, value in (logs or {}).items():
            if not key.startswith("batch_"):
                self.history.setdefault(key, []).append(float(value))
        log.info("epoch %d/%d done in %.1fs: %s", epoch + 1, self.epochs, seconds,
                 fmt_logs({k: v for k, v in (logs or {}).items()
                           if not k.startswith("batch_")}))

    @property
    def examples_per_sec(self) -> float:
        return self.train_examples / self.train_seconds if self.train_seconds else float("nan")


class DivergenceGuard(tf.keras.callbacks.Callback):
    """Stops training at the first non-finite loss term (Keras' TerminateOnNaN only prints
    ``Invalid loss``): raises :class:`TrainingDivergedError` naming the epoch, the step, every
    term's value and the batch (its rows and each task's positives)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self._begin = int(batch)

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        terms = {k: float(v) for k, v in logs.items()
                 if not k.startswith("batch_") and not k.endswith("_auc")}
        bad = sorted(k for k, v in terms.items() if not math.isfinite(v))
        if not bad:
            return
        self.model.stop_training = True
        stats = ", ".join(f"{k[6:]}={int(v)}" for k, v in sorted(logs.items())
                          if k.startswith("batch_"))
        step = int(self.model.optimizer.iterations.numpy())
        begin = getattr(self, "_begin", batch)
        steps = f"step {batch + 1}" if begin == batch else \
            f"one of steps {begin + 1}-{batch + 1} (train.steps_per_execution)"
        raise TrainingDivergedError(
            f"training diverged at epoch {self._epoch + 1}, {steps} (optimizer step "
            f"{step}): non-finite {bad}; loss terms {fmt_logs(terms)}; batch: {stats or 'n/a'}. "
            "Lower train.learning_rate or check the input; a checkpoint, if any, still holds "
            "the weights from before.")


class Checkpoints(tf.keras.callbacks.BackupAndRestore):
    """BackupAndRestore every ``every_steps`` steps, at each epoch end and on SIGTERM.

    Args:
      backup_dir: Checkpoint directory (any ``tf.io.gfile`` path).
      every_steps: Step interval.
      progress: The run's :class:`ProgressLogger`, whose counters are saved beside each
        checkpoint and restored on resume (throughput over the whole run).
      stopper: The run's :class:`MinRoundsEarlyStopping`, if any: its state is saved in the
        same file, its best weights in ``best_weights.npz`` (rewritten only when they change),
        and both are restored on resume. Place it before this callback in the callback list
        (its ``on_train_begin`` resets what this one restores).
    """

    def __init__(self, backup_dir: str, every_steps: int, progress: ProgressLogger,
                 stopper: Optional["MinRoundsEarlyStopping"] = None):
        super().__init__(backup_dir, save_freq=every_steps, delete_checkpoint=True)
        self.progress = progress
        self.stopper = stopper
        self._saved_best = None  # the best-weights list last written
        self._terminate = threading.Event()
        self._previous_handler = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        path = f"{self.backup_dir}/{PROGRESS_FILE}"
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                state = json.load(f)
            self.progress.restore(state)
            if self.stopper is not None and "early_stopping" in state:
                weights = None
                weights_path = f"{self.backup_dir}/{BEST_WEIGHTS_FILE}"
                if tf.io.gfile.exists(weights_path):
                    with tf.io.gfile.GFile(weights_path, "rb") as f:
                        stored = np.load(io.BytesIO(f.read()))
                        weights = [stored[f"w{i}"] for i in range(len(stored.files))]
                self.stopper.restore(state["early_stopping"], weights)
                self._saved_best = self.stopper.best_weights
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame):
        log.warning("SIGTERM: saving a checkpoint at the next step, then stopping")
        self._terminate.set()

    def _backup(self, epoch, batch=0):
        super()._backup(epoch, batch)
        state = self.progress.state()
        if self.stopper is not None:
            best = self.stopper.best_weights
            if best is not None and best is not self._saved_best:  # new best since last time
                buffer = io.BytesIO()
                np.savez(buffer, **{f"w{i}": w for i, w in enumerate(best)})
                self._write(BEST_WEIGHTS_FILE, buffer.getvalue(), "wb")
                self._saved_best = best
            state["early_stopping"] = self.stopper.state()
        # The weights first, then the state that points at them: a kill in between leaves
        # the previous state, whose best is still what best_weights.npz held or better.
        self._write(PROGRESS_FILE, json.dumps(state), "w")

    def _write(self, name: str, content, mode: str) -> None:
        """Writes ``backup_dir/name`` through a temporary file and a rename: a kill mid-write
        leaves the previous file whole."""
        path = f"{self.backup_dir}/{name}"
        with tf.io.gfile.GFile(path + ".tmp", mode) as f:
            f.write(content)
        tf.io.gfile.rename(path + ".tmp", path, overwrite=True)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        if self._terminate.is_set():
            self._backup(epoch=self._current_epoch, batch=batch)
            self._restore_handler()
            raise TrainingPreempted(
                f"stopped by SIGTERM at epoch {self._current_epoch + 1}, step {batch + 1}; the "
                f"checkpoint in {self.backup_dir} resumes the run when the same command is "
                f"started again")

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self._backup(epoch=epoch)  # the batch counter holds the epoch's last step

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        for name in (PROGRESS_FILE, BEST_WEIGHTS_FILE):
            if self.delete_checkpoint and tf.io.gfile.exists(f"{self.backup_dir}/{name}"):
                tf.io.gfile.remove(f"{self.backup_dir}/{name}")
        self._restore_handler()

    def _restore_handler(self):
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None


class MinRoundsEarlyStopping(tf.keras.callbacks.EarlyStopping):
    """Keras ``EarlyStopping`` that never stops before ``min_rounds`` validation rounds.

    Unlike ``start_from_epoch`` (which ignores the first epochs altogether), the best round is
    tracked from the first one, so the weights restored at the end may be those of a round
    before ``min_rounds``; only the decision to stop waits.

    Args:
      min_rounds: Validation rounds (Keras epochs) that always run; 0 is plain EarlyStopping.
      **kwargs: ``tf.keras.callbacks.EarlyStopping``'s arguments.
    """

    def __init__(self, min_rounds: int = 0, **kwargs):
        super().__init__(**kwargs)
        if int(min_rounds) != min_rounds or min_rounds < 0:
            raise ValueError(f"min_rounds: expected an integer >= 0, got {min_rounds!r}")
        self.min_rounds = int(min_rounds)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.model.stop_training and epoch + 1 < self.min_rounds:
            self.model.stop_training = False
            self.stopped_epoch = 0

    def state(self) -> Dict[str, object]:
        """What a resumed run needs besides the best weights (JSON-safe)."""
        return {"wait": int(self.wait), "best": float(self.best),
                "best_epoch": int(self.best_epoch), "stopped_epoch": int(self.stopped_epoch),
                "has_best_weights": self.best_weights is not None}

    def restore(self, state: Dict[str, object], best_weights=None) -> None:
        """Puts back :meth:`state` and the best weights (after ``on_train_begin`` reset them).

        Raises:
          ValueError: The state says there were best weights and none are given.
        """
        if state.get("has_best_weights") and best_weights is None:
            raise ValueError("early stopping's saved state has best weights, but "
                             f"{BEST_WEIGHTS_FILE} is missing from the checkpoint directory")
        self.wait = int(state["wait"])
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.stopped_epoch = int(state["stopped_epoch"])
        self.best_weights = list(best_weights) if best_weights is not None else None
