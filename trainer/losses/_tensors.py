"""Tensor helpers shared by the loss modules (argument checks live in ``schemas.checks``)."""
from __future__ import annotations

import tensorflow as tf


def compute_dtype(x: tf.Tensor) -> tf.DType:
    """float64 stays float64; every other dtype (ints, float16, bfloat16) computes in float32."""
    return tf.float64 if x.dtype == tf.float64 else tf.float32


def as_binary(x) -> tf.Tensor:
    """Labels in {0, 1} of any numeric/bool dtype -> bool (``x > 0.5``), flattened to ``[B]``."""
    x = tf.convert_to_tensor(x)
    if x.dtype == tf.bool:
        return tf.reshape(x, [-1])
    return tf.reshape(tf.cast(x, tf.float32) > 0.5, [-1])


def safe_mean(x) -> tf.Tensor:
    """Mean of every element of ``x``; 0 (value and gradient) when ``x`` is empty.

    ``tf.reduce_mean`` of an empty tensor is NaN (0 / 0), which is what a replica that gets no
    rows of a final, small global batch would otherwise report and back-propagate.
    """
    x = tf.convert_to_tensor(x)
    return tf.math.divide_no_nan(tf.reduce_sum(x), tf.cast(tf.size(x), x.dtype))
