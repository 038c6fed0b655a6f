"""Argument checks shared by the loss modules (messages show the received value)."""
from __future__ import annotations

import math

import tensorflow as tf


def check_nonneg_float(name: str, value) -> float:
    """A finite number >= 0 (bools rejected), returned as ``float``."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value < 0):
        raise ValueError(f"`{name}` must be a finite number >= 0, received: {name}={value!r}")
    return float(value)


def check_unit_float(name: str, value) -> float:
    """A number in [0, 1] (bools rejected), returned as ``float``."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or not 0.0 <= value <= 1.0):
        raise ValueError(f"`{name}` must be a number in [0, 1], received: {name}={value!r}")
    return float(value)


def check_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {sorted(choices)}, received: {name}={value!r}")
    return value


def compute_dtype(x: tf.Tensor) -> tf.DType:
    """float64 stays float64; every other dtype (ints, float16, bfloat16) computes in float32."""
    return tf.float64 if x.dtype == tf.float64 else tf.float32


def as_binary(x) -> tf.Tensor:
    """Labels in {0, 1} of any numeric/bool dtype -> bool (``x > 0.5``), flattened to ``[B]``."""
    x = tf.convert_to_tensor(x)
    if x.dtype == tf.bool:
        return tf.reshape(x, [-1])
    return tf.reshape(tf.cast(x, tf.float32) > 0.5, [-1])
