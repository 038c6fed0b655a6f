"""TFX component running the ADM Beam job (:mod:`transform.adm`) between ExampleGen and the
components that read examples (StatisticsGen, Transform, Evaluator).

It reads every split of the input Examples (gzipped tf.Example TFRecords), computes the ADM
columns over ALL splits together (a sample's history is its ad task's earlier rows, whichever
split they fell in) and writes each row back to its own split with ``adm_count_<j>``,
``adm_mask_<j>`` and ``adm_original_<j>`` added. The Beam pipeline is the TFX pipeline's
(``beam_pipeline_args``): DirectRunner locally (in-memory or multi-process), Dataflow, Flink
or Spark unchanged. Referenced by import path, so a Kubeflow image needs this package
installed (as for the Trainer's ``run_fn``).
"""
# No ``from __future__ import annotations``: TFX parses the component's annotations as objects.
import json
import os
from typing import Dict

import apache_beam as beam
from tfx.dsl.component.experimental.annotations import (
    BeamComponentParameter,
    InputArtifact,
    OutputArtifact,
    Parameter,
)
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from transform.adm import AdmParams, ComputeAdm

OUTPUT_PREFIX = "data_tfrecord"


def example_to_row(serialized: bytes) -> Dict:
    """A tf.Example with one value per feature -> ``{name: int | float | bytes}``."""
    import tensorflow as tf

    example = tf.train.Example.FromString(serialized)
    row = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = getattr(feature, kind).value if kind else []
        if len(values) != 1:
            raise ValueError(f"ADM expects exactly one value per feature; feature {name!r} "
                             f"has {len(values)} in an example of {sorted(row) or 'this row'}")
        row[name] = values[0]
    return row


def row_to_example(row: Dict) -> bytes:
    """Inverse of :func:`example_to_row` (ints -> int64_list, floats -> float_list)."""
    import tensorflow as tf

    feats = {}
    for name, value in row.items():
        if isinstance(value, bytes):
            feats[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        elif isinstance(value, float):
            feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        else:
            feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


@component(use_beam=True)
def AttributionDrivenMasking(  # noqa: N802  (TFX component names are classes)
        examples: InputArtifact[standard_artifacts.Examples],
        adm_examples: OutputArtifact[standard_artifacts.Examples],
        params_json: Parameter[str],
        beam_pipeline: BeamComponentParameter[beam.Pipeline] = None) -> None:
    """Adds KAML's ADM masks to every split of ``examples`` (see the module docstring).

    Args:
      examples: ExampleGen output.
      adm_examples: The same splits with the ADM columns.
      params_json: :class:`transform.adm.AdmParams` as JSON (``AdmParams.to_dict``).
      beam_pipeline: Made by TFX from the pipeline's ``beam_pipeline_args``.
    """
    params = AdmParams.from_dict(json.loads(params_json))
    splits = list(examples.splits)
    if not splits:
        raise ValueError(f"ADM: input examples at {examples.uri} have no splits")
    adm_examples.splits = splits  # before .path(split=...) is asked for
    with beam_pipeline as p:
        tagged = []
        for split in splits:
            pattern = os.path.join(examples.path(split=split), "*")
            tagged.append(
                p | f"Read[{split}]" >> beam.io.ReadFromTFRecord(
                    pattern, coder=beam.coders.BytesCoder())
                | f"Parse[{split}]" >> beam.Map(lambda b, s=split: (s, example_to_row(b))))
        rows = (tagged | "AllSplits" >> beam.Flatten()
                | "Untag" >> beam.Map(lambda sr: {**sr[1], "__split__": sr[0]}))
        annotated = rows | "ADM" >> ComputeAdm(params)
        for split in splits:
            _ = (annotated
                 | f"Select[{split}]" >> beam.Filter(lambda r, s=split: r["__split__"] == s)
                 | f"Serialize[{split}]" >> beam.Map(
                     lambda r: row_to_example({k: v for k, v in r.items() if k != "__split__"}))
                 | f"Write[{split}]" >> beam.io.WriteToTFRecord(
                     os.path.join(adm_examples.path(split=split), OUTPUT_PREFIX),
                     file_name_suffix=".gz"))
