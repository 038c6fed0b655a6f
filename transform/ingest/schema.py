"""The TFDV schema of prepared data, derived from the dataset spec: no hand-written ``.pbtxt``.

Per column: ``INT`` (labels, timestamps, integer ids), ``BYTES`` (string ids) or ``FLOAT``
(dense); labels have the domain {0, 1}; every column holds one value per example. Columns
that are never missing are required (``presence.min_fraction: 1`` and a fixed shape, so
tf.Transform sees dense ``[B, 1]`` tensors); features that may be missing
(``spec.optional_keys``) are optional (sparse in tf.Transform). With ADM, the job's integer
columns (``adm_count_<j>``, ``adm_mask_<j>``, ``adm_original_<j>``) are included. ImportSchemaGen
imports it;
ExampleValidator then checks every split against it.
"""
from __future__ import annotations

from schemas import features


def schema_from_spec(spec: features.DatasetSpec):
    """A ``tensorflow_metadata`` ``Schema`` proto for the prepared examples of ``spec``."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = schema_pb2.Schema()
    labels = set(spec.label_columns)
    adm_counts = tuple(features.adm_key(features.ADM_COUNT, j) for j in range(spec.num_actions)
                       ) if spec.adm_keys else ()
    for key in spec.columns + tuple(spec.adm_keys) + adm_counts:
        feature = schema.feature.add()
        feature.name = key
        kind = spec.dtype(key) if key in spec.columns else features.INT
        feature.type = {"float": schema_pb2.FLOAT, features.STRING: schema_pb2.BYTES}.get(
            kind, schema_pb2.INT)
        if key in spec.optional_keys:
            feature.value_count.min = 1
            feature.value_count.max = 1
            feature.presence.min_fraction = 0.0
        else:
            feature.presence.min_fraction = 1.0
            feature.presence.min_count = 1
            feature.shape.dim.add().size = 1
        if key in labels:
            feature.int_domain.min = 0
            feature.int_domain.max = 1
            feature.int_domain.is_categorical = True
    return schema


def write_schema(spec: features.DatasetSpec, path: str) -> str:
    """Writes :func:`schema_from_spec` as text proto to ``path`` (any ``tf.io.gfile`` path)."""
    import tensorflow as tf
    from google.protobuf import text_format

    text = text_format.MessageToString(schema_from_spec(spec))
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        f.write(text)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
    return path
