"""Cross-stitch networks (Misra, Shrivastava, Gupta, Hebert, CVPR'16)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from schemas.checks import check_positive_int, check_rate, check_tasks, check_units
from trainer.layers.common import build_sublayer, register
from trainer.layers.mlp import MLP


@register
class CrossStitchUnit(tf.keras.layers.Layer):
    """Learned linear combination of task columns: ``x~_t = sum_s alpha[t, s] x_s``.

    Misra et al. eq. 1, generalised from 2 to T tasks. ``alpha`` (``[T, T]``, named ``alpha``)
    starts "identity-ish": ``self_weight`` on the diagonal and ``(1 - self_weight) / (T - 1)``
    elsewhere, so every row sums to 1 (the paper's best init is alpha_S = 0.9, alpha_D = 0.1).
    With one task alpha starts at ``[[1]]``. Call with a list of T ``[B, d]`` tensors; returns a
    list of T ``[B, d]`` tensors.

    Args:
      num_tasks: Number of task columns T.
      self_weight: Initial diagonal value alpha_S, in (0, 1].
    """

    def __init__(self, num_tasks: int, self_weight: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = check_positive_int("num_tasks", num_tasks)
        if isinstance(self_weight, bool) or not isinstance(self_weight, (int, float)) or \
                not 0.0 < self_weight <= 1.0:
            raise ValueError(f"`self_weight` must be a float in (0, 1], "
                             f"received: self_weight={self_weight!r}")
        self.self_weight = float(self_weight)

    def initial_alpha(self) -> np.ndarray:
        t = self.num_tasks
        if t == 1:
            return np.ones((1, 1), np.float32)
        alpha = np.full((t, t), (1.0 - self.self_weight) / (t - 1), np.float32)
        np.fill_diagonal(alpha, self.self_weight)
        return alpha

    def build(self, input_shape):
        if len(input_shape) != self.num_tasks:
            raise ValueError(f"CrossStitchUnit expects {self.num_tasks} task columns, "
                             f"received {len(input_shape)}")
        self.alpha = self.add_weight(
            name="alpha", shape=(self.num_tasks, self.num_tasks),
            initializer=tf.keras.initializers.Constant(self.initial_alpha()), trainable=True)
        super().build(input_shape)

    def call(self, inputs):
        stacked = tf.stack(list(inputs), axis=1)  # [B, T, d]
        mixed = tf.einsum("ts,bsd->btd", tf.cast(self.alpha, stacked.dtype), stacked)
        return tf.unstack(mixed, num=self.num_tasks, axis=1)

    def get_config(self):
        config = super().get_config()
        config.update({"num_tasks": self.num_tasks, "self_weight": self.self_weight})
        return config


@register
class CrossStitch(tf.keras.layers.Layer):
    """One column (MLP) per task with a cross-stitch unit after every layer.

    Layer ``l`` of task ``t``: ``h_t^l = act(W_t^l x_t^{l-1} + b_t^l)``, then
    ``x_t^l = sum_s alpha^l[t, s] h_s^l`` (Misra et al. eq. 1); ``x_t^0`` is the input
    ``[B, F]``. Output: dict task -> ``[B, units[-1]]``.

    This backbone OWNS its towers: the task columns are the towers (sharing happens only through
    the stitch units), so the representation it returns is already the towers' output; the model
    assembly should add only the logit (or a small head) after it. Dense layers are named
    ``<task>/layer_l``, stitch units ``stitch_l``.

    Defaults follow AdaFTR Table 3 (task network of L = 3 layers, d = 128: [128, 64, 32]) and
    Misra et al.'s best initialisation (alpha_S = 0.9).

    Args:
      tasks: Task names, e.g. ``["ctr", "cvr"]``.
      units: Sizes of the layers of every task column.
      activation: Activation of every column layer.
      dropout: Dropout after every column layer, in [0, 1).
      self_weight: Initial diagonal of each stitch matrix, in (0, 1].
    """

    def __init__(self, tasks: Sequence[str], units: Sequence[int] = (128, 64, 32),
                 activation: str = "relu", dropout: float = 0.0, self_weight: float = 0.9,
                 **kwargs):
        super().__init__(**kwargs)
        self.tasks = list(check_tasks("tasks", tasks))
        self.units = list(check_units("units", units))
        tf.keras.activations.get(activation)  # fails early on an unknown name
        self.activation = activation
        self.dropout = check_rate("dropout", dropout)
        self.self_weight = float(
            CrossStitchUnit(len(self.tasks), self_weight).self_weight)  # validates it

    def build(self, input_shape):
        self.columns = {t: [MLP([u], activation=self.activation, dropout=self.dropout,
                                name=f"{t}/layer_{l}") for l, u in enumerate(self.units)]
                        for t in self.tasks}
        self.stitches = [CrossStitchUnit(len(self.tasks), self.self_weight, name=f"stitch_{l}")
                         for l in range(len(self.units))]
        for t in self.tasks:
            shape = tf.TensorShape(input_shape)
            for layer in self.columns[t]:
                build_sublayer(layer, shape)
                shape = layer.compute_output_shape(shape)
        for l, stitch in enumerate(self.stitches):
            build_sublayer(stitch, [tf.TensorShape([None, self.units[l]])] * len(self.tasks))
        super().build(input_shape)

    def call(self, inputs, training=None):
        xs = [inputs] * len(self.tasks)
        for l, stitch in enumerate(self.stitches):
            hs = [self.columns[t][l](x, training=training) for t, x in zip(self.tasks, xs)]
            xs = stitch(hs)
        return dict(zip(self.tasks, xs))

    def get_config(self):
        config = super().get_config()
        config.update({"tasks": list(self.tasks), "units": list(self.units),
                       "activation": self.activation, "dropout": self.dropout,
                       "self_weight": self.self_weight})
        return config
