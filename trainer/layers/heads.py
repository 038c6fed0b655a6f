"""Heads derived from other heads along the click -> conversion funnel."""
from __future__ import annotations

import tensorflow as tf

from trainer.layers.common import register


@register
class ProductHead(tf.keras.layers.Layer):
    """``p_ctcvr = p_ctr * p_cvr`` (ESMM eq. 1), a layer so the graph serialises cleanly."""

    def call(self, inputs):
        first, second = inputs
        return first * second


@register
class RatioHead(tf.keras.layers.Layer):
    """``p_cvr = p_ctcvr / p_ctr`` clipped to [0, 1], for models that predict CTR and CTCVR
    along the funnel (AITM); the calibrator loss keeps ``p_ctcvr <= p_ctr`` in training."""

    def call(self, inputs):
        ctcvr, ctr = inputs
        return tf.clip_by_value(tf.math.divide_no_nan(ctcvr, ctr), 0.0, 1.0)
