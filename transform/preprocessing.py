"""tf.Transform ``preprocessing_fn`` of the TFX Transform component.

Sparse ids get a frequency-ordered vocabulary with ``num_oov_buckets`` OOV buckets (unknown ids
at serving time map there instead of failing); dense features are z-scored with full-pass
statistics; labels (and the ADM masks, when ADM ran) are passed through as float32. Output
keys follow ``schemas.features.transformed_name``. ``transform.preprocessor`` reproduces exactly
this in process for ``funnelrank train``; a test holds the two to the same numbers.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import tensorflow as tf
import tensorflow_transform as tft

from schemas import features
from schemas.config import SPEC_KEY

NUM_OOV_BUCKETS = 1


def _dense(x, default):
    """``[B, 1]`` dense tensor from a dense or sparse (VarLen) input, missing -> default."""
    if isinstance(x, tf.sparse.SparseTensor):
        x = tf.sparse.to_dense(
            tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), default_value=default)
    return tf.reshape(x, [-1, 1])


def spec_from_custom_config(custom_config: Optional[Mapping[str, Any]]) -> features.DatasetSpec:
    """The dataset spec the pipeline put in ``custom_config`` (default: synthetic)."""
    if custom_config and SPEC_KEY in custom_config:
        return features.spec_from_dict(custom_config[SPEC_KEY])
    return features.synthetic_spec()


def preprocessing_fn(inputs: Dict[str, Any],
                     custom_config: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Maps raw columns to model inputs and labels.

    Args:
      inputs: Raw features by column name (dense ``[B, 1]`` or sparse ``[B, None]``).
      custom_config: Holds the dataset spec under ``"dataset_spec"``.

    Returns:
      ``<key>_xf`` tensors: int64 vocabulary ids for sparse features, float32 z-scores for
      dense ones, float32 labels.
    """
    spec = spec_from_custom_config(custom_config)
    missing = [k for k in spec.adm_keys if k not in inputs]
    if missing:
        raise ValueError(f"ADM is enabled but the examples' schema lacks {missing[:3]}...; "
                         f"import a schema that has the ADM columns (e.g. "
                         f"schemas/synthetic_adm.pbtxt) as pipeline.schema")
    outputs: Dict[str, Any] = {}
    for key in spec.sparse_keys:
        outputs[features.transformed_name(key)] = tft.compute_and_apply_vocabulary(
            _dense(inputs[key], tf.constant(0, inputs[key].dtype)),
            num_oov_buckets=NUM_OOV_BUCKETS, vocab_filename=vocab_filename(key))
    for key in spec.dense_keys:
        outputs[features.transformed_name(key)] = tft.scale_to_z_score(
            tf.cast(_dense(inputs[key], tf.constant(0, inputs[key].dtype)), tf.float32))
    for key in spec.label_keys + spec.adm_keys:
        outputs[features.transformed_name(key)] = tf.cast(
            _dense(inputs[key], tf.constant(0, inputs[key].dtype)), tf.float32)
    return outputs


def vocab_filename(key: str) -> str:
    """Asset name of a feature's vocabulary (Ali-CCP keys start with digits)."""
    return f"vocab_{key}"
