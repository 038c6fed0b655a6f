"""The two serving signatures, shared by every exporter.

Both signatures end in the same function: raw features ``[B, 1]`` -> preprocessing (the
tf.Transform layer or the in-graph Preprocessor lookup) -> network -> ``{head: [B]}``:

* ``serving_default``: ``examples`` (serialized ``tf.Example``, labels absent) -> heads.
* ``predict_raw``: one ``[None]`` tensor per raw feature (int64 or string ids, float32 dense
  values), named like the feature -> heads. A feature the model allows to be missing (one that
  had empty cells in the training data) is missing where its value is NaN (dense) or ``""``
  (string ids); a NaN in a required dense feature fails the request naming the feature.
* ``select_cvr`` (per-action models, KAML's selector): ``examples`` and ``target_action``
  ``[B]`` int64 -> ``{"cvr": [B]}``, the pCVR of the given target action (its original HKE
  sub-tower); the given action replaces the one in the examples.

Every output is named by its task (``ctr``, ``cvr``, ``ctcvr``). A per-action model also
returns ``cvr_<j>`` for every action, and its ``cvr`` / ``ctcvr`` use each request's own
target action (``target_key``); a target outside ``0..N-1`` fails the request naming it.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import tensorflow as tf

SERVING_DEFAULT = "serving_default"
PREDICT_RAW = "predict_raw"
SELECT_CVR = "select_cvr"
EXAMPLES_INPUT = "examples"

ParseSpec = Mapping[str, Union[tf.io.FixedLenFeature, tf.io.VarLenFeature]]
Transform = Callable[[Dict[str, tf.Tensor]], Mapping[str, tf.Tensor]]


def fixed_parse_spec(raw_dtypes: Mapping[str, tf.DType], optional: Sequence[str] = ()
                     ) -> Dict[str, Union[tf.io.FixedLenFeature, tf.io.VarLenFeature]]:
    """One scalar per feature: what a serving ``tf.Example`` carries.

    Args:
      raw_dtypes: Raw feature name -> dtype (``tf.int64``, ``tf.string`` or ``tf.float32``).
      optional: Features that may be absent (``VarLenFeature``); the others are required.

    Returns:
      ``tf.io.parse_example`` spec; a missing required feature fails naming it.
    """
    return {k: tf.io.VarLenFeature(tf.as_dtype(d)) if k in optional
            else tf.io.FixedLenFeature([1], tf.as_dtype(d)) for k, d in raw_dtypes.items()}


def _as_parsed(column: tf.Tensor, feature, name: str) -> tf.Tensor:
    """``[B]`` request tensor -> what ``parse_example`` would give for ``feature``: for an
    optional feature NaN (dense) and ``""`` (string) are absent; a required dense feature must
    be finite."""
    column = tf.reshape(column, [-1, 1])
    if isinstance(feature, tf.io.VarLenFeature):
        if column.dtype.is_floating:
            present = ~tf.math.is_nan(column)
        elif column.dtype == tf.string:
            present = tf.not_equal(column, "")
        else:
            present = tf.ones_like(column, dtype=tf.bool)
        return tf.RaggedTensor.from_tensor(
            column, lengths=tf.reduce_sum(tf.cast(present, tf.int64), axis=1)).to_sparse()
    if column.dtype.is_floating:
        column = tf.debugging.assert_all_finite(
            column, message=f"feature {name!r} must be a finite number (it is required)")
    return column


def action_heads(network: tf.keras.Model) -> List[str]:
    """``cvr_0 .. cvr_{N-1}`` when the network has per-action heads, else ``[]``."""
    heads = []
    while f"cvr_{len(heads)}" in network.output_names:
        heads.append(f"cvr_{len(heads)}")
    return heads


def select_action(outputs: Mapping[str, tf.Tensor], actions: Sequence[str],
                  target: tf.Tensor, target_key: str) -> tf.Tensor:
    """``[B]`` pCVR of each row's target action (``target`` ``[B]`` or ``[B, 1]`` ints)."""
    target = tf.cast(tf.reshape(target, [-1]), tf.int64)
    checks = [tf.debugging.assert_non_negative(
                  target, message=f"{target_key} must be in 0..{len(actions) - 1}"),
              tf.debugging.assert_less(
                  target, tf.constant(len(actions), tf.int64),
                  message=f"{target_key} must be in 0..{len(actions) - 1}")]
    with tf.control_dependencies(checks):
        stacked = tf.stack([outputs[h] for h in actions], axis=1)
        return tf.gather(stacked, target, batch_dims=1)


def build_signatures(network: tf.keras.Model, transform: Transform,
                     raw_dtypes: Mapping[str, tf.DType],
                     parse_spec: Optional[ParseSpec] = None,
                     target_key: Optional[str] = None) -> Dict[str, Callable]:
    """Traces the serving signatures for ``network`` behind ``transform``.

    Args:
      network: Functional network ``{<key>_xf: [B, 1]}`` -> ``{head: [B]}``.
      transform: Raw features (as parsed from ``parse_spec``) -> transformed features
        holding at least every ``network.input_names`` key. Any object it uses that owns
        resources (tables, assets) must be tracked by the object being saved.
      raw_dtypes: Raw feature name -> dtype, in request order.
      parse_spec: ``tf.Example`` parse spec; default :func:`fixed_parse_spec`.
      target_key: Raw feature holding the target action; required for per-action networks.

    Returns:
      ``{"serving_default": concrete_fn, "predict_raw": concrete_fn[, "select_cvr": ...]}``
      for ``signatures=``.
    """
    raw_dtypes = {k: tf.as_dtype(d) for k, d in raw_dtypes.items()}
    parse_spec = dict(parse_spec or fixed_parse_spec(raw_dtypes))
    missing = sorted(set(raw_dtypes) - set(parse_spec))
    if missing:
        raise ValueError(f"parse spec lacks raw features {missing}")
    input_names = list(network.input_names)
    actions = action_heads(network)
    if actions and target_key not in raw_dtypes:
        raise ValueError(f"a per-action network needs the target action among the raw "
                         f"features; target_key={target_key!r}")

    def predict(raw: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        transformed = transform(raw)
        absent = [n for n in input_names if n not in transformed]
        if absent:
            raise ValueError(f"preprocessing does not produce network inputs {absent}")
        outputs = dict(network({n: transformed[n] for n in input_names}, training=False))
        if actions:
            target = raw[target_key]
            target = target.values if isinstance(target, tf.SparseTensor) else target
            outputs["cvr"] = select_action(outputs, actions, target, target_key)
            outputs["ctcvr"] = outputs["ctr"] * outputs["cvr"]
        return {h: tf.identity(v, name=h) for h, v in outputs.items()}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def serve_examples(examples):
        parsed = tf.io.parse_example(examples, {k: parse_spec[k] for k in raw_dtypes})
        return predict(parsed)

    raw_signature = {k: tf.TensorSpec([None], d, name=k) for k, d in raw_dtypes.items()}

    @tf.function(input_signature=[raw_signature])
    def predict_raw(features):
        return predict({k: _as_parsed(features[k], parse_spec[k], k) for k in raw_dtypes})

    sigs = {SERVING_DEFAULT: serve_examples.get_concrete_function(),
            PREDICT_RAW: predict_raw.get_concrete_function()}
    if actions:
        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT),
            tf.TensorSpec([None], tf.int64, name=target_key)])
        def select_cvr(examples, target):
            parsed = tf.io.parse_example(examples, {k: parse_spec[k] for k in raw_dtypes})
            parsed[target_key] = _as_parsed(
                tf.cast(target, tf.as_dtype(raw_dtypes[target_key])), parse_spec[target_key],
                target_key)
            return {"cvr": tf.identity(predict(parsed)["cvr"], name="cvr")}

        sigs[SELECT_CVR] = select_cvr.get_concrete_function()
    return sigs
