"""In-graph equivalent of ``transform.preprocessor.Preprocessor`` for exported models.

Categorical values become their text (integers as decimal text; a missing value, i.e. an
absent feature of an optional column or ``""``, is the text ``""``), then a
``tf.lookup.StaticHashTable`` gives the vocabulary position (unknown values ->
``len(vocab)``, the one OOV bucket) or ``tf.strings.to_hash_bucket_fast`` the hash bucket.
Dense values are z-scored with the fitted mean and standard deviation (only centred where the
std is 0) in float64 then cast to float32 like the NumPy code; a missing value (absent, or NaN)
becomes 0, the mean. Served inputs equal the training inputs bit for bit.
"""
from __future__ import annotations

from typing import Dict, Mapping

import tensorflow as tf

from schemas import features


def _text(x: tf.Tensor) -> tf.Tensor:
    """``[B, 1]`` text of a dense or sparse categorical input; missing -> ``""``."""
    if isinstance(x, tf.sparse.SparseTensor):
        values = x.values if x.dtype == tf.string else tf.strings.as_string(x.values)
        return tf.sparse.to_dense(tf.SparseTensor(x.indices, values, [x.dense_shape[0], 1]),
                                  default_value=features.MISSING_TEXT)
    x = tf.reshape(x, [-1, 1])
    return x if x.dtype == tf.string else tf.strings.as_string(tf.cast(x, tf.int64))


def _number(x: tf.Tensor) -> tf.Tensor:
    """``[B, 1]`` float64 of a dense or sparse input; missing -> NaN."""
    if isinstance(x, tf.sparse.SparseTensor):
        x = tf.sparse.to_dense(
            tf.SparseTensor(x.indices, tf.cast(x.values, tf.float64), [x.dense_shape[0], 1]),
            default_value=float("nan"))
    return tf.cast(tf.reshape(x, [-1, 1]), tf.float64)


class PreprocessorTransform(tf.Module):
    """Raw ``{key: [B, 1]}`` (dense, or sparse for optional features) -> ``{<key>_xf: [B, 1]}``.

    Args:
      preprocessor: A fitted ``transform.preprocessor.Preprocessor``.
    """

    def __init__(self, preprocessor, name: str = "preprocessor_transform"):
        super().__init__(name=name)
        self.spec = preprocessor.spec
        self.tables = {}
        for key, vocab in preprocessor.vocabularies.items():
            if key not in self.spec.sparse_keys:
                continue  # the GAUC user column is not a network input
            self.tables[key] = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant([str(v) for v in vocab] or [""], tf.string),
                    tf.range(max(len(vocab), 1), dtype=tf.int64)),
                default_value=tf.constant(len(vocab), tf.int64))
        self._means = dict(preprocessor.means)
        self._stds = dict(preprocessor.stds)

    @property
    def raw_dtypes(self) -> Dict[str, tf.DType]:
        """Request dtype per raw feature: int64 or string ids, then float32 dense values."""
        out = {k: tf.string if self.spec.dtype(k) == features.STRING else tf.int64
               for k in self.spec.sparse_keys}
        out.update({k: tf.float32 for k in self.spec.dense_keys})
        return out

    def __call__(self, raw: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        out = {}
        for key in self.spec.sparse_keys:
            text = _text(raw[key])
            if key in self.spec.hash_buckets:
                ids = tf.strings.to_hash_bucket_fast(text, self.spec.hash_buckets[key])
            else:
                ids = self.tables[key].lookup(text)
            out[features.transformed_name(key)] = ids
        for key in self.spec.dense_keys:
            x = _number(raw[key]) - self._means[key]
            if self._stds[key] > 0:
                x = x / self._stds[key]
            x = tf.where(tf.math.is_nan(x), tf.zeros_like(x), x)
            out[features.transformed_name(key)] = tf.cast(x, tf.float32)
        return out
