"""TF Serving warmup file: ``assets.extra/tf_serving_warmup_requests``.

TF Serving replays these ``PredictionLog`` records when it loads a version, so the first
real request does not pay for graph initialisation. Each record is a ``PredictRequest`` to
``serving_default`` with a few serialized ``tf.Example`` rows.
"""
from __future__ import annotations

import os
from typing import List, Sequence

import tensorflow as tf

from serving.signatures import EXAMPLES_INPUT, SERVING_DEFAULT

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving reads at most this many


def warmup_path(export_dir: str) -> str:
    return os.path.join(export_dir, WARMUP_DIR, WARMUP_FILE)


def write_warmup(export_dir: str, serialized_examples: Sequence[bytes],
                 model_name: str = "funnelrank", batch_sizes: Sequence[int] = (1, None),
                 signature_name: str = SERVING_DEFAULT) -> str:
    """Writes PredictionLog warmup records under ``export_dir/assets.extra``.

    Args:
      export_dir: A version directory holding ``saved_model.pb``.
      serialized_examples: Serialized ``tf.Example`` rows without labels (a few real rows).
      model_name: Model name put in each request's ``model_spec`` (TF Serving ignores it).
      batch_sizes: One request per entry: the first ``n`` rows, ``None`` for all rows.
      signature_name: Signature the requests call.

    Returns:
      The path of the warmup file.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    examples = list(serialized_examples)
    if not examples:
        raise ValueError("write_warmup needs at least one serialized example")
    path = warmup_path(export_dir)
    tf.io.gfile.makedirs(os.path.dirname(path))
    sizes = [len(examples) if n is None else min(n, len(examples)) for n in batch_sizes]
    with tf.io.TFRecordWriter(path) as writer:
        for n in sizes[:MAX_RECORDS]:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name))
            request.inputs[EXAMPLES_INPUT].CopyFrom(
                tf.make_tensor_proto(examples[:n], dtype=tf.string, shape=[n]))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read_warmup(export_dir: str) -> List:
    """The ``PredictRequest`` of every record in the warmup file (raises if it is absent)."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = warmup_path(export_dir)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no warmup file at {path}")
    out = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        out.append(log.predict_log.request)
    return out
