"""Homoscedastic-uncertainty task weighting (MAN eq. 3, after Kendall et al., CVPR 2018).

Paper: MAN (/work/shared/papers/man_multitask_attention.md, Sec. 3.3, eq. 2-3); DESIGN.md
"Losses". :class:`UncertaintyWeighting` is the one implementation: a layer holding the learned
``log_sigma`` that maps task losses to the weighted total. It is training-only by construction:
its input is the task losses, which exist only where labels do, so it cannot be part of an
inference graph, and its weight is never in an exported network.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Sequence, Union

import numpy as np
import tensorflow as tf

from schemas.checks import check_positive_int, short_repr
from trainer.layers.common import register

Losses = Union[tf.Tensor, Sequence[tf.Tensor], Mapping[str, tf.Tensor]]


@register
class UncertaintyWeighting(tf.keras.layers.Layer):
    """Learned uncertainty weights of K task losses (MAN eq. 3).

    ``L = sum_k L_k / (2 sigma_k^2) + log sigma_k``; eq. 3 is the two-task case
    ``L_1 / (2 sigma_1^2) + L_2 / (2 sigma_2^2) + log(sigma_1 sigma_2)``. The free parameter is
    ``log_sigma`` ``[K]`` (so sigma stays positive and the term is smooth): each task's term is
    ``exp(-2 log_sigma_k) / 2 * L_k + log_sigma_k``.

    Call with the K scalar task losses (a list/tuple, a ``[K]`` tensor, or a dict of K named
    losses, whose insertion order is the order of ``log_sigma``); returns the scalar total.
    :meth:`weighted` returns the K weighted terms in the structure given (their sum is the
    total), for logging each task. Create it, like the model, inside ``strategy.scope()``; it is
    trained by the optimizer with the model's variables (e.g. a subclassed model that holds it,
    or a loss recipe's ``layers``).

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
                             f"received: initial_log_sigma={short_repr(initial_log_sigma)}")
        self.initial_log_sigma = float(initial_log_sigma)

    def build(self, input_shape=None):
        self.log_sigma = self.add_weight(
            name="log_sigma", shape=[self.num_tasks],
            initializer=tf.keras.initializers.Constant(self.initial_log_sigma), trainable=True)
        super().build(input_shape)

    def weighted(self, losses: Losses) -> Union[List[tf.Tensor], Dict[str, tf.Tensor]]:
        """The K weighted terms ``exp(-2 log_sigma_k) / 2 * L_k + log_sigma_k`` (a dict for a
        dict of losses, else a list)."""
        if not self.built:
            self.build(None)
        names = list(losses) if isinstance(losses, Mapping) else None
        values = [losses[n] for n in names] if names is not None else losses
        if isinstance(values, (list, tuple)):
            count = len(values)
        else:
            values = tf.reshape(tf.convert_to_tensor(values), [-1])
            count = values.shape[0]
        if count is not None and count != self.num_tasks:
            raise ValueError(f"UncertaintyWeighting expects {self.num_tasks} task losses, "
                             f"received: {count}")
        log_sigma = self.log_sigma
        terms = [0.5 * tf.exp(-2.0 * log_sigma[k])
                 * tf.reshape(tf.cast(values[k], log_sigma.dtype), []) + log_sigma[k]
                 for k in range(self.num_tasks)]
        return dict(zip(names, terms)) if names is not None else terms

    def call(self, losses: Losses) -> tf.Tensor:
        terms = self.weighted(losses)
        return tf.add_n(list(terms.values()) if isinstance(terms, dict) else terms)

    def task_weights(self) -> np.ndarray:
        """The learned weights ``1 / (2 sigma_k^2)`` (MAN prints them after training)."""
        return 0.5 * np.exp(-2.0 * self.log_sigma.numpy())

    def get_config(self):
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks, "initial_log_sigma": self.initial_log_sigma})
        return config
