"""Homoscedastic-uncertainty task weighting (MAN eq. 3, after Kendall et al., CVPR 2018).

Paper: MAN (/work/shared/papers/man_multitask_attention.md, section on the loss, eq. 2-3);
DESIGN.md "Losses". Training-only: the weights are not part of the serving export.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import tensorflow as tf

from schemas.checks import check_positive_int
from trainer.layers.common import register

Losses = Union[tf.Tensor, Sequence[tf.Tensor]]


def _stack(losses: Losses, dtype) -> tf.Tensor:
    if isinstance(losses, (list, tuple)):
        losses = tf.stack([tf.reshape(tf.cast(tf.convert_to_tensor(l, dtype_hint=dtype), dtype),
                                      []) for l in losses])
    return tf.reshape(tf.cast(tf.convert_to_tensor(losses, dtype_hint=dtype), dtype), [-1])


def uncertainty_weighted(losses: Losses, log_sigma) -> tf.Tensor:
    """``sum_k exp(-2 log_sigma_k) / 2 * L_k + log_sigma_k`` (MAN eq. 3).

    Eq. 3 is ``L_1 / (2 sigma_1^2) + L_2 / (2 sigma_2^2) + log(sigma_1 sigma_2)``, written with
    ``log_sigma`` as the free parameter so sigma stays positive and the term is smooth.

    Args:
      losses: ``K`` scalar task losses (list/tuple of scalars or a ``[K]`` tensor).
      log_sigma: ``[K]`` log standard deviations (a variable, to be learned).

    Returns:
      Scalar weighted total, in ``log_sigma``'s dtype.
    """
    log_sigma = tf.convert_to_tensor(log_sigma)
    if not log_sigma.dtype.is_floating:
        log_sigma = tf.cast(log_sigma, tf.float32)
    losses = _stack(losses, log_sigma.dtype)
    log_sigma = tf.reshape(log_sigma, [-1])
    return tf.reduce_sum(0.5 * tf.exp(-2.0 * log_sigma) * losses + log_sigma)


@register
class UncertaintyWeights(tf.keras.layers.Layer):
    """Holds the trainable ``log_sigma`` ``[num_tasks]`` and returns :func:`uncertainty_weighted`.

    Call with the ``num_tasks`` scalar task losses (list or ``[K]`` tensor); returns the scalar
    total (MAN eq. 3). Build it (and its optimizer) inside ``strategy.scope()``.

    Args:
      num_tasks: Number of task losses K.
      initial_log_sigma: Initial value of every ``log_sigma_k`` (0 = weight 1/2 per task).
    """

    def __init__(self, num_tasks: int, initial_log_sigma: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = check_positive_int("num_tasks", num_tasks)
        if (isinstance(initial_log_sigma, bool) or not isinstance(initial_log_sigma, (int, float))
                or not math.isfinite(initial_log_sigma)):
            raise ValueError("`initial_log_sigma` must be a finite number, "
                             f"received: initial_log_sigma={initial_log_sigma!r}")
        self.initial_log_sigma = float(initial_log_sigma)

    def build(self, input_shape=None):
        self.log_sigma = self.add_weight(
            name="log_sigma", shape=[self.num_tasks],
            initializer=tf.keras.initializers.Constant(self.initial_log_sigma), trainable=True)
        super().build(input_shape)

    def call(self, losses):
        count = len(losses) if isinstance(losses, (list, tuple)) else losses.shape[0]
        if count is not None and count != self.num_tasks:
            raise ValueError(f"UncertaintyWeights expects {self.num_tasks} task losses, "
                             f"received: {count}")
        return uncertainty_weighted(losses, self.log_sigma)

    def get_config(self):
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks, "initial_log_sigma": self.initial_log_sigma})
        return config
