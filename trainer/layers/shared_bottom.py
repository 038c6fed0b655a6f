"""Shared-Bottom multi-task backbone (Caruana, 1997; hard parameter sharing)."""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from schemas.checks import check_rate, check_tasks, check_units
from trainer.layers.common import build_sublayer, register
from trainer.layers.mlp import MLP


@register
class SharedBottom(tf.keras.layers.Layer):
    """One bottom MLP shared by every task: ``h_k(x) = bottom(x)`` for all tasks ``k``.

    Caruana (1997), "Multitask Learning": all tasks share the lower layers, only the towers
    (added after this layer by the model assembly) are task specific. Input ``[B, F]``; output a
    dict keyed by task name, every value the same ``[B, bottom_units[-1]]`` representation.
    The bottom is named ``shared/bottom``.

    Defaults follow AdaFTR (Sec. 3.1.4, Table 3): "the first MLP layer is shared" with hidden
    size ``d = 128``.

    Args:
      tasks: Task names, e.g. ``["ctr", "cvr"]``.
      bottom_units: Hidden sizes of the shared bottom MLP.
      bottom_dropout: Dropout inside the bottom, in [0, 1).
      use_batch_norm: Batch-normalise each bottom layer.
    """

    def __init__(self, tasks: Sequence[str], bottom_units: Sequence[int] = (128,),
                 bottom_dropout: float = 0.0, use_batch_norm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.tasks = list(check_tasks("tasks", tasks))
        self.bottom_units = list(check_units("bottom_units", bottom_units))
        self.bottom_dropout = check_rate("bottom_dropout", bottom_dropout)
        self.use_batch_norm = bool(use_batch_norm)

    def build(self, input_shape):
        self.bottom = MLP(self.bottom_units, dropout=self.bottom_dropout,
                          use_batch_norm=self.use_batch_norm, name="shared/bottom")
        build_sublayer(self.bottom, input_shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        h = self.bottom(inputs, training=training)
        return {t: tf.identity(h) for t in self.tasks}

    def get_config(self):
        config = super().get_config()
        config.update({"tasks": list(self.tasks), "bottom_units": list(self.bottom_units),
                       "bottom_dropout": self.bottom_dropout,
                       "use_batch_norm": self.use_batch_norm})
        return config
