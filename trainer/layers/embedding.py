"""Embedding of transformed sparse ids plus pass-through of scaled dense features."""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import tensorflow as tf

from schemas.checks import check_bool, check_nonneg_number, check_positive_int, check_rate
from trainer.layers.common import build_sublayer, register

FUSED_TABLE = "fused"


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

    Tables: one per feature, ``embedding/<feature>``, or with ``fused_tables=True`` ONE table
    ``embedding/fused`` of ``sum(vocab sizes)`` rows where feature ``f``'s row ``i`` is row
    ``row_offsets[f] + i`` (features in ``sparse_vocab_sizes`` order): one gather per batch
    instead of one lookup per feature, same outputs for the same rows.

    Regularisation (each term is added to the layer's losses; both may be on):

    * ``embeddings_regularizer_l2`` (``l2_t``): ``l2_t * sum of every squared entry of every
      table``, the whole table on every step whatever the batch holds.
    * ``l2_batch_rows`` (``l2_b``): L2 on the rows the batch looked up only,
      ``l2_b * sum_f (1/B) sum_b ||e_f(x_b)||^2`` (for each sparse feature f, the mean over the
      batch's B rows of the squared norm of the embedding looked up, summed over features; an
      id present k times counts k times, OOV rows too). Why this form: it is a per-example
      term averaged over the batch like the losses it is added to, so its weight means the same
      at any batch size and replica count (per replica it is the replica's mean; the training
      step averages replicas); its expectation is ``l2_b * sum_j p_j ||w_j||^2`` with ``p_j``
      the frequency of id ``j``, so ids are shrunk in proportion to how often they are seen and
      ids absent from the batch get no gradient from it; and it costs the batch's rows, not the
      tables. The whole-table form instead gives every row a gradient on every step, which Adam
      normalises to a full-size step towards 0 for rows that get no other gradient (rare ids).

    Dropout (training only; identity at inference; the dense features are never dropped):

    * ``dropout``: standard (inverted) dropout on every entry of the embedding vectors.
    * ``feature_dropout``: drops a sparse feature's WHOLE embedding vector per example (a
      missing-feature augmentation), keeping the others scaled by ``1 / (1 - rate)``.

    Args:
      sparse_vocab_sizes: Feature name -> vocabulary size including OOV buckets.
      dense_keys: Names of dense features, in order.
      embedding_dim: Width of every embedding table.
      embeddings_regularizer_l2: L2 penalty on the whole tables (0 disables).
      l2_batch_rows: L2 penalty on the looked-up rows (formula above; 0 disables).
      dropout: Dropout rate on embedding entries, in [0, 1).
      feature_dropout: Rate at which a feature's whole embedding is dropped, in [0, 1).
      fused_tables: One table with per-feature row offsets instead of one per feature.
    """

    def __init__(self, sparse_vocab_sizes: Mapping[str, int], dense_keys: Sequence[str] = (),
                 embedding_dim: int = 8, embeddings_regularizer_l2: float = 0.0,
                 l2_batch_rows: float = 0.0, dropout: float = 0.0, feature_dropout: float = 0.0,
                 fused_tables: bool = False, **kwargs):
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
        self.embeddings_regularizer_l2 = check_nonneg_number("embeddings_regularizer_l2",
                                                             embeddings_regularizer_l2)
        self.l2_batch_rows = check_nonneg_number("l2_batch_rows", l2_batch_rows)
        self.dropout = check_rate("dropout", dropout)
        self.feature_dropout = check_rate("feature_dropout", feature_dropout)
        self.fused_tables = check_bool("fused_tables", fused_tables)
        self.row_offsets: Dict[str, int] = {}
        offset = 0
        for name, size in self.sparse_vocab_sizes.items():
            self.row_offsets[name] = offset
            offset += size

    def build(self, input_shape):
        reg = (tf.keras.regularizers.l2(self.embeddings_regularizer_l2)
               if self.embeddings_regularizer_l2 > 0 else None)
        if self.fused_tables:
            rows = sum(self.sparse_vocab_sizes.values())
            self.tables = {FUSED_TABLE: tf.keras.layers.Embedding(
                rows, self.embedding_dim, embeddings_regularizer=reg,
                name=f"embedding/{FUSED_TABLE}")} if rows else {}
        else:
            self.tables = {
                name: tf.keras.layers.Embedding(size, self.embedding_dim,
                                                embeddings_regularizer=reg,
                                                name=f"embedding/{name}")
                for name, size in self.sparse_vocab_sizes.items()}
        for table in self.tables.values():
            build_sublayer(table, tf.TensorShape([None]))
        num_sparse = len(self.sparse_vocab_sizes)
        self._dropout = tf.keras.layers.Dropout(self.dropout) if self.dropout > 0 else None
        self._feature_dropout = (tf.keras.layers.Dropout(
            self.feature_dropout, noise_shape=(None, num_sparse, 1))
            if self.feature_dropout > 0 else None)
        super().build(input_shape)

    def _lookup(self, inputs) -> List[tf.Tensor]:
        """The sparse features' rows in ``sparse_vocab_sizes`` order, as ``[B, d]`` pieces
        (one per feature) or one ``[B, F * d]`` (fused)."""
        names, sizes = list(self.sparse_vocab_sizes), list(self.sparse_vocab_sizes.values())
        ids = [tf.reshape(tf.cast(inputs[name], tf.int64), [-1]) for name in names]
        if not self.fused_tables:
            parts = []
            for name, size, column in zip(names, sizes, ids):
                column = tf.where((column < 0) | (column >= size),
                                  tf.constant(size - 1, tf.int64), column)
                parts.append(self.tables[name](column))
            return parts
        ids = tf.stack(ids, axis=1)  # [B, F]
        size = tf.constant(sizes, tf.int64)
        ids = tf.where((ids < 0) | (ids >= size), size - 1, ids)
        ids += tf.constant([self.row_offsets[n] for n in names], tf.int64)
        rows = self.tables[FUSED_TABLE](ids)  # [B, F, d]: one gather
        return [tf.reshape(rows, [-1, len(names) * self.embedding_dim])]

    def batch_rows_l2(self, sparse: tf.Tensor) -> tf.Tensor:
        """``l2_batch_rows * sum_f mean_b ||e_f(x_b)||^2`` of the looked-up ``[B, F * d]``."""
        sparse = tf.cast(sparse, tf.float32)
        batch = tf.cast(tf.shape(sparse)[0], tf.float32)
        return self.l2_batch_rows * tf.math.divide_no_nan(tf.reduce_sum(tf.square(sparse)),
                                                          batch)

    def call(self, inputs: Mapping[str, tf.Tensor], training: Optional[bool] = None):
        missing = [k for k in list(self.sparse_vocab_sizes) + self.dense_keys if k not in inputs]
        if missing:
            raise KeyError(f"FeatureEmbedding: inputs lack feature(s) {missing}; "
                           f"got {sorted(inputs)}")
        parts = self._lookup(inputs) if self.sparse_vocab_sizes else []
        if parts and (self.l2_batch_rows > 0 or self._dropout is not None
                      or self._feature_dropout is not None):
            sparse = tf.concat(parts, axis=-1) if len(parts) > 1 else parts[0]
            if self.l2_batch_rows > 0:
                self.add_loss(self.batch_rows_l2(sparse))
            if self._feature_dropout is not None:
                shape = [-1, len(self.sparse_vocab_sizes), self.embedding_dim]
                sparse = tf.reshape(self._feature_dropout(tf.reshape(sparse, shape),
                                                          training=training),
                                    [-1, len(self.sparse_vocab_sizes) * self.embedding_dim])
            if self._dropout is not None:
                sparse = self._dropout(sparse, training=training)
            parts = [sparse]
        for name in self.dense_keys:
            parts.append(tf.reshape(tf.cast(inputs[name], self.compute_dtype), [-1, 1]))
        return tf.concat(parts, axis=-1) if len(parts) > 1 else parts[0]

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(
            [None, len(self.sparse_vocab_sizes) * self.embedding_dim + len(self.dense_keys)])

    def get_config(self):
        config = super().get_config()
        config.update({"sparse_vocab_sizes": dict(self.sparse_vocab_sizes),
                       "dense_keys": list(self.dense_keys), "embedding_dim": self.embedding_dim,
                       "embeddings_regularizer_l2": self.embeddings_regularizer_l2,
                       "l2_batch_rows": self.l2_batch_rows, "dropout": self.dropout,
                       "feature_dropout": self.feature_dropout,
                       "fused_tables": self.fused_tables})
        return config
