"""DCN-v2 on TensorFlow Recommenders' cross layer (``tfrs.layers.dcn.Cross``).

Wang et al. (2021), "DCN V2: Improved Deep & Cross Network and Practical Lessons for
Web-scale Learning to Rank Systems". A cross layer (eq. 1) computes

    x_{l+1} = x_0 * (W_l x_l + b_l) + x_l

(``*`` element-wise), explicit feature crosses whose degree grows by one per layer; the
low-rank variant (eq. 2) factors ``W_l = U_l V_l^T`` with ``V_l`` of ``projection_dim``
columns. ``tfrs.layers.dcn.Cross`` implements both (plus ``diag_scale``, which adds
``diag_scale * x_l`` to ``W_l x_l``, tfrs' option for stability). The cross network is
combined with a deep network stacked (deep over the cross output) or in parallel (both over
the input, concatenated), Sec. 3 of the paper.

* :class:`Cross`: tfrs' layer with named projections, so variable names do not depend on how
  many unnamed layers the process created before (warm start and checkpoints match by name).
* :class:`CrossNetwork`: ``num_layers`` cross layers; ``[B, d] -> [B, d]``. Also the optional
  bottom of every multi-task backbone (``model.cross_layers``).
* :class:`DCN`: the multi-task backbone (``model.backbone: dcn``): cross + deep networks,
  shared by every task or one per task.
"""
from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf
import tensorflow_recommenders as tfrs

from schemas.checks import (check_bool, check_choice, check_nonneg_number, check_positive_int,
                            check_rate, check_tasks, check_units)
from trainer.layers.common import build_sublayer, register
from trainer.layers.mlp import MLP

STRUCTURES = ("stacked", "parallel")
SHARED = "shared"


@register
class Cross(tfrs.layers.dcn.Cross):
    """``tfrs.layers.dcn.Cross`` (DCN-v2 eq. 1, or eq. 2 with ``projection_dim``) whose
    projections are named ``w`` (full rank) or ``u`` and ``v`` (low rank) and built in their
    own name scopes (``<layer>/w/kernel``). Arguments as tfrs' ``Cross``; ``call(x0, x)``."""

    def build(self, input_shape):
        super().build(input_shape)
        dim = int(input_shape[-1])
        # tfrs creates its Dense layers unnamed ("dense_17"): name them before they build.
        if self._projection_dim is None:
            self._dense._name = "w"
            build_sublayer(self._dense, tf.TensorShape([None, dim]))
        else:
            self._dense_u._name = "u"
            self._dense_v._name = "v"
            build_sublayer(self._dense_u, tf.TensorShape([None, dim]))
            build_sublayer(self._dense_v, tf.TensorShape([None, self._projection_dim]))


@register
class CrossNetwork(tf.keras.layers.Layer):
    """``num_layers`` DCN-v2 cross layers over ``[B, d]`` (eq. 1): ``x_{l+1} = x_0 * (W_l x_l
    + b_l) + x_l``; the output has the input's width. Sub-layers ``cross_<l>``.

    Args:
      num_layers: Cross layers (the highest crossing degree is ``num_layers + 1``).
      projection_dim: ``None`` for full-rank ``W_l`` (``d x d``), else the rank of the
        low-rank ``U_l V_l^T`` (eq. 2).
      diag_scale: tfrs' ``diag_scale`` (>= 0): adds ``diag_scale * x_l`` to ``W_l x_l``.
      use_bias: Learn ``b_l``.
    """

    def __init__(self, num_layers: int = 3, projection_dim: Optional[int] = None,
                 diag_scale: float = 0.0, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.projection_dim = (None if projection_dim is None
                               else check_positive_int("projection_dim", projection_dim))
        self.diag_scale = check_nonneg_number("diag_scale", diag_scale)
        self.use_bias = check_bool("use_bias", use_bias)

    def build(self, input_shape):
        self.crosses = [Cross(projection_dim=self.projection_dim, diag_scale=self.diag_scale,
                              use_bias=self.use_bias, name=f"cross_{i}")
                        for i in range(self.num_layers)]
        for layer in self.crosses:
            build_sublayer(layer, input_shape)
        super().build(input_shape)

    def call(self, inputs):
        x = inputs
        for layer in self.crosses:
            x = layer(inputs, x)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"num_layers": self.num_layers, "projection_dim": self.projection_dim,
                       "diag_scale": self.diag_scale, "use_bias": self.use_bias})
        return config


@register
class DCN(tf.keras.layers.Layer):
    """DCN-v2 as a multi-task backbone: a cross network and a deep network (Sec. 3),
    ``structure`` ``stacked`` (``deep(cross(x))``) or ``parallel`` (``[cross(x), deep(x)]``
    concatenated), shared by every task (``shared/cross``, ``shared/deep``: every task gets the
    same representation, its tower makes it its own) or one pair per task (``<task>/cross``,
    ``<task>/deep``). Input ``[B, F]``; output a dict keyed by task name.

    Args:
      tasks: Task names.
      num_cross_layers: Cross layers of each cross network.
      projection_dim: Low-rank cross layers of this rank (eq. 2); ``None``: full rank.
      diag_scale: tfrs' ``diag_scale`` of the cross layers (>= 0).
      deep_units: Hidden sizes of each deep network; ``[]`` for the cross network alone.
      structure: ``stacked`` or ``parallel``.
      per_task: One cross and one deep network per task instead of shared ones.
      dropout: Dropout inside the deep networks, in [0, 1).
      use_batch_norm: Batch-normalise each deep layer.
    """

    def __init__(self, tasks: Sequence[str], num_cross_layers: int = 3,
                 projection_dim: Optional[int] = None, diag_scale: float = 0.0,
                 deep_units: Sequence[int] = (64, 32), structure: str = "stacked",
                 per_task: bool = False, dropout: float = 0.0, use_batch_norm: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.tasks = list(check_tasks("tasks", tasks, [SHARED]))
        self.num_cross_layers = check_positive_int("num_cross_layers", num_cross_layers)
        self.projection_dim = (None if projection_dim is None
                               else check_positive_int("projection_dim", projection_dim))
        self.diag_scale = check_nonneg_number("diag_scale", diag_scale)
        self.deep_units = list(check_units("deep_units", deep_units, allow_empty=True))
        self.structure = check_choice("structure", structure, STRUCTURES)
        self.per_task = check_bool("per_task", per_task)
        self.dropout = check_rate("dropout", dropout)
        self.use_batch_norm = check_bool("use_batch_norm", use_batch_norm)

    @property
    def owners(self):
        """``shared``, or every task with ``per_task``."""
        return list(self.tasks) if self.per_task else [SHARED]

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        self.cross = {}
        self.deep = {}
        for owner in self.owners:
            self.cross[owner] = CrossNetwork(self.num_cross_layers, self.projection_dim,
                                             self.diag_scale, name=f"{owner}/cross")
            build_sublayer(self.cross[owner], shape)
            if self.deep_units:
                self.deep[owner] = MLP(self.deep_units, dropout=self.dropout,
                                       use_batch_norm=self.use_batch_norm,
                                       name=f"{owner}/deep")
                build_sublayer(self.deep[owner], shape)  # same input width either way
        super().build(input_shape)

    def _represent(self, owner: str, x, training):
        crossed = self.cross[owner](x)
        if not self.deep_units:
            return crossed
        if self.structure == "stacked":
            return self.deep[owner](crossed, training=training)
        return tf.concat([crossed, self.deep[owner](x, training=training)], axis=-1)

    def call(self, inputs, training=None):
        if self.per_task:
            return {t: self._represent(t, inputs, training) for t in self.tasks}
        h = self._represent(SHARED, inputs, training)
        return {t: tf.identity(h) for t in self.tasks}

    def get_config(self):
        config = super().get_config()
        config.update({"tasks": list(self.tasks), "num_cross_layers": self.num_cross_layers,
                       "projection_dim": self.projection_dim, "diag_scale": self.diag_scale,
                       "deep_units": list(self.deep_units), "structure": self.structure,
                       "per_task": self.per_task, "dropout": self.dropout,
                       "use_batch_norm": self.use_batch_norm})
        return config
