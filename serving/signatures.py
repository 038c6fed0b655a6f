"""The two serving signatures, shared by every exporter.

Both signatures end in the same function: raw features ``[B, 1]`` -> preprocessing (the
tf.Transform layer or the in-graph Preprocessor lookup) -> network -> ``{head: [B]}``:

* ``serving_default``: ``examples`` (serialized ``tf.Example``, labels absent) -> heads.
* ``predict_raw``: one ``[None]`` tensor per raw feature (int64 ids, float32 dense values),
  named like the feature -> heads.

Every output is named by its task (``ctr``, ``cvr``, ``ctcvr``).
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Union

import tensorflow as tf

SERVING_DEFAULT = "serving_default"
PREDICT_RAW = "predict_raw"
EXAMPLES_INPUT = "examples"

ParseSpec = Mapping[str, Union[tf.io.FixedLenFeature, tf.io.VarLenFeature]]
Transform = Callable[[Dict[str, tf.Tensor]], Mapping[str, tf.Tensor]]


def fixed_parse_spec(raw_dtypes: Mapping[str, tf.DType]) -> Dict[str, tf.io.FixedLenFeature]:
    """One required scalar per feature: what a serving ``tf.Example`` must carry.

    Args:
      raw_dtypes: Raw feature name -> dtype (``tf.int64`` or ``tf.float32``).

    Returns:
      ``tf.io.parse_example`` spec; a missing feature fails naming it.
    """
    return {k: tf.io.FixedLenFeature([1], tf.as_dtype(d)) for k, d in raw_dtypes.items()}


def _as_parsed(column: tf.Tensor, feature) -> tf.Tensor:
    """``[B]`` request tensor -> what ``parse_example`` would give for ``feature``."""
    column = tf.reshape(column, [-1, 1])
    if isinstance(feature, tf.io.VarLenFeature):
        return tf.RaggedTensor.from_tensor(column).to_sparse()
    return column


def build_signatures(network: tf.keras.Model, transform: Transform,
                     raw_dtypes: Mapping[str, tf.DType],
                     parse_spec: Optional[ParseSpec] = None) -> Dict[str, Callable]:
    """Traces ``serving_default`` and ``predict_raw`` for ``network`` behind ``transform``.

    Args:
      network: Functional network ``{<key>_xf: [B, 1]}`` -> ``{head: [B]}``.
      transform: Raw features (as parsed from ``parse_spec``) -> transformed features
        holding at least every ``network.input_names`` key. Any object it uses that owns
        resources (tables, assets) must be tracked by the object being saved.
      raw_dtypes: Raw feature name -> dtype, in request order.
      parse_spec: ``tf.Example`` parse spec; default :func:`fixed_parse_spec`.

    Returns:
      ``{"serving_default": concrete_fn, "predict_raw": concrete_fn}`` for ``signatures=``.
    """
    raw_dtypes = {k: tf.as_dtype(d) for k, d in raw_dtypes.items()}
    parse_spec = dict(parse_spec or fixed_parse_spec(raw_dtypes))
    missing = sorted(set(raw_dtypes) - set(parse_spec))
    if missing:
        raise ValueError(f"parse spec lacks raw features {missing}")
    input_names = list(network.input_names)
    heads = list(network.output_names)

    def predict(raw: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        transformed = transform(raw)
        absent = [n for n in input_names if n not in transformed]
        if absent:
            raise ValueError(f"preprocessing does not produce network inputs {absent}")
        outputs = network({n: transformed[n] for n in input_names}, training=False)
        return {h: tf.identity(outputs[h], name=h) for h in heads}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def serve_examples(examples):
        parsed = tf.io.parse_example(examples, {k: parse_spec[k] for k in raw_dtypes})
        return predict(parsed)

    raw_signature = {k: tf.TensorSpec([None], d, name=k) for k, d in raw_dtypes.items()}

    @tf.function(input_signature=[raw_signature])
    def predict_raw(features):
        return predict({k: _as_parsed(features[k], parse_spec[k]) for k in raw_dtypes})

    return {SERVING_DEFAULT: serve_examples.get_concrete_function(),
            PREDICT_RAW: predict_raw.get_concrete_function()}
