"""Export of the inference network for TF Serving.

The SavedModel holds the functional network (inference towers only: no loss weights, no
optimizer slots) with its preprocessing attached, so raw features go in and named
probabilities come out; TF Serving loads it as-is. Two exporters share the signature code
(:mod:`serving.signatures`):

* :func:`export_serving_model`: the TFX Trainer's export, preprocessing = the tf.Transform
  layer (its graph and vocabulary assets are copied into the SavedModel).
* :func:`export_from_preprocessor`: ``funnelrank train`` output, preprocessing = in-graph
  vocabulary tables and z-scores from ``transform.preprocessor.Preprocessor``
  (:mod:`serving.lookup`).

Signatures (outputs named by task, ``{head: probability [B]}``):

* ``serving_default``: ``examples`` (serialized tf.Example, labels absent).
* ``predict_raw``: one ``[None]`` tensor per raw feature (int64 or string ids, float32 dense
  values; see :mod:`serving.signatures` for missing values).

Both write ``assets.extra/tf_serving_warmup_requests`` (:mod:`serving.warmup`). The
Keras SavedModel format is kept so TFMA's Evaluator loads the model as before.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence

import tensorflow as tf
import tensorflow_transform as tft

from schemas import features
from serving import client, lookup, signatures, warmup

log = logging.getLogger(__name__)

WARMUP_ROWS = 8


def raw_serving_spec(tft_output: tft.TFTransformOutput,
                     spec: features.DatasetSpec) -> Dict[str, tf.io.FixedLenFeature]:
    """Raw feature spec of a serving request: every model feature, no labels."""
    raw = tft_output.raw_feature_spec()
    return {k: raw[k] for k in spec.feature_keys}


def _save(network: tf.keras.Model, export_dir: str, sigs: Dict,
          warmup_examples: Sequence[bytes]) -> str:
    """Writes the SavedModel and its warmup file.

    The layers' traced functions are not saved (``save_traces=False``): TF Serving, the
    Evaluator (``tf_generic``), ``serve-check`` and warm starts use only the signatures and
    the variables, and tracing every layer took about 5 of the 12 s of an export.
    ``tf.keras.models.load_model`` still rebuilds the network, from the registered layers'
    configs (``custom_objects=funnelrank.layers.custom_objects()``).
    """
    network.save(export_dir, save_format="tf", signatures=sigs, include_optimizer=False,
                 save_traces=False)
    warmup.write_warmup(export_dir, warmup_examples)
    log.info("exported serving model to %s (heads %s, signatures %s)", export_dir,
             list(network.output_names), sorted(sigs))
    return export_dir


def _vocab_rows(vocabularies: Dict[str, List], dense: Dict[str, float],
                types: Dict[str, str], n: int) -> List[Dict]:
    """``n`` rows cycling through each vocabulary's most frequent present values (warmup
    default; a missing value's entry, ``""`` or tf.Transform's ``VOCAB_MISSING``, is
    skipped)."""
    from transform.preprocessing import VOCAB_MISSING

    rows = []
    for i in range(n):
        row = {}
        for key, kind in types.items():
            values = [v.decode() if isinstance(v, bytes) else str(v)
                      for v in vocabularies.get(key) or []]
            values = [v for v in values if v not in ("", VOCAB_MISSING)]
            if kind == client.FLOAT32:
                row[key] = dense.get(key, 0.0)
            elif values:
                value = values[i % len(values)]
                row[key] = int(value) if kind == client.INT64 else value
            else:
                row[key] = 0 if kind == client.INT64 else "unknown"
        rows.append(row)
    return rows


def export_serving_model(network: tf.keras.Model, tft_output: tft.TFTransformOutput,
                         spec: features.DatasetSpec, export_dir: str,
                         warmup_examples: Optional[Sequence[bytes]] = None) -> str:
    """Saves ``network`` + Transform layer with both serving signatures to ``export_dir``.

    Args:
      network: Functional inference network (``{<key>_xf}`` -> ``{head: prob}``).
      tft_output: The Transform component's output (graph and vocabulary assets).
      spec: Dataset spec (which raw columns are features).
      export_dir: Destination; TF Serving expects ``<base>/<version>/`` (the Pusher adds
        the version; see :mod:`serving.versioning` otherwise).
      warmup_examples: Serialized tf.Examples for the warmup file (a few eval rows);
        default: rows built from the most frequent vocabulary values, dense 0.

    Returns:
      ``export_dir``.
    """
    network.tft_layer = tft_output.transform_features_layer()
    parse_spec = raw_serving_spec(tft_output, spec)
    raw_dtypes = {k: parse_spec[k].dtype for k in spec.feature_keys}
    sigs = signatures.build_signatures(network, network.tft_layer, raw_dtypes, parse_spec,
                                       target_key=spec.target_key)
    if warmup_examples is None:
        from transform.preprocessing import vocab_filename

        types = {k: tf.as_dtype(d).name for k, d in raw_dtypes.items()}
        vocabs = {k: tft_output.vocabulary_by_name(vocab_filename(k))[:WARMUP_ROWS]
                  for k in spec.sparse_keys}
        warmup_examples = client.serialize_examples(
            _vocab_rows(vocabs, {}, types, WARMUP_ROWS), types)
    return _save(network, export_dir, sigs, warmup_examples)


def export_from_preprocessor(network: tf.keras.Model, preprocessor, export_dir: str,
                             warmup_examples: Optional[Sequence[bytes]] = None) -> str:
    """Saves ``network`` + in-graph Preprocessor lookup with both signatures.

    Args:
      network: Functional inference network trained on ``preprocessor.transform`` output.
      preprocessor: Fitted ``transform.preprocessor.Preprocessor`` (``preprocessor.json``).
      export_dir: Destination (``<base>/<version>/`` for TF Serving).
      warmup_examples: Serialized tf.Examples for the warmup file; default: rows built from
        the most frequent vocabulary values and the dense means.

    Returns:
      ``export_dir``.
    """
    transform = lookup.PreprocessorTransform(preprocessor)
    network.raw_preprocessing = transform  # tracked: its tables are saved with the model
    parse_spec = signatures.fixed_parse_spec(transform.raw_dtypes,
                                             preprocessor.spec.optional_keys)
    sigs = signatures.build_signatures(network, transform, transform.raw_dtypes, parse_spec,
                                       target_key=preprocessor.spec.target_key)
    if warmup_examples is None:
        types = {k: d.name for k, d in transform.raw_dtypes.items()}
        warmup_examples = client.serialize_examples(
            _vocab_rows(preprocessor.vocabularies, preprocessor.means, types, WARMUP_ROWS),
            types)
    return _save(network, export_dir, sigs, warmup_examples)
