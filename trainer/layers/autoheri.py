"""AutoHERI: Automated Hierarchical Representation Integration (Wei et al., CIKM'21).

"AutoHERI: Automated Hierarchical Representation Integration for Post-Click Conversion Rate
Estimation", the AdaFTR paper's Table 4 baseline (its reference [36]). The original short paper
is not in ``/work/shared/papers``; this follows AdaFTR's description (Sec. 3.1.3: "automated
hierarchical representation integration between the individual networks [...] iteratively
learns the connection weights on each layer"; Table 1: ``O(2Ld + L^2)`` parameters, i.e. one
L-layer network per task plus ``L^2`` connection weights) and AutoHERI's known design: the CVR
network's every layer may take in any layer of the CTR network, the connections being found by
one-shot architecture search over a continuous (softmax) relaxation. What is kept and what is
simplified is listed in :class:`AutoHERI`'s docstring.
"""
from __future__ import annotations

from typing import Dict, Sequence

import tensorflow as tf

from schemas.checks import check_positive_int, check_rate, check_tasks, check_units
from trainer.layers.common import build_sublayer, register
from trainer.layers.mlp import MLP


@register
class HierarchicalIntegration(tf.keras.layers.Layer):
    """Softmax-relaxed connections from every layer of a source network into one target layer.

    ``out = h + sum_{j < J} w_j P_j(s_j)`` with ``w = softmax(alpha)`` over ``J + 1``
    candidates: the ``J`` source layers ``s_j`` and "none" (the last weight, a zero input), so
    the search can also switch the integration off. ``P_j`` is a bias-free linear projection to
    the target width (sub-layer ``from_j``), or the identity with ``projection=False`` (then
    every source must have the target's width). ``alpha`` (weight ``alpha``, ``[J + 1]``)
    starts at 0: every candidate weighs ``1 / (J + 1)``.

    Call with ``(h, [s_0, ..., s_{J-1}])``: ``h`` is ``[B, units]``, ``s_j`` is ``[B, d_j]``;
    returns ``[B, units]``. ``connection_weights()`` gives ``softmax(alpha)``.

    Args:
      units: Width of the target layer.
      num_sources: Number of source layers J.
      projection: Project each source with its own linear map (else identity).
    """

    def __init__(self, units: int, num_sources: int, projection: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        self.num_sources = check_positive_int("num_sources", num_sources)
        self.projection = bool(projection)

    def build(self, input_shape):
        _, sources = input_shape
        if len(sources) != self.num_sources:
            raise ValueError(f"HierarchicalIntegration expects {self.num_sources} source layers, "
                             f"received {len(sources)}")
        widths = [tf.TensorShape(s)[-1] for s in sources]
        if not self.projection and any(w != self.units for w in widths):
            raise ValueError(f"HierarchicalIntegration: projection=False needs every source of "
                             f"the target width {self.units}, received widths {widths}")
        self.alpha = self.add_weight(name="alpha", shape=(self.num_sources + 1,),
                                     initializer="zeros")
        self.projections = []
        if self.projection:
            self.projections = [tf.keras.layers.Dense(self.units, use_bias=False,
                                                      name=f"from_{j}")
                                for j in range(self.num_sources)]
            for dense, width in zip(self.projections, widths):
                build_sublayer(dense, tf.TensorShape([None, width]))
        super().build(input_shape)

    def connection_weights(self) -> tf.Tensor:
        """``[J + 1]`` softmax weights: one per source layer, then "none"."""
        return tf.nn.softmax(self.alpha)

    def call(self, inputs):
        h, sources = inputs
        w = tf.cast(self.connection_weights(), h.dtype)
        if self.projections:
            sources = [p(s) for p, s in zip(self.projections, sources)]
        return h + tf.einsum("j,jbd->bd", w[:-1], tf.stack(list(sources), axis=0))

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "num_sources": self.num_sources,
                       "projection": self.projection})
        return config


@register
class AutoHERI(tf.keras.layers.Layer):
    """One MLP per task; every layer of a task also integrates all layers of the task before it.

    Task ``k`` (``k > 0``) has layers ``h_k^l = act(W_k^l x_k^{l-1} + b_k^l)`` (sub-layers
    ``<task>/layer_l``) and after each one a :class:`HierarchicalIntegration`
    (``<task>/connection_l``): ``x_k^l = h_k^l + sum_j w_{k,l,j} P(x_{k-1}^j)`` over ALL ``L``
    layers ``j`` of the previous task's network (low- and high-level representations alike:
    the "hierarchical" integration), with softmax weights over those ``L`` sources and "none".
    The first task's network is a plain MLP; ``x_k^0``'s input is the features ``[B, F]``.
    For ``[ctr, cvr]`` this is AutoHERI's CTR -> CVR integration; with more tasks each one
    integrates its funnel predecessor (click -> view -> conversion). Output: dict task ->
    ``[B, units[-1]]``.

    This backbone OWNS its towers (the task networks): the model assembly adds only the logit.

    Architecture search: the continuous relaxation is implemented and trained jointly with the
    network (single-level, first-order, as one-shot methods commonly do): ``alpha`` is an
    ordinary weight updated by the training loss on each batch. Not implemented: DARTS'
    bi-level split (``alpha`` on held-out batches) and the discretisation of the searched
    connections followed by retraining; the relaxed network is the final model.
    :meth:`connection_weights` reports what the search learned.

    Projection: AutoHERI's ``L^2`` connection parameters imply equal-width layers joined
    without projections (``projection=False``, which then requires equal ``units``). With
    narrowing layers (``[64, 32, 16]`` as in AdaFTR's Ali-CCP setting) each connection needs a
    linear map to the target width; ``projection=True`` (default) adds one per connection.

    Defaults follow AdaFTR Table 3 (L = 3 layers, d = 128: [128, 64, 32]), as cross-stitch.

    Args:
      tasks: Task names in funnel order (``[ctr, cvr]``).
      units: Sizes of the layers of every task network.
      activation: Activation of every layer.
      dropout: Dropout after every layer (before integration), in [0, 1).
      projection: Project every source layer to the target width (see above).
    """

    def __init__(self, tasks: Sequence[str], units: Sequence[int] = (128, 64, 32),
                 activation: str = "relu", dropout: float = 0.0, projection: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.tasks = list(check_tasks("tasks", tasks))
        self.units = list(check_units("units", units))
        tf.keras.activations.get(activation)  # fails early on an unknown name
        self.activation = activation
        self.dropout = check_rate("dropout", dropout)
        self.projection = bool(projection)
        if not self.projection and len(set(self.units)) > 1:
            raise ValueError(f"`units` must all be equal with projection=False (identity "
                             f"connections), received: units={list(units)!r}")

    def build(self, input_shape):
        self.columns = {t: [MLP([u], activation=self.activation, dropout=self.dropout,
                                name=f"{t}/layer_{l}") for l, u in enumerate(self.units)]
                        for t in self.tasks}
        self.connections = {t: [HierarchicalIntegration(u, len(self.units), self.projection,
                                                        name=f"{t}/connection_{l}")
                                for l, u in enumerate(self.units)]
                            for t in self.tasks[1:]}
        sources = [tf.TensorShape([None, u]) for u in self.units]
        for t in self.tasks:
            shape = tf.TensorShape(input_shape)
            for l, layer in enumerate(self.columns[t]):
                build_sublayer(layer, shape)
                shape = layer.compute_output_shape(shape)
                if t in self.connections:
                    build_sublayer(self.connections[t][l], (shape, sources))
        super().build(input_shape)

    def connection_weights(self) -> Dict[str, tf.Tensor]:
        """Per integrating task, ``[L, L + 1]``: row ``l`` are target layer ``l``'s weights
        over the previous task's layers and "none"."""
        return {t: tf.stack([c.connection_weights() for c in cs]) for t, cs in
                self.connections.items()}

    def call(self, inputs, training=None):
        layers_of = {}
        for k, t in enumerate(self.tasks):
            x, outs = inputs, []
            for l, layer in enumerate(self.columns[t]):
                x = layer(x, training=training)
                if k > 0:
                    x = self.connections[t][l]((x, layers_of[self.tasks[k - 1]]))
                outs.append(x)
            layers_of[t] = outs
        return {t: layers_of[t][-1] for t in self.tasks}

    def get_config(self):
        config = super().get_config()
        config.update({"tasks": list(self.tasks), "units": list(self.units),
                       "activation": self.activation, "dropout": self.dropout,
                       "projection": self.projection})
        return config
