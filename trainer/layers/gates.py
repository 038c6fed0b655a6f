"""Softmax gates that mix expert outputs (MMoE eq. 5, PLE/CGC, MAN).

:class:`SoftmaxGate` mixes experts stacked batch-major (``[B, E, d]``, the per-expert form).
For fused experts (:class:`trainer.layers.experts.ExpertBank`, expert-major ``[E, B, d]``),
:func:`batched_gate_weights` computes several gates that read the same input with one matmul
and :func:`mix_expert_major` mixes expert groups without stacking them; the gates keep their
variables (``<task>/gate/logits/kernel``) in both forms.
"""
from __future__ import annotations

from typing import List, Sequence

import tensorflow as tf

from schemas.checks import check_positive_int, check_positive_number
from trainer.layers.common import build_sublayer, register


@register
class SoftmaxGate(tf.keras.layers.Layer):
    """``g(x) = softmax(W x / temperature)`` over ``num_experts``, then the weighted sum.

    Call with ``(gate_input, experts)`` where ``experts`` is ``[B, E, d]`` or a sequence of E
    ``[B, d]`` expert outputs; returns the mixture ``[B, d]``, ``sum_e g_e(x) * expert_e``;
    ``gate_weights(gate_input)`` gives the ``[B, E]`` softmax weights. Sub-layer: ``logits``
    (a bias-free Dense, as in MMoE eq. 6).

    The mixture is :func:`weighted_sum`, not an ``einsum("be,bed->bd")``: in a profile of the
    default MMoE's CPU train step the oneDNN einsums of its two gates (forward and gradient)
    took about a sixth of the step's op time for a few hundred thousand multiply-adds. With
    the experts passed as a sequence (what MMoE, OMoE, CGC/PLE and TAML do) nothing is stacked
    either: train step MMoE +21 %, PLE +16 % (``benchmarks/step_ab.py --change gates``,
    docs/benchmarks.md, issue 18 round 4).

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

    @property
    def kernel(self) -> tf.Variable:
        """The ``[F, E]`` logits kernel ``W`` (built)."""
        return self._logits.kernel

    def softmax(self, logits):
        """``softmax(logits / temperature)`` over the experts."""
        return tf.nn.softmax(logits / self.temperature, axis=-1)

    def gate_weights(self, gate_input):
        """``[B, E]`` softmax weights."""
        return self.softmax(self._logits(gate_input))

    def call(self, inputs):
        gate_input, experts = inputs
        if isinstance(experts, (list, tuple)):
            count = len(experts)
        else:
            experts = tf.convert_to_tensor(experts)
            count = experts.shape[1] if experts.shape.rank == 3 else -1
        if count != self.num_experts:
            shapes = ([tuple(tf.TensorShape(e.shape)) for e in experts]
                      if isinstance(experts, (list, tuple)) else tuple(experts.shape))
            raise ValueError(f"SoftmaxGate({self.name!r}) mixes num_experts={self.num_experts} "
                             f"experts given as [B, E, d] or a list of E [B, d] tensors, "
                             f"received: experts shape(s) {shapes}")
        return weighted_sum(self.gate_weights(gate_input), experts)

    def get_config(self):
        config = super().get_config()
        config.update({"num_experts": self.num_experts, "temperature": self.temperature})
        return config


def weighted_sum(weights, values):
    """``sum_e weights[:, e] * values_e`` (MMoE eq. 5's mixture): ``[B, E]`` weights mix
    ``[B, E, d]`` values (or a sequence of E ``[B, d]`` tensors, never stacked) into ``[B, d]``.

    The same as ``einsum("be,bed->bd", weights, values)`` up to float rounding, as a broadcast
    multiply and sum: oneDNN's einsum of that form (and the two of its gradient) cost a sixth of
    the default MMoE's CPU train step (docs/benchmarks.md, issue 18 round 4). Used by the gates
    and by MAN's and AITM's attention.
    """
    if isinstance(values, (list, tuple)):
        weights = tf.cast(weights, values[0].dtype)
        terms = [weights[:, e:e + 1] * h for e, h in enumerate(values)]
        return tf.add_n(terms) if len(terms) > 1 else terms[0]
    return tf.reduce_sum(tf.cast(weights, values.dtype)[:, :, tf.newaxis] * values, axis=1)


def batched_gate_weights(gates: Sequence[SoftmaxGate], gate_input) -> List[tf.Tensor]:
    """Each gate's ``[B, E_g]`` weights for ONE shared ``[B, F]`` input, with one matmul.

    ``gate_input @ [W_1 | W_2 | ...]`` then a split and each gate's tempered softmax: the same
    values as ``[g.gate_weights(gate_input) for g in gates]``.
    """
    gates = list(gates)
    if len(gates) == 1:
        return [gates[0].gate_weights(gate_input)]
    kernel = tf.concat([tf.convert_to_tensor(g.kernel) for g in gates], axis=1)
    logits = tf.split(tf.matmul(gate_input, kernel), [g.num_experts for g in gates], axis=-1)
    return [g.softmax(z) for g, z in zip(gates, logits)]


def mix_expert_major(weights, groups: Sequence[tf.Tensor]):
    """``sum_e weights[:, e] * experts[e]`` with the experts given as expert-major groups.

    Args:
      weights: ``[B, E]`` gate weights, ``E`` = the groups' experts in order.
      groups: ``[E_i, B, d]`` tensors (e.g. a task's own experts, then the shared ones);
        mixing them in parts avoids concatenating the experts.

    Returns:
      ``[B, d]``, equal to ``SoftmaxGate``'s mixture of the same experts.
    """
    sizes = [int(g.shape[0]) for g in groups]
    parts = tf.split(weights, sizes, axis=-1) if len(groups) > 1 else [weights]
    mixed = [tf.reduce_sum(tf.transpose(w)[:, :, tf.newaxis] * h, axis=0)
             for w, h in zip(parts, groups)]
    return tf.add_n(mixed) if len(mixed) > 1 else mixed[0]
