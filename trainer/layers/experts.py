"""Fused experts: a group of same-shaped MLP experts computed as batched matmuls.

The per-expert form of the mixture-of-experts backbones (MMoE, OMoE, CGC/PLE, MAN) runs one
:class:`~trainer.layers.mlp.MLP` per expert: ``E x L`` small matmuls per expert group. An
:class:`ExpertBank` holds the same ``E`` experts as stacked kernels ``[E, in, out]`` and runs
each layer as ONE batched matmul for all of them (``L`` ops per group), which matters where
every op is a kernel launch (GPU). The maths is the per-expert form's exactly:
``h_e^(l+1) = act(h_e^(l) W_e^(l) + b_e^(l))`` for every expert ``e``.

Layout: experts are *expert-major*, ``[E, B, d]``. ``tf.matmul`` then batches over the leading
axis without transposes (the first layer broadcasts the shared ``[B, F]`` input over the
experts), and the gates mix by a weighted sum over that axis
(:func:`trainer.layers.gates.mix_expert_major`).

:func:`copy_expert_weights` converts weights between the per-expert and the fused form of the
same backbone (``<group>/expert_i/dense_j/*`` <-> row ``i`` of ``<group>/experts/dense_j/*``),
e.g. to load a checkpoint of one form into the other.
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from schemas.checks import check_positive_int, check_rate, check_units
from trainer.layers.common import register

_FUSED = re.compile(r"^(?P<group>.*)/experts/dense_(?P<layer>\d+)/(?P<kind>kernel|bias)$")
_PER_EXPERT = re.compile(
    r"^(?P<group>.*)/expert_(?P<index>\d+)/dense_(?P<layer>\d+)/(?P<kind>kernel|bias)$")


class _StackedInitializer:
    """Initialises ``[E, in, out]`` as ``E`` independent draws of ``initializer([in, out])``.

    Calling the initializer on the stacked shape would be wrong for fan-based initializers
    (Glorot, He): Keras counts the leading axis as a receptive field and shrinks the scale by
    ``sqrt(E)``. A fresh instance per expert, as ``MLP`` does per Dense: an unseeded instance
    returns the same values on every call, which would start all experts identical.
    """

    def __init__(self, serialized, num: int):
        self.serialized, self.num = serialized, num

    def __call__(self, shape, dtype=None, **kwargs):
        return tf.stack([tf.keras.initializers.get(self.serialized)(shape[1:], dtype=dtype)
                         for _ in range(self.num)])


@register
class ExpertBank(tf.keras.layers.Layer):
    """``num_experts`` MLP experts of equal widths, one batched matmul per layer.

    Equal to ``num_experts`` independent ``MLP(units, activation, dropout)`` (no batch norm):
    activation after every layer, the last one too, dropout after each layer in training.

    Input: ``[B, F]`` read by every expert, or ``[E, B, F]`` (one input per expert). Output:
    ``[E, B, units[-1]]`` (expert-major; see the module docstring). Variables
    ``dense_j/kernel`` ``[E, in_j, units[j]]`` and ``dense_j/bias`` ``[E, units[j]]``: row
    ``i`` is expert ``i``'s ``dense_j`` of the per-expert form.

    Args:
      num_experts: Number of experts E.
      units: Output sizes of each expert's layers, e.g. ``[64, 32]``.
      activation: Activation after every layer.
      dropout: Dropout rate after each layer, in [0, 1).
      kernel_initializer: Initializer of each expert's kernels (drawn per expert, as for a
        Dense of shape ``[in, out]``).
    """

    def __init__(self, num_experts: int, units: Sequence[int], activation: str = "relu",
                 dropout: float = 0.0, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.num_experts = check_positive_int("num_experts", num_experts)
        self.units = list(check_units("units", units))
        self.activation = activation
        self._act = tf.keras.activations.get(activation)  # fails early on an unknown name
        self.dropout = check_rate("dropout", dropout)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        if shape.rank not in (2, 3) or (shape.rank == 3 and shape[0] != self.num_experts):
            raise ValueError(f"{type(self).__name__} {self.name!r}: expected input [B, F] or "
                             f"[{self.num_experts}, B, F], received shape {shape}")
        init = tf.keras.initializers.serialize(self.kernel_initializer)
        widths = [int(shape[-1])] + self.units
        self.kernels, self.biases = [], []
        for j, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            with tf.name_scope(f"dense_{j}"):
                self.kernels.append(self.add_weight(
                    "kernel", shape=(self.num_experts, n_in, n_out),
                    initializer=_StackedInitializer(init, self.num_experts)))
                self.biases.append(self.add_weight(
                    "bias", shape=(self.num_experts, n_out), initializer="zeros"))
        self._drop = tf.keras.layers.Dropout(self.dropout) if self.dropout > 0 else None
        super().build(input_shape)

    def call(self, inputs, training: Optional[bool] = None):
        h = inputs
        if h.shape.rank == 2:
            h = h[tf.newaxis]  # [1, B, F]: matmul broadcasts it over the experts
        for kernel, bias in zip(self.kernels, self.biases):
            h = self._act(tf.matmul(h, kernel) + bias[:, tf.newaxis, :])
            if self._drop is not None:
                h = self._drop(h, training=training)
        return h

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape)
        return tf.TensorShape([self.num_experts, shape[-2], self.units[-1]])

    def get_config(self):
        config = super().get_config()
        config.update({"num_experts": self.num_experts, "units": list(self.units),
                       "activation": self.activation, "dropout": self.dropout,
                       "kernel_initializer":
                           tf.keras.initializers.serialize(self.kernel_initializer)})
        return config


def _name(variable) -> str:
    name = variable.name
    return name[:-2] if name.endswith(":0") else name


def copy_expert_weights(source: tf.keras.layers.Layer, target: tf.keras.layers.Layer) -> None:
    """Assigns ``target`` the weights of ``source``, the same backbone in the other form.

    Works for any layer or model whose experts are named as the backbones name them
    (``<group>/expert_i/dense_j/{kernel,bias}`` per expert, ``<group>/experts/dense_j/...``
    fused) and whose other variables have equal names in both (build both with the same layer
    names). Per-expert -> fused stacks row ``i`` from ``expert_i``; fused -> per-expert takes
    row ``i``; every other variable is copied by name. Both must be built.

    Raises:
      ValueError: A target variable has no counterpart in ``source`` (different structure).
    """
    values: Dict[str, np.ndarray] = {_name(v): v.numpy() for v in source.weights}
    for var in target.weights:
        name = _name(var)
        fused, single = _FUSED.match(name), _PER_EXPERT.match(name)
        if name in values:
            value = values[name]
        elif fused:
            group, layer, kind = fused["group"], fused["layer"], fused["kind"]
            rows = []
            while f"{group}/expert_{len(rows)}/dense_{layer}/{kind}" in values:
                rows.append(values[f"{group}/expert_{len(rows)}/dense_{layer}/{kind}"])
            value = np.stack(rows) if rows else None
        elif single:
            stacked = values.get(f"{single['group']}/experts/dense_{single['layer']}/"
                                 f"{single['kind']}")
            index = int(single["index"])
            value = stacked[index] if stacked is not None and index < len(stacked) else None
        else:
            value = None
        if value is None or tuple(value.shape) != tuple(var.shape):
            raise ValueError(f"copy_expert_weights: no counterpart of {name!r} "
                             f"{tuple(var.shape)} in {source.name!r}; its variables are "
                             f"{sorted(values)}")
        var.assign(value)
