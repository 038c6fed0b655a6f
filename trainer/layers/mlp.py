"""Multi-layer perceptron used for experts, bottoms and towers."""
from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from schemas.checks import check_rate, check_units
from trainer.layers.common import build_sublayer, register


@register
class MLP(tf.keras.layers.Layer):
    """Stack of Dense layers with optional batch norm and dropout after each hidden layer.

    Args:
      units: Output sizes of the Dense layers, e.g. ``[64, 32]``.
      activation: Activation of every layer (the last one too; towers add their own logit).
      dropout: Dropout rate after each layer, in [0, 1).
      use_batch_norm: Batch-normalise each layer's pre-activation output.
      kernel_initializer: Initializer of the Dense kernels (serialised).
      return_hidden: Return ``[output, h_0, ..., h_{L-1}]`` instead of ``output``, where
        ``h_i`` is layer i's activation (before dropout). AdaFTR contrasts the first tower
        layer's ``h_0`` (AdaFTR Sec. 3.1.4); computing it here costs nothing extra.
    """

    def __init__(self, units: Sequence[int], activation: str = "relu", dropout: float = 0.0,
                 use_batch_norm: bool = False, kernel_initializer="glorot_uniform",
                 return_hidden: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.units = list(check_units("units", units))
        self.activation = activation
        tf.keras.activations.get(activation)  # fails early on an unknown name
        self.dropout = check_rate("dropout", dropout)
        self.use_batch_norm = bool(use_batch_norm)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.return_hidden = bool(return_hidden)

    def build(self, input_shape):
        # A fresh initializer per Dense: one shared unseeded instance returns the SAME values on
        # every call, so equal-shaped layers (e.g. units [64, 64, 64]) started identical.
        init = tf.keras.initializers.serialize(self.kernel_initializer)
        self._dense = [tf.keras.layers.Dense(
            u, activation=None if self.use_batch_norm else self.activation,
            kernel_initializer=tf.keras.initializers.get(init), name=f"dense_{i}")
            for i, u in enumerate(self.units)]
        self._norms = [tf.keras.layers.BatchNormalization(name=f"bn_{i}")
                       for i in range(len(self.units))] if self.use_batch_norm else []
        self._act = tf.keras.layers.Activation(self.activation)
        self._drop = tf.keras.layers.Dropout(self.dropout) if self.dropout > 0 else None
        shape = tf.TensorShape(input_shape)
        for i, dense in enumerate(self._dense):
            build_sublayer(dense, shape)
            shape = dense.compute_output_shape(shape)
            if self._norms:
                build_sublayer(self._norms[i], shape)
        super().build(input_shape)

    def call(self, inputs, training: Optional[bool] = None):
        x = inputs
        hidden = []
        for i, dense in enumerate(self._dense):
            x = dense(x)
            if self._norms:
                x = self._act(self._norms[i](x, training=training))
            hidden.append(x)
            if self._drop is not None:
                x = self._drop(x, training=training)
        return [x] + hidden if self.return_hidden else x

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape)[:-1]
        if self.return_hidden:
            return [shape.concatenate([self.units[-1]])] + [shape.concatenate([u])
                                                            for u in self.units]
        return shape.concatenate([self.units[-1]])

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": list(self.units), "activation": self.activation, "dropout": self.dropout,
            "use_batch_norm": self.use_batch_norm,
            "kernel_initializer": tf.keras.initializers.serialize(self.kernel_initializer),
            "return_hidden": self.return_hidden,
        })
        return config
