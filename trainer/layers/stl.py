"""Single-task backbones: DNN and MaskNet (Wang, She, Zhang, DLP-KDD'21).

Both return ``{task: [B, d]}`` like the multi-task backbones so the same model assembly adds
towers and heads after them. With several tasks every task gets its OWN network (true
single-task learning: nothing is shared above the embedding); one task is the typical use.
Defaults are FuxiCTR's default model configs, which PWiseR Sec. 4 uses for its STL runs.
"""
from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from schemas.checks import (
    check_choice,
    check_positive_int,
    check_positive_number,
    check_rate,
    check_tasks,
    check_units,
)
from trainer.layers.common import build_sublayer, register
from trainer.layers.mlp import MLP


@register
class DNN(tf.keras.layers.Layer):
    """Plain feed-forward network per task: ``h_t = MLP_t(x)``.

    Input ``[B, F]``; output dict task -> ``[B, units[-1]]``. Networks are named
    ``<task>/dnn``.

    Args:
      tasks: Task names (usually one).
      units: Hidden sizes (FuxiCTR DNN default [64, 64, 64]).
      dropout: Dropout after each layer, in [0, 1).
      use_batch_norm: Batch-normalise each layer.
    """

    def __init__(self, tasks: Sequence[str], units: Sequence[int] = (64, 64, 64),
                 dropout: float = 0.0, use_batch_norm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.tasks = list(check_tasks("tasks", tasks))
        self.units = list(check_units("units", units))
        self.dropout = check_rate("dropout", dropout)
        self.use_batch_norm = bool(use_batch_norm)

    def build(self, input_shape):
        self.networks = {t: MLP(self.units, dropout=self.dropout,
                                use_batch_norm=self.use_batch_norm, name=f"{t}/dnn")
                         for t in self.tasks}
        for net in self.networks.values():
            build_sublayer(net, input_shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        return {t: self.networks[t](inputs, training=training) for t in self.tasks}

    def get_config(self):
        config = super().get_config()
        config.update({"tasks": list(self.tasks), "units": list(self.units),
                       "dropout": self.dropout, "use_batch_norm": self.use_batch_norm})
        return config


@register
class MaskBlock(tf.keras.layers.Layer):
    """MaskBlock (MaskNet Sec. 3.3, eq. 3-4 and 9-11).

    Instance-guided mask from the embedding: ``V_mask = W_d2 ReLU(W_d1 V_emb + b_1) + b_2``
    (eq. 3-4; aggregation width ``round(reduction_ratio * dim(V_emb))``, projection width =
    width of ``V_in``), then ``V_out = ReLU(LN(W_i (V_mask * V_in)))`` (eq. 9-11; no bias
    since the layer norm re-centres). Call with ``(V_emb, V_in)``: for the first block ``V_in``
    is the layer-normalised embedding, for a serial block the previous block's output.
    Sub-layers: ``mask_aggregation``, ``mask_projection``, ``hidden``, ``layer_norm``.

    Args:
      units: Output width of the block.
      reduction_ratio: Aggregation width / embedding width (> 0).
      dropout: Dropout on the block output, in [0, 1).
    """

    def __init__(self, units: int, reduction_ratio: float = 1.0, dropout: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        self.reduction_ratio = check_positive_number("reduction_ratio", reduction_ratio)
        self.dropout = check_rate("dropout", dropout)

    def build(self, input_shape):
        emb_shape, in_shape = (tf.TensorShape(s) for s in input_shape)
        aggregation = max(1, int(round(self.reduction_ratio * emb_shape[-1])))
        self.mask_aggregation = tf.keras.layers.Dense(aggregation, activation="relu",
                                                      name="mask_aggregation")
        self.mask_projection = tf.keras.layers.Dense(in_shape[-1], name="mask_projection")
        self.hidden = tf.keras.layers.Dense(self.units, use_bias=False, name="hidden")
        self.layer_norm = tf.keras.layers.LayerNormalization(name="layer_norm")
        self._drop = tf.keras.layers.Dropout(self.dropout) if self.dropout > 0 else None
        build_sublayer(self.mask_aggregation, emb_shape)
        build_sublayer(self.mask_projection, emb_shape[:-1].concatenate([aggregation]))
        build_sublayer(self.hidden, in_shape)
        build_sublayer(self.layer_norm, in_shape[:-1].concatenate([self.units]))
        super().build(input_shape)

    def call(self, inputs, training=None):
        emb, v_in = inputs
        mask = self.mask_projection(self.mask_aggregation(emb))
        out = tf.nn.relu(self.layer_norm(self.hidden(mask * v_in)))
        if self._drop is not None:
            out = self._drop(out, training=training)
        return out

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "reduction_ratio": self.reduction_ratio,
                       "dropout": self.dropout})
        return config


@register
class MaskNet(tf.keras.layers.Layer):
    """MaskNet per task: serial or parallel MaskBlocks over the embedding (MaskNet Sec. 3.4).

    ``serial`` (SerMaskNet, Fig. 4): block 1 reads ``(V_emb, LN_EMB(V_emb))``, block i
    ``(V_emb, output of block i-1)``; the last output is returned. ``parallel`` (ParaMaskNet,
    Fig. 5): all blocks read ``(V_emb, LN_EMB(V_emb))`` and their outputs are concatenated. An
    optional MLP (``hidden_units``, the paper's feed-forward layers of ParaMaskNet) follows;
    by default none, since the model assembly adds a tower after every backbone.

    LN_EMB (eq. 8) normalises each field's embedding separately in the paper; this layer
    receives the already concatenated ``[B, F]`` (sparse embeddings and dense values), so it
    normalises the whole vector (``embedding_layer_norm=False`` feeds the raw embedding).

    Output: dict task -> ``[B, d]`` with ``d = block_units`` (serial),
    ``num_blocks * block_units`` (parallel) or ``hidden_units[-1]``. Sub-layers are named
    ``<task>/embedding_norm``, ``<task>/block_i`` and ``<task>/mlp``.

    Defaults: FuxiCTR's MaskNet default (SerialMaskNet, 3 blocks of 64, reduction ratio 1),
    used by PWiseR for its STL runs.

    Args:
      tasks: Task names (usually one).
      num_blocks: Number of MaskBlocks.
      block_units: Output width of every MaskBlock.
      reduction_ratio: Mask aggregation width / embedding width (> 0).
      mode: ``"serial"`` or ``"parallel"``.
      hidden_units: Optional MLP on top of the blocks; ``None`` for none.
      dropout: Dropout on block (and MLP) outputs, in [0, 1).
      embedding_layer_norm: Apply LN_EMB to the embedding fed to the first block(s).
    """

    MODES = ("serial", "parallel")

    def __init__(self, tasks: Sequence[str], num_blocks: int = 3, block_units: int = 64,
                 reduction_ratio: float = 1.0, mode: str = "serial",
                 hidden_units: Optional[Sequence[int]] = None, dropout: float = 0.0,
                 embedding_layer_norm: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.tasks = list(check_tasks("tasks", tasks))
        self.num_blocks = check_positive_int("num_blocks", num_blocks)
        self.block_units = check_positive_int("block_units", block_units)
        self.reduction_ratio = check_positive_number("reduction_ratio", reduction_ratio)
        self.mode = check_choice("mode", mode, self.MODES)
        self.hidden_units = (None if hidden_units is None
                             else list(check_units("hidden_units", hidden_units)))
        self.dropout = check_rate("dropout", dropout)
        self.embedding_layer_norm = bool(embedding_layer_norm)

    def build(self, input_shape):
        emb = tf.TensorShape(input_shape)
        block = tf.TensorShape([None, self.block_units])
        self.norms, self.blocks, self.mlps = {}, {}, {}
        for t in self.tasks:
            if self.embedding_layer_norm:
                self.norms[t] = tf.keras.layers.LayerNormalization(name=f"{t}/embedding_norm")
                build_sublayer(self.norms[t], emb)
            self.blocks[t] = [MaskBlock(self.block_units, self.reduction_ratio, self.dropout,
                                        name=f"{t}/block_{i}") for i in range(self.num_blocks)]
            for i, b in enumerate(self.blocks[t]):
                build_sublayer(b, (emb, block if self.mode == "serial" and i else emb))
            if self.hidden_units is not None:
                self.mlps[t] = MLP(self.hidden_units, dropout=self.dropout, name=f"{t}/mlp")
                width = self.block_units * (self.num_blocks if self.mode == "parallel" else 1)
                build_sublayer(self.mlps[t], tf.TensorShape([None, width]))
        super().build(input_shape)

    def call(self, inputs, training=None):
        out = {}
        for t in self.tasks:
            v_in = self.norms[t](inputs) if self.embedding_layer_norm else inputs
            if self.mode == "serial":
                h = v_in
                for b in self.blocks[t]:
                    h = b((inputs, h), training=training)
            else:
                h = tf.concat([b((inputs, v_in), training=training) for b in self.blocks[t]],
                              axis=-1)
            if self.hidden_units is not None:
                h = self.mlps[t](h, training=training)
            out[t] = h
        return out

    def get_config(self):
        config = super().get_config()
        config.update({"tasks": list(self.tasks), "num_blocks": self.num_blocks,
                       "block_units": self.block_units, "reduction_ratio": self.reduction_ratio,
                       "mode": self.mode,
                       "hidden_units": None if self.hidden_units is None
                       else list(self.hidden_units),
                       "dropout": self.dropout,
                       "embedding_layer_norm": self.embedding_layer_norm})
        return config
