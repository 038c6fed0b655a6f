"""Hierarchical Knowledge Extraction (KAML Sec. 3.3, eq. 9-10).

Jia et al., "No One Left Behind: How to Exploit the Incomplete and Skewed Multi-Label Data for
Conversion Rate Prediction" (/work/shared/papers/kaml_incomplete_skewed_multilabel.md).
"""
from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from schemas.checks import check_rate, check_units
from trainer.layers.common import build_sublayer, register
from trainer.layers.mlp import MLP


@register
class HKE(tf.keras.layers.Layer):
    """Two sub-towers per conversion task, merged by the sample's original/extended indicator.

    ``h^t = MLP_t(h)`` for ``t in {original, extended}`` (eq. 9) and
    ``logit = W MLP(M h^original + (1 - M) h^extended)`` (eq. 10, before the sigmoid), where
    ``M = 1[o_i == j]``: 1 for a sample whose target action IS this task (original sample), 0
    for one that ADM lent to it (extended sample).

    Call with ``(h, M)`` (``h`` ``[B, d]``, ``M`` ``[B]`` or ``[B, 1]``) for training; returns the
    logit ``[B, 1]``. At serving every score is asked for as the ad's own target action
    (``M = 1``), so :meth:`inference_logit` uses the original sub-tower only; built into a
    functional model it references neither the extended sub-tower nor its weights, which
    therefore never reach an export. Sub-layers (prefixed with this layer's name so they stay
    unique in a functional model): ``<name>/original``, ``<name>/extended``, ``<name>/head``,
    ``<name>/logit``.

    Args:
      units: Hidden sizes of each sub-tower.
      head_units: Hidden sizes of the MLP after the merge (empty: the logit follows directly).
      dropout: Dropout inside the MLPs, in [0, 1).
    """

    def __init__(self, units: Sequence[int] = (32,), head_units: Sequence[int] = (16,),
                 dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = list(check_units("units", units))
        self.head_units = [] if not head_units else list(check_units("head_units", head_units))
        self.dropout = check_rate("dropout", dropout)

    def build(self, input_shape):
        h_shape = tf.TensorShape(input_shape[0] if isinstance(input_shape, (list, tuple))
                                 and not isinstance(input_shape[0], (int, type(None)))
                                 else input_shape)
        self.original = MLP(self.units, dropout=self.dropout, name=f"{self.name}/original")
        self.extended = MLP(self.units, dropout=self.dropout, name=f"{self.name}/extended")
        self.head = (MLP(self.head_units, dropout=self.dropout, name=f"{self.name}/head")
                     if self.head_units else None)
        self.logit = tf.keras.layers.Dense(1, name=f"{self.name}/logit")
        sub = h_shape[:-1].concatenate([self.units[-1]])
        build_sublayer(self.original, h_shape)
        build_sublayer(self.extended, h_shape)
        if self.head is not None:
            build_sublayer(self.head, sub)
            sub = sub[:-1].concatenate([self.head_units[-1]])
        build_sublayer(self.logit, sub)
        super().build(input_shape)

    def _finish(self, merged, training=None):
        if self.head is not None:
            merged = self.head(merged, training=training)
        return self.logit(merged)

    def call(self, inputs, training: Optional[bool] = None):
        h, m = inputs
        m = tf.reshape(tf.cast(m, self.compute_dtype), [-1, 1])
        merged = (m * self.original(h, training=training)
                  + (1.0 - m) * self.extended(h, training=training))  # eq. 10
        return self._finish(merged, training)

    def inference_logit(self, h, training: Optional[bool] = None):
        """The logit with ``M = 1`` (original sub-tower only); see the class docstring."""
        return self._finish(self.original(h, training=training), training)

    def get_config(self):
        config = super().get_config()
        config.update({"units": list(self.units), "head_units": list(self.head_units),
                       "dropout": self.dropout})
        return config
