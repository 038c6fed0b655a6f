"""Adaptive Information Transfer Multi-task framework (AITM; Xi et al., KDD'21).

Xi, Chen, Liu, Zhou, Ma, Wang, Fang, Chen, "Modeling the Sequential Dependence among Audience
Multi-step Conversions with Multi-task Learning in Targeted Display Advertising", KDD'21.
"""
from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf

from schemas.checks import check_positive_int, check_rate, check_tasks, check_units
from trainer.layers.common import build_sublayer, register
from trainer.layers.gates import weighted_sum
from trainer.layers.mlp import MLP


@register
class AITModule(tf.keras.layers.Layer):
    """Adaptive Information Transfer: attention over ``[p_{t-1}, q_t]`` (AITM eq. 3-5).

    ``z_t = sum_{u in {p_{t-1}, q_t}} w_u h_1(u)`` with
    ``w_u = softmax_u(<h_2(u), h_3(u)> / sqrt(k))``; ``h_1, h_2, h_3`` are linear maps to
    ``units = k`` dimensions (named ``h1``, ``h2``, ``h3``). Call with ``(p_prev, q)``, both
    ``[B, d]``; returns ``z`` ``[B, units]``. ``attention_weights`` gives the ``[B, 2]``
    weights of ``(p_prev, q)`` for inspection.

    Args:
      units: Width k of the attention projections and of the output.
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)

    def build(self, input_shape):
        p_shape, q_shape = input_shape
        if tf.TensorShape(p_shape)[-1] != tf.TensorShape(q_shape)[-1]:
            raise ValueError("AITModule: p_prev and q must have the same width, received "
                             f"{tf.TensorShape(p_shape)} and {tf.TensorShape(q_shape)}")
        self.h1, self.h2, self.h3 = [tf.keras.layers.Dense(self.units, name=f"h{i}")
                                     for i in (1, 2, 3)]
        stacked = tf.TensorShape([None, 2, tf.TensorShape(q_shape)[-1]])
        for dense in (self.h1, self.h2, self.h3):
            build_sublayer(dense, stacked)
        super().build(input_shape)

    def attention_weights(self, inputs):
        """``[B, 2]`` softmax weights of ``(p_prev, q)`` (eq. 4-5)."""
        u = tf.stack(list(inputs), axis=1)  # [B, 2, d]
        scores = tf.reduce_sum(self.h2(u) * self.h3(u), axis=-1) / math.sqrt(self.units)
        return tf.nn.softmax(scores, axis=1)

    def call(self, inputs):
        u = tf.stack(list(inputs), axis=1)
        weights = self.attention_weights(inputs)
        return weighted_sum(weights, self.h1(u))

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units})
        return config


@register
class AITM(tf.keras.layers.Layer):
    """Per-task towers chained along the funnel by AIT modules (AITM eq. 2-5).

    ``tasks`` are ordered along the conversion funnel (e.g. ``["ctr", "ctcvr"]`` or
    ``["click", "view", "conversion"]``). For task ``t``: ``q_t = tower_t(x)``;
    ``z_1 = q_1``; for ``t > 1``: ``p_{t-1} = transfer_{t-1}(z_{t-1})`` (eq. 2, an MLP of width
    ``tower_units[-1]``) and ``z_t = AIT(p_{t-1}, q_t)`` (eq. 3-5). Output: dict task ->
    ``z_t`` ``[B, tower_units[-1]]``; the paper's prediction is ``sigmoid(W z_t + b)``.

    This backbone OWNS its towers (information is transferred between tower outputs), so the
    model assembly should add only the logit after it. Each task's head is meant to predict the
    probability of reaching that funnel step from the impression (CTR, CTCVR, ...), which is
    what the calibrator ``aitm_calibrator`` (eq. 6) constrains. Sub-layers are named
    ``<task>/tower``, ``<task>/transfer`` (from task t to t+1) and ``<task>/ait``.

    Defaults follow AITM's released settings as used by MAN Sec. 4.2 (towers [128, 64, 32],
    AIT width 32 = ``tower_units[-1]``); the calibrator weight (0.6 in AITM) belongs to the loss.

    Args:
      tasks: Task names in funnel order.
      tower_units: Hidden sizes of each task tower.
      tower_dropout: Dropout inside towers and transfer layers, in [0, 1).
    """

    def __init__(self, tasks: Sequence[str], tower_units: Sequence[int] = (128, 64, 32),
                 tower_dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.tasks = list(check_tasks("tasks", tasks))
        self.tower_units = list(check_units("tower_units", tower_units))
        self.tower_dropout = check_rate("tower_dropout", tower_dropout)

    def build(self, input_shape):
        k = self.tower_units[-1]
        self.towers = {t: MLP(self.tower_units, dropout=self.tower_dropout, name=f"{t}/tower")
                       for t in self.tasks}
        self.transfers = {t: MLP([k], dropout=self.tower_dropout, name=f"{t}/transfer")
                          for t in self.tasks[:-1]}
        self.aits = {t: AITModule(k, name=f"{t}/ait") for t in self.tasks[1:]}
        rep = tf.TensorShape([None, k])
        for t in self.tasks:
            build_sublayer(self.towers[t], input_shape)
        for layer in self.transfers.values():
            build_sublayer(layer, rep)
        for layer in self.aits.values():
            build_sublayer(layer, (rep, rep))
        super().build(input_shape)

    def call(self, inputs, training=None):
        out = {}
        prev = None
        for t in self.tasks:
            q = self.towers[t](inputs, training=training)
            if prev is None:
                z = q
            else:
                p = self.transfers[prev](out[prev], training=training)
                z = self.aits[t]((p, q))
            out[t] = z
            prev = t
        return out

    def get_config(self):
        config = super().get_config()
        config.update({"tasks": list(self.tasks), "tower_units": list(self.tower_units),
                       "tower_dropout": self.tower_dropout})
        return config


def aitm_calibrator(p_prev, p_next):
    """Behavioural expectation calibrator of AITM (eq. 6), averaged over the batch.

    ``mean_i max(p_next_i - p_prev_i, 0)``: penalises a later funnel step predicted more
    likely than the step before it (e.g. pCTCVR > pCTR). Shapes ``[B]`` and ``[B, 1]`` are both
    accepted (flattened first, so they never broadcast to ``[B, B]``).

    Args:
      p_prev: Probabilities of the earlier step, e.g. pCTR.
      p_next: Probabilities of the later step, e.g. pCTCVR.

    Returns:
      Scalar loss (0 for an empty batch).
    """
    p_prev = tf.reshape(tf.convert_to_tensor(p_prev), [-1])
    p_next = tf.reshape(tf.cast(p_next, p_prev.dtype), [-1])
    penalty = tf.nn.relu(p_next - p_prev)
    n = tf.cast(tf.size(penalty), penalty.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(penalty), n)


def aitm_calibration_loss(probabilities: Sequence):
    """Sum of ``aitm_calibrator`` over adjacent funnel steps ``(p_1, p_2), (p_2, p_3), ...``."""
    if len(probabilities) < 2:
        raise ValueError("aitm_calibration_loss needs at least 2 funnel steps, "
                         f"received: {len(probabilities)}")
    return tf.add_n([aitm_calibrator(a, b) for a, b in zip(probabilities, probabilities[1:])])
