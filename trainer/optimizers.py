"""Optimizers and learning-rate schedules of the training session.

* :class:`FusedAdam`: tf-keras' Adam with each dense update as one kernel
  (``ResourceApplyAdam``, as Keras 2's legacy Adam and DeepCTR's TF 2.10 Adam run it) instead
  of about ten small ops per weight; the same maths and the same slots (checkpoints load in
  either). The session's Adam.
* :class:`LazyAdam`: Adam whose sparse (``tf.IndexedSlices``) updates touch only the rows in
  the batch. tf-keras' Adam decays the WHOLE first and second moment of an embedding table on
  every step and moves every row by ``m / sqrt(v)``, so a row keeps moving for many steps after
  the last batch that held its id (its momentum decays by ``beta_1`` per step while its
  ``sqrt(v)`` decays far slower); for rare ids that is a large drift driven by stale
  gradients. LazyAdam keeps Adam's update for the rows in the batch (moments of those rows
  only, bias correction by the global step, as TensorFlow Addons' LazyAdam does) and leaves
  the others alone; dense gradients get plain Adam.
* :class:`WarmupDecay`: linear warm-up then constant, cosine or linear decay.
* :func:`make_optimizer`: one of ``adam``, ``lazy_adam``, ``adagrad`` by name.
"""
from __future__ import annotations

import math

import tensorflow as tf

from schemas.checks import check_choice, check_nonneg_int, check_positive_number, check_unit_number

OPTIMIZERS = ("adam", "lazy_adam", "adagrad")
SCHEDULES = ("constant", "cosine", "linear")


@tf.keras.utils.register_keras_serializable(package="funnelrank")
class FusedAdam(tf.keras.optimizers.Adam):
    """Adam (Kingma & Ba 2015, Algorithm 1 with the bias correction folded into the step)
    whose dense updates run as ONE ``ResourceApplyAdam`` kernel per weight.

    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``,
    ``w <- w - lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)``: tf-keras' Adam computes
    the same with about ten ops per weight, which on a small model's CPU step is a tenth of
    the step in op dispatch (docs/benchmarks.md, issue 18). Same variables and slots as
    ``tf.keras.optimizers.Adam``; ``amsgrad`` keeps tf-keras' Adam.

    Sparse gradients (``tf.IndexedSlices``, an embedding table's rows in the batch, summed per
    row by ``apply_gradients``) are scattered into a dense gradient and take the same kernel:
    tf-keras' Adam decays the moments of EVERY row and moves every row on each step (its
    sparse path is dense Adam with zero gradient for the rows not in the batch, written as
    five whole-table ops and two scatters), so the result is the same, with one pass over the
    table instead of several. CPU train step with Adam on the tables: MMoE +3-10 %, PLE +1-9 %
    (``benchmarks/step_ab.py --change sparse_adam``, docs/benchmarks.md, issue 18 round 4).
    :class:`LazyAdam` is the optimizer that updates only the batch's rows.
    """

    def _adam_state(self, variable):
        """``(step t, beta_1, beta_2, m, v)`` of ``variable``, scalars in its dtype."""
        dtype = variable.dtype
        key = self._var_key(variable)
        return (tf.cast(self.iterations + 1, dtype), tf.cast(self.beta_1, dtype),
                tf.cast(self.beta_2, dtype), self._momentums[self._index_dict[key]],
                self._velocities[self._index_dict[key]])

    def update_step(self, gradient, variable):
        if self.amsgrad:
            return super().update_step(gradient, variable)
        if isinstance(gradient, tf.IndexedSlices):  # rows already unique (apply_gradients)
            gradient = tf.math.unsorted_segment_sum(gradient.values, gradient.indices,
                                                    tf.shape(variable)[0])
        dtype = variable.dtype
        step, beta_1, beta_2, m, v = self._adam_state(variable)
        return tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=m.handle, v=v.handle, beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step), lr=tf.cast(self.learning_rate, dtype),
            beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype))


@tf.keras.utils.register_keras_serializable(package="funnelrank")
class LazyAdam(FusedAdam):
    """Adam with row-wise (lazy) updates for sparse gradients (see the module docstring).

    For a sparse gradient ``g`` of rows ``i`` (deduplicated by ``apply_gradients``):
    ``m_i <- b1 m_i + (1 - b1) g_i``, ``v_i <- b2 v_i + (1 - b2) g_i^2``,
    ``w_i <- w_i - lr sqrt(1 - b2^t) / (1 - b1^t) m_i / (sqrt(v_i) + eps)``; other rows, and
    their moments, do not change. Dense gradients: :class:`FusedAdam`.
    """

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        step, beta_1, beta_2, m, v = self._adam_state(variable)
        lr = tf.cast(self.learning_rate, dtype)
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
        rows, values = gradient.indices, tf.cast(gradient.values, dtype)
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * values
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(values)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon),
                                              rows))


@tf.keras.utils.register_keras_serializable(package="funnelrank")
class WarmupDecay(tf.keras.optimizers.schedules.LearningRateSchedule):
    """``base * warm(step) * decay(step)`` (``step`` counts from 0).

    ``warm = min(1, (step + 1) / warmup_steps)`` (1 without warm-up); after the warm-up, with
    ``p = min(1, (step - warmup_steps) / (decay_steps - warmup_steps))``:
    ``constant``: 1; ``cosine``: ``floor + (1 - floor) (1 + cos(pi p)) / 2``; ``linear``:
    ``1 - (1 - floor) p``.

    Args:
      base: The peak learning rate.
      schedule: ``constant``, ``cosine`` or ``linear``.
      warmup_steps: Steps of the linear warm-up (0: none).
      decay_steps: Step at which the decay reaches ``floor`` (counted from step 0; ignored by
        ``constant``); must exceed ``warmup_steps``.
      floor: Final learning rate as a share of ``base``, in [0, 1].
    """

    def __init__(self, base: float, schedule: str = "constant", warmup_steps: int = 0,
                 decay_steps: int = 1, floor: float = 0.0):
        self.base = check_positive_number("base", base)
        self.schedule = check_choice("schedule", schedule, SCHEDULES)
        self.warmup_steps = check_nonneg_int("warmup_steps", warmup_steps)
        self.decay_steps = check_nonneg_int("decay_steps", decay_steps)
        if schedule != "constant" and self.decay_steps <= self.warmup_steps:
            raise ValueError(f"`decay_steps` must be greater than warmup_steps="
                             f"{warmup_steps}, received: decay_steps={decay_steps}")
        self.floor = check_unit_number("floor", floor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        rate = tf.constant(self.base, tf.float32)
        if self.warmup_steps:
            rate *= tf.minimum(1.0, (step + 1.0) / self.warmup_steps)
        if self.schedule == "constant":
            return rate
        span = float(self.decay_steps - self.warmup_steps)
        p = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
        if self.schedule == "cosine":
            factor = self.floor + (1 - self.floor) * 0.5 * (1 + tf.cos(math.pi * p))
        else:
            factor = 1 - (1 - self.floor) * p
        return rate * factor

    def get_config(self):
        return {"base": self.base, "schedule": self.schedule, "warmup_steps": self.warmup_steps,
                "decay_steps": self.decay_steps, "floor": self.floor}


def make_optimizer(name: str, learning_rate) -> tf.keras.optimizers.Optimizer:
    """``adam``, ``lazy_adam`` or ``adagrad`` (initial accumulator 0.1, Keras' default) at
    ``learning_rate`` (a number or a schedule)."""
    check_choice("optimizer", name, OPTIMIZERS)
    if name == "adam":
        return FusedAdam(learning_rate)
    if name == "lazy_adam":
        return LazyAdam(learning_rate)
    return tf.keras.optimizers.Adagrad(learning_rate)
