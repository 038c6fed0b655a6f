"""The wide part: per-task linear logits over sparse ids, id-pair crosses and dense features."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from schemas.checks import check_nonneg_number, check_positive_int, check_tasks
from trainer.layers.common import build_sublayer, register


def cross_name(pair: Sequence[str]) -> str:
    """Table name of a cross: ``<a>_x_<b>``."""
    return f"{pair[0]}_x_{pair[1]}"


@register
class WideLogits(tf.keras.layers.Layer):
    """Linear logits per task, the "wide" component of Wide & Deep (Cheng et al., DLRS'16,
    eq. 1: ``y = w_wide^T [x, phi(x)] + w_deep^T a + b``), to be added to each task's deep
    logit.

    For task ``t``: ``wide_t(x) = sum_f W_f[id_f(x), t] + sum_c W_c[cross_c(x), t]
    + sum_k v_k[t] x_k``, i.e. one weight per (vocabulary id, task) of every sparse feature
    ``f`` (a 1-d embedding per task, stored as one ``[vocab, T]`` table per feature), one per
    (value, task) of every cross ``c`` of two sparse features, and one per (dense feature,
    task). Every weight starts at 0, so the network starts as its deep part alone. There is no
    bias: the deep logit has one.

    A cross's value is ``id_a * size_b + id_b`` (``phi`` of the paper: the product of two
    one-hot features); when ``size_a * size_b`` exceeds ``cross_buckets`` the value is hashed
    into ``cross_buckets`` rows (FarmHash of its decimal text, ``tf.strings.to_hash_bucket_fast``).
    Ids outside ``[0, size)`` go to the last (OOV) id, as in ``FeatureEmbedding``.

    Regularisation: ``l2_batch_rows`` adds ``l2 * (1/B) sum_b sum_{f, c} ||W[row_b]||^2``
    (the squared weights of the rows each example looked up, averaged over the batch; the
    ``FeatureEmbedding`` form, see its docstring for why) to the layer's losses.

    Input: dict feature name -> ``[B]`` or ``[B, 1]`` (int ids, float dense values).
    Output: dict task -> ``[B, 1]`` logits.

    Args:
      sparse_vocab_sizes: Sparse feature -> ids (OOV included).
      dense_keys: Dense features.
      tasks: Task names (one logit each).
      crosses: Pairs of sparse feature names.
      cross_buckets: Most rows of a cross table (larger products are hashed).
      l2_batch_rows: L2 weight on the looked-up rows (0 disables).
    """

    def __init__(self, sparse_vocab_sizes: Mapping[str, int], dense_keys: Sequence[str] = (),
                 tasks: Sequence[str] = ("ctr",), crosses: Sequence[Sequence[str]] = (),
                 cross_buckets: int = 100_000, l2_batch_rows: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(sparse_vocab_sizes, Mapping):
            raise ValueError("`sparse_vocab_sizes` must map feature name -> vocabulary size, "
                             f"received: sparse_vocab_sizes={sparse_vocab_sizes!r}")
        for name, size in sparse_vocab_sizes.items():
            check_positive_int(f"sparse_vocab_sizes[{name!r}]", size)
        self.sparse_vocab_sizes: Dict[str, int] = dict(sparse_vocab_sizes)
        self.dense_keys = list(dense_keys)
        if not self.sparse_vocab_sizes and not self.dense_keys:
            raise ValueError("WideLogits needs at least one sparse or dense feature, received: "
                             f"sparse_vocab_sizes={sparse_vocab_sizes!r}, "
                             f"dense_keys={dense_keys!r}")
        self.tasks = check_tasks("tasks", tasks)
        pairs = []
        for i, pair in enumerate(crosses):
            if (not isinstance(pair, (list, tuple)) or len(pair) != 2 or pair[0] == pair[1]
                    or any(p not in self.sparse_vocab_sizes for p in pair)):
                raise ValueError(f"`crosses[{i}]` must be a pair of two different sparse "
                                 f"features of {sorted(self.sparse_vocab_sizes)}, received: "
                                 f"crosses[{i}]={pair!r}")
            pairs.append(tuple(pair))
        self.crosses: Tuple[Tuple[str, str], ...] = tuple(pairs)
        self.cross_buckets = check_positive_int("cross_buckets", cross_buckets)
        self.l2_batch_rows = check_nonneg_number("l2_batch_rows", l2_batch_rows)

    def cross_rows(self, pair: Sequence[str]) -> int:
        """Rows of a cross's table: the exact product of the two sizes, or the buckets."""
        exact = self.sparse_vocab_sizes[pair[0]] * self.sparse_vocab_sizes[pair[1]]
        return min(exact, self.cross_buckets)

    def build(self, input_shape):
        width = len(self.tasks)

        def table(rows, name):
            return tf.keras.layers.Embedding(rows, width, embeddings_initializer="zeros",
                                             name=f"wide/{name}")

        self.tables = {name: table(size, name) for name, size in self.sparse_vocab_sizes.items()}
        self.cross_tables = {cross_name(p): table(self.cross_rows(p), cross_name(p))
                             for p in self.crosses}
        for layer in list(self.tables.values()) + list(self.cross_tables.values()):
            build_sublayer(layer, tf.TensorShape([None]))
        self.dense = None
        if self.dense_keys:
            self.dense = tf.keras.layers.Dense(width, use_bias=False, kernel_initializer="zeros",
                                               name="wide/dense")
            build_sublayer(self.dense, tf.TensorShape([None, len(self.dense_keys)]))
        super().build(input_shape)

    def _ids(self, inputs, name: str) -> tf.Tensor:
        size = self.sparse_vocab_sizes[name]
        ids = tf.reshape(tf.cast(inputs[name], tf.int64), [-1])
        return tf.where((ids < 0) | (ids >= size), tf.constant(size - 1, tf.int64), ids)

    def cross_ids(self, inputs, pair: Sequence[str]) -> tf.Tensor:
        """``[B]`` row of each example in a cross's table."""
        a, b = pair
        exact = self._ids(inputs, a) * self.sparse_vocab_sizes[b] + self._ids(inputs, b)
        if self.cross_rows(pair) == self.sparse_vocab_sizes[a] * self.sparse_vocab_sizes[b]:
            return exact
        return tf.strings.to_hash_bucket_fast(tf.strings.as_string(exact), self.cross_buckets)

    def call(self, inputs: Mapping[str, tf.Tensor], training: Optional[bool] = None):
        missing = [k for k in list(self.sparse_vocab_sizes) + self.dense_keys if k not in inputs]
        if missing:
            raise KeyError(f"WideLogits: inputs lack feature(s) {missing}; got {sorted(inputs)}")
        rows = [self.tables[name](self._ids(inputs, name)) for name in self.sparse_vocab_sizes]
        rows += [self.cross_tables[cross_name(p)](self.cross_ids(inputs, p))
                 for p in self.crosses]
        total = tf.add_n(rows) if rows else None
        if self.l2_batch_rows > 0 and rows:
            squared = tf.add_n([tf.reduce_sum(tf.square(r)) for r in rows])
            batch = tf.cast(tf.shape(rows[0])[0], squared.dtype)
            self.add_loss(self.l2_batch_rows * tf.math.divide_no_nan(squared, batch))
        if self.dense is not None:
            x = tf.concat([tf.reshape(tf.cast(inputs[k], self.compute_dtype), [-1, 1])
                           for k in self.dense_keys], axis=-1)
            total = self.dense(x) if total is None else total + self.dense(x)
        return {task: total[:, i:i + 1] for i, task in enumerate(self.tasks)}

    def get_config(self):
        config = super().get_config()
        config.update({"sparse_vocab_sizes": dict(self.sparse_vocab_sizes),
                       "dense_keys": list(self.dense_keys), "tasks": list(self.tasks),
                       "crosses": [list(p) for p in self.crosses],
                       "cross_buckets": self.cross_buckets,
                       "l2_batch_rows": self.l2_batch_rows})
        return config
