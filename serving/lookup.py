"""In-graph equivalent of ``transform.preprocessor.Preprocessor`` for exported models.

Sparse ids go through a ``tf.lookup.StaticHashTable`` (vocabulary position, unknown ids ->
``len(vocab)``, the one OOV bucket), dense values are z-scored with the fitted mean and
standard deviation (only centred where the std is 0), in float64 then cast to float32 like
the NumPy code, so served inputs equal the training inputs bit for bit.
"""
from __future__ import annotations

from typing import Dict, Mapping

import tensorflow as tf

from schemas import features


def _int_keys(vocab):
    """The vocabulary as int64 keys, or ``None`` when some entry is not an integer."""
    try:
        return [int(v) for v in vocab]
    except ValueError:
        return None


class PreprocessorTransform(tf.Module):
    """Raw ``{key: [B, 1]}`` -> ``{<key>_xf: [B, 1]}`` from a fitted Preprocessor.

    Args:
      preprocessor: A fitted ``transform.preprocessor.Preprocessor`` (vocabularies, means, stds).
    """

    def __init__(self, preprocessor, name: str = "preprocessor_transform"):
        super().__init__(name=name)
        self.spec = preprocessor.spec
        self.tables = {}
        self._string_keys = {}
        for key, vocab in preprocessor.vocabularies.items():
            ints = _int_keys(vocab)
            keys = (tf.constant(ints, tf.int64) if ints is not None
                    else tf.constant([str(v) for v in vocab], tf.string))
            self._string_keys[key] = ints is None
            self.tables[key] = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    keys, tf.range(len(vocab), dtype=tf.int64)),
                default_value=tf.constant(len(vocab), tf.int64))
        self._means = dict(preprocessor.means)
        self._stds = dict(preprocessor.stds)

    @property
    def raw_dtypes(self) -> Dict[str, tf.DType]:
        """Request dtype per raw feature: int64 ids, then float32 dense values."""
        out = {k: tf.int64 for k in self.spec.sparse_keys}
        out.update({k: tf.float32 for k in self.spec.dense_keys})
        return out

    def __call__(self, raw: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        out = {}
        for key, table in self.tables.items():
            ids = raw[key]
            if self._string_keys[key]:
                ids = tf.strings.as_string(ids) if ids.dtype != tf.string else ids
            elif ids.dtype != tf.int64:
                ids = tf.cast(ids, tf.int64)
            out[features.transformed_name(key)] = table.lookup(ids)
        for key in self.spec.dense_keys:
            x = tf.cast(raw[key], tf.float64) - self._means[key]
            if self._stds[key] > 0:
                x = x / self._stds[key]
            out[features.transformed_name(key)] = tf.cast(x, tf.float32)
        return out
