"""Export of the inference network for TF Serving.

The SavedModel holds the functional network (inference towers only: no loss weights, no
optimizer slots) with the tf.Transform layer attached, so raw tf.Examples go in and named
probabilities come out. Signatures:

* ``serving_default``: ``examples`` (serialized tf.Example, labels absent) ->
  ``{head: probability [B]}``.
"""
from __future__ import annotations

import logging
from typing import Dict

import tensorflow as tf
import tensorflow_transform as tft

from schemas import features

log = logging.getLogger(__name__)


def raw_serving_spec(tft_output: tft.TFTransformOutput,
                     spec: features.DatasetSpec) -> Dict[str, tf.io.FixedLenFeature]:
    """Raw feature spec of a serving request: every model feature, no labels."""
    raw = tft_output.raw_feature_spec()
    return {k: raw[k] for k in spec.feature_keys}


def export_serving_model(network: tf.keras.Model, tft_output: tft.TFTransformOutput,
                         spec: features.DatasetSpec, export_dir: str) -> str:
    """Saves ``network`` + Transform layer with the serving signatures to ``export_dir``.

    Args:
      network: Functional inference network (``{<key>_xf}`` -> ``{head: prob}``).
      tft_output: The Transform component's output (graph and vocabulary assets).
      spec: Dataset spec (which raw columns are features).
      export_dir: Destination; TF Serving expects ``<base>/<version>/``.

    Returns:
      ``export_dir``.
    """
    network.tft_layer = tft_output.transform_features_layer()
    parse_spec = raw_serving_spec(tft_output, spec)
    input_names = list(network.input_names)
    heads = list(network.output_names)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(examples):
        parsed = tf.io.parse_example(examples, parse_spec)
        transformed = network.tft_layer(parsed)
        outputs = network({k: transformed[k] for k in input_names}, training=False)
        return {h: tf.identity(outputs[h], name=h) for h in heads}

    network.save(export_dir, save_format="tf",
                 signatures={"serving_default": serve_examples.get_concrete_function()})
    log.info("exported serving model to %s (heads %s)", export_dir, heads)
    return export_dir
