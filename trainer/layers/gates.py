"""Softmax gates that mix expert outputs (MMoE eq. 5, PLE/CGC, MAN)."""
from __future__ import annotations

import tensorflow as tf

from schemas.checks import check_positive_int, check_positive_number
from trainer.layers.common import build_sublayer, register


@register
class SoftmaxGate(tf.keras.layers.Layer):
    """``g(x) = softmax(W x / temperature)`` over ``num_experts``, then the weighted sum.

    Call with ``(gate_input, experts)`` where ``experts`` is ``[B, E, d]``; returns the mixture
    ``[B, d]``; ``gate_weights(gate_input)`` gives the ``[B, E]`` softmax weights. Sub-layer:
    ``logits`` (a bias-free Dense, as in MMoE eq. 6).

    Args:
      num_experts: Number of experts E the gate mixes.
      temperature: Softmax temperature (> 0); 1 is the plain softmax of the MMoE paper.
    """

    def __init__(self, num_experts: int, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.num_experts = check_positive_int("num_experts", num_experts)
        self.temperature = check_positive_number("temperature", temperature)

    def build(self, input_shape):
        gate_shape, _ = input_shape
        self._logits = tf.keras.layers.Dense(self.num_experts, use_bias=False, name="logits")
        build_sublayer(self._logits, gate_shape)
        super().build(input_shape)

    def gate_weights(self, gate_input):
        """``[B, E]`` softmax weights."""
        return tf.nn.softmax(self._logits(gate_input) / self.temperature, axis=-1)

    def call(self, inputs):
        gate_input, experts = inputs
        weights = self.gate_weights(gate_input)
        return tf.einsum("be,bed->bd", weights, experts)

    def get_config(self):
        config = super().get_config()
        config.update({"num_experts": self.num_experts, "temperature": self.temperature})
        return config
