"""tf.Transform ``preprocessing_fn`` of the TFX Transform component.

Per role (``schemas.features.DatasetSpec``):

* categorical columns (``spec.id_keys``: the sparse features and the GAUC user id) become
  their text (integers as decimal text, strings as they are, a missing value as ``""``, which
  is a vocabulary entry of its own, written ``VOCAB_MISSING`` in the vocabulary file), then
  ids of a vocabulary ordered by decreasing frequency
  (ties: decreasing byte order) with ``NUM_OOV_BUCKETS`` OOV bucket after it; values seen fewer
  than ``spec.min_counts[key]`` times in train map to OOV; ``spec.hash_buckets[key]`` replaces
  the vocabulary by FarmHash buckets (``tf.strings.to_hash_bucket_fast``);
* dense columns are z-scored with full-pass statistics over the present values (a constant
  column is only centred); a missing value becomes 0, i.e. the train mean;
* labels (and ADM's columns) pass through as float32.

Output keys follow ``schemas.features.transformed_name``. ``transform.preprocessor`` reproduces
exactly this in process for ``funnelrank train``; a test holds the two to the same numbers.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import tensorflow as tf
import tensorflow_transform as tft

from schemas import features
from schemas.config import SPEC_KEY

NUM_OOV_BUCKETS = 1
# The missing value's entry in Transform's vocabulary files. tf.Transform leaves the empty
# string out of a text vocabulary (its file has one entry per line), so "" fell into the OOV
# bucket while the NumPy twin gave it an entry of its own. NUL, the smallest non-empty text,
# takes its place: ties in frequency sort it last, where "" sorts in the twin, so both give the
# same ids; the ingest refuses NUL in categorical values, so no value collides with it. (A
# tfrecord_gzip vocabulary keeps "" but its table cannot be saved in a SavedModel here.)
VOCAB_MISSING = "\x00"


def vocab_filename(key: str) -> str:
    """Asset name of a feature's vocabulary (Ali-CCP keys start with digits)."""
    return f"vocab_{key}"


def as_text(x) -> tf.Tensor:
    """``[B, 1]`` strings of a categorical input (dense ``[B, 1]`` or sparse ``[B, <=1]``,
    int64 or string): integers as decimal text, a missing value as ``""``."""
    if isinstance(x, tf.sparse.SparseTensor):
        values = x.values if x.dtype == tf.string else tf.strings.as_string(x.values)
        return tf.sparse.to_dense(
            tf.SparseTensor(x.indices, values, [x.dense_shape[0], 1]),
            default_value=features.MISSING_TEXT)
    x = tf.reshape(x, [-1, 1])
    return x if x.dtype == tf.string else tf.strings.as_string(x)


def _dense(x, default) -> tf.Tensor:
    """``[B, 1]`` dense tensor from a dense or sparse (VarLen) input, missing -> default."""
    if isinstance(x, tf.sparse.SparseTensor):
        x = tf.sparse.to_dense(
            tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), default_value=default)
    return tf.reshape(x, [-1, 1])


def _z_score(x) -> tf.Tensor:
    """z-scores in float64 (present values only), missing -> 0; ``[B, 1]`` float32."""
    if isinstance(x, tf.sparse.SparseTensor):
        x = tf.SparseTensor(x.indices, tf.cast(x.values, tf.float64), x.dense_shape)
        z = tft.scale_to_z_score(x, output_dtype=tf.float64)
        return tf.cast(_dense(z, tf.constant(0.0, tf.float64)), tf.float32)
    z = tft.scale_to_z_score(tf.cast(tf.reshape(x, [-1, 1]), tf.float64), output_dtype=tf.float64)
    return tf.cast(z, tf.float32)


def categorical_ids(text: tf.Tensor, key: str, spec: features.DatasetSpec) -> tf.Tensor:
    """Ids of ``[B, 1]`` texts: hash buckets or a frequency-ordered vocabulary with OOV.

    tf.Transform leaves the empty string out of a text vocabulary file, which would send a
    missing value to OOV; the vocabulary therefore sees it as :data:`VOCAB_MISSING`, which
    sorts like ``""`` among equal counts (below every other text), so the ids are those of
    ``transform.preprocessor``, where ``""`` is an entry. (``tfrecord_gzip`` vocabularies keep
    ``""`` but a SavedModel holding their initializer cannot be saved again: TF 2.16's
    "Attempting to capture an EagerTensor" when exporting the serving model.) A known
    difference remains: tf.Transform also drops texts holding a newline, which go to OOV here
    but have entries in ``transform.preprocessor``.
    """
    buckets = spec.hash_buckets.get(key)
    if buckets:
        return tf.strings.to_hash_bucket_fast(text, buckets)
    threshold = spec.min_counts.get(key, 1)
    text = tf.where(tf.equal(text, features.MISSING_TEXT), VOCAB_MISSING, text)
    return tft.compute_and_apply_vocabulary(
        text, num_oov_buckets=NUM_OOV_BUCKETS,
        frequency_threshold=threshold if threshold > 1 else None,
        vocab_filename=vocab_filename(key))


def spec_from_custom_config(custom_config: Optional[Mapping[str, Any]]) -> features.DatasetSpec:
    """The dataset spec the pipeline put in ``custom_config``."""
    if not custom_config or SPEC_KEY not in custom_config:
        raise ValueError(f"preprocessing_fn needs the dataset spec in custom_config"
                         f"[{SPEC_KEY!r}] (pipeline.common.custom_config puts it there)")
    return features.spec_from_dict(custom_config[SPEC_KEY])


def preprocessing_fn(inputs: Dict[str, Any],
                     custom_config: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Maps raw columns to model inputs and labels (see the module docstring).

    Args:
      inputs: Raw features by column name (dense ``[B, 1]`` or sparse ``[B, None]``).
      custom_config: Holds the dataset spec under ``"dataset_spec"``.

    Returns:
      ``<key>_xf`` tensors: int64 ids for categorical columns, float32 z-scores for dense
      ones, float32 labels.
    """
    spec = spec_from_custom_config(custom_config)
    absent = [k for k in spec.columns + spec.adm_keys if k not in inputs]
    if absent:
        raise ValueError(f"the examples' schema lacks {absent[:5]}; the schema must be the one "
                         f"`prepare` derived (prepared/schema.pbtxt) or have these columns")
    outputs: Dict[str, Any] = {}
    for key in spec.id_keys:
        outputs[features.transformed_name(key)] = categorical_ids(as_text(inputs[key]), key,
                                                                  spec)
    for key in spec.dense_keys:
        outputs[features.transformed_name(key)] = _z_score(inputs[key])
    for key in spec.label_columns + spec.adm_keys:
        outputs[features.transformed_name(key)] = tf.cast(
            _dense(inputs[key], tf.constant(0, inputs[key].dtype)), tf.float32)
    return outputs
