"""AdaFTR's training-only layers: the relatedness network and a learnable temperature.

Lin et al., "Modeling Adaptive Fine-grained Task Relatedness for Joint CTR-CVR Estimation",
KDD'23 (/work/shared/papers/adaftr_adaptive_task_relatedness.md), Sec. 2.3 and Table 5. Neither
layer is part of the exported inference network.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import tensorflow as tf

from schemas.checks import check_units
from trainer.layers.common import build_sublayer, register
from trainer.layers.mlp import MLP


def _check_bounds(lower, upper):
    for name, value in (("tau_lower", lower), ("tau_upper", upper)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"`{name}` must be a positive number, received: {name}={value!r}")
    if not lower < upper:
        raise ValueError(f"`tau_lower` must be below `tau_upper`, received: "
                         f"tau_lower={lower!r}, tau_upper={upper!r}")
    return float(lower), float(upper)


@register
class RelatednessNet(tf.keras.layers.Layer):
    """Predicted relatedness of two tasks' representations (AdaFTR eq. 8-9).

    Call with ``(v_a, v_b)``, both ``[B, d]`` (the backbone's task mixtures ``v^ctr``,
    ``v^cvr`` of eq. 3); returns ``y_rel_hat = sigmoid(MLP(v_a * v_b))`` of shape ``[B]``.
    ``temperature(y_rel_hat)`` maps it to ``tau_r = (tau_upper - tau_lower)(1 - y_rel_hat) +
    tau_lower`` (eq. 12): more related rows get a smaller (stricter) temperature.

    Sub-layers: ``mlp`` (ReLU hidden layers) and ``logit``. With ``stop_input_gradient`` (the
    default, Algorithm 1: the relatedness parameters Omega learn from L_rel alone and L_rel
    does not update the task parameters Theta) the inputs enter through ``tf.stop_gradient``.

    Args:
      units: Hidden sizes of the MLP (the paper does not give them).
      tau_lower: Lower bound tau^L of the temperature (Table 3: 0.05).
      tau_upper: Upper bound tau^U (Table 3: 1).
      stop_input_gradient: Keep L_rel's gradient out of the backbone.
    """

    def __init__(self, units: Sequence[int] = (32,), tau_lower: float = 0.05,
                 tau_upper: float = 1.0, stop_input_gradient: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.units = list(check_units("units", units))
        self.tau_lower, self.tau_upper = _check_bounds(tau_lower, tau_upper)
        self.stop_input_gradient = bool(stop_input_gradient)

    def build(self, input_shape):
        a_shape, b_shape = (tf.TensorShape(s) for s in input_shape)
        if a_shape[-1] != b_shape[-1]:
            raise ValueError("RelatednessNet: both task representations must have the same "
                             f"width, received {a_shape} and {b_shape}")
        self.mlp = MLP(self.units, name="mlp")
        self.logit = tf.keras.layers.Dense(1, name="logit")
        build_sublayer(self.mlp, a_shape)
        build_sublayer(self.logit, a_shape[:-1].concatenate([self.units[-1]]))
        super().build(input_shape)

    def call(self, inputs, training: Optional[bool] = None):
        v_a, v_b = inputs
        v_rel = v_a * v_b  # eq. 8
        if self.stop_input_gradient:
            v_rel = tf.stop_gradient(v_rel)
        logit = self.logit(self.mlp(v_rel, training=training))
        return tf.reshape(tf.sigmoid(logit), [-1])  # eq. 9

    def temperature(self, relatedness):
        """``tau_r = (tau_upper - tau_lower)(1 - y_rel_hat) + tau_lower`` (eq. 12)."""
        return (self.tau_upper - self.tau_lower) * (1.0 - relatedness) + self.tau_lower

    def get_config(self):
        config = super().get_config()
        config.update({"units": list(self.units), "tau_lower": self.tau_lower,
                       "tau_upper": self.tau_upper,
                       "stop_input_gradient": self.stop_input_gradient})
        return config


@register
class LearnableTemperature(tf.keras.layers.Layer):
    """One learned temperature for every instance (AdaFTR Table 5, "w/o adaptive tau").

    ``tau = tau_lower + (tau_upper - tau_lower) * sigmoid(w)``, so it stays inside the same
    range as the adaptive temperature; ``w`` (named ``tau_logit``) starts where
    ``tau = initial``. Called with any tensor, returns the scalar tau (the input only anchors
    the layer in a graph).

    Args:
      initial: Starting temperature, strictly between the bounds.
      tau_lower: Lower bound (Table 3: 0.05).
      tau_upper: Upper bound (Table 3: 1).
    """

    def __init__(self, initial: float = 0.5, tau_lower: float = 0.05, tau_upper: float = 1.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.tau_lower, self.tau_upper = _check_bounds(tau_lower, tau_upper)
        if isinstance(initial, bool) or not isinstance(initial, (int, float)) or \
                not self.tau_lower < initial < self.tau_upper:
            raise ValueError(f"`initial` must lie strictly between tau_lower and tau_upper, "
                             f"received: initial={initial!r}")
        self.initial = float(initial)

    def build(self, input_shape):
        fraction = (self.initial - self.tau_lower) / (self.tau_upper - self.tau_lower)
        start = math.log(fraction / (1.0 - fraction))
        self.tau_logit = self.add_weight(
            name="tau_logit", shape=(), initializer=tf.keras.initializers.Constant(start),
            trainable=True)
        super().build(input_shape)

    def call(self, inputs):
        return self.tau_lower + (self.tau_upper - self.tau_lower) * tf.sigmoid(self.tau_logit)

    def get_config(self):
        config = super().get_config()
        config.update({"initial": self.initial, "tau_lower": self.tau_lower,
                       "tau_upper": self.tau_upper})
        return config
