"""Embedding of transformed sparse ids plus pass-through of scaled dense features."""
from __future__ import annotations

from typing import Dict, Mapping, Sequence

import tensorflow as tf

from schemas.checks import check_positive_int
from trainer.layers.common import build_sublayer, register


@register
class FeatureEmbedding(tf.keras.layers.Layer):
    """Concatenates one embedding per sparse feature with the dense features.

    Input: dict feature name -> ``[B]`` or ``[B, 1]`` tensor (int ids for sparse features,
    floats for dense ones). Output: ``[B, len(sparse) * embedding_dim + len(dense)]``.
    Out-of-range ids (negative, e.g. tf.Transform's ``default_value=-1``, or at/above the
    feature's vocabulary size, which must include the OOV buckets) are mapped into the LAST
    bucket, the OOV bucket, in eager and graph mode alike; they never raise: after tf.Transform
    no such id should exist, and a stray one must not crash a serving request nor alias a real
    vocabulary entry (clipping negatives to 0 would give them the most frequent token's row).
    Embedding tables are named ``embedding/<feature>``.

    Args:
      sparse_vocab_sizes: Feature name -> vocabulary size including OOV buckets.
      dense_keys: Names of dense features, in order.
      embedding_dim: Width of every embedding table.
      embeddings_regularizer_l2: L2 penalty on looked-up rows' tables (0 disables).
    """

    def __init__(self, sparse_vocab_sizes: Mapping[str, int], dense_keys: Sequence[str] = (),
                 embedding_dim: int = 8, embeddings_regularizer_l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(sparse_vocab_sizes, Mapping):
            raise ValueError("`sparse_vocab_sizes` must map feature name -> vocabulary size, "
                             f"received: sparse_vocab_sizes={sparse_vocab_sizes!r}")
        for name, size in sparse_vocab_sizes.items():
            check_positive_int(f"sparse_vocab_sizes[{name!r}]", size)
        if not sparse_vocab_sizes and not dense_keys:
            raise ValueError("FeatureEmbedding needs at least one sparse or dense feature, "
                             f"received: sparse_vocab_sizes={sparse_vocab_sizes!r}, "
                             f"dense_keys={dense_keys!r}")
        self.sparse_vocab_sizes: Dict[str, int] = dict(sparse_vocab_sizes)
        self.dense_keys = list(dense_keys)
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        if not isinstance(embeddings_regularizer_l2, (int, float)) or embeddings_regularizer_l2 < 0:
            raise ValueError("`embeddings_regularizer_l2` must be >= 0, received: "
                             f"embeddings_regularizer_l2={embeddings_regularizer_l2!r}")
        self.embeddings_regularizer_l2 = float(embeddings_regularizer_l2)

    def build(self, input_shape):
        reg = (tf.keras.regularizers.l2(self.embeddings_regularizer_l2)
               if self.embeddings_regularizer_l2 > 0 else None)
        self.tables = {
            name: tf.keras.layers.Embedding(size, self.embedding_dim,
                                            embeddings_regularizer=reg,
                                            name=f"embedding/{name}")
            for name, size in self.sparse_vocab_sizes.items()}
        for table in self.tables.values():
            build_sublayer(table, tf.TensorShape([None]))
        super().build(input_shape)

    def call(self, inputs: Mapping[str, tf.Tensor]):
        missing = [k for k in list(self.sparse_vocab_sizes) + self.dense_keys if k not in inputs]
        if missing:
            raise KeyError(f"FeatureEmbedding: inputs lack feature(s) {missing}; "
                           f"got {sorted(inputs)}")
        parts = []
        for name, size in self.sparse_vocab_sizes.items():
            ids = tf.reshape(tf.cast(inputs[name], tf.int64), [-1])
            ids = tf.where((ids < 0) | (ids >= size), tf.constant(size - 1, tf.int64), ids)
            parts.append(self.tables[name](ids))
        for name in self.dense_keys:
            parts.append(tf.reshape(tf.cast(inputs[name], self.compute_dtype), [-1, 1]))
        return tf.concat(parts, axis=-1)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(
            [None, len(self.sparse_vocab_sizes) * self.embedding_dim + len(self.dense_keys)])

    def get_config(self):
        config = super().get_config()
        config.update({"sparse_vocab_sizes": dict(self.sparse_vocab_sizes),
                       "dense_keys": list(self.dense_keys), "embedding_dim": self.embedding_dim,
                       "embeddings_regularizer_l2": self.embeddings_regularizer_l2})
        return config
