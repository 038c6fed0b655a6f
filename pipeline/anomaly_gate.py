"""Stops the pipeline before Transform and training when ExampleValidator found anomalies.

TFX's ExampleValidator only *records* anomalies (``Split-<name>/SchemaDiff.pb``); nothing
downstream reads them, so a run on data that breaks the schema would go on to train and push.
:func:`AnomalyGate` reads them and fails listing every anomaly (split, feature, what the
schema expected); the pipeline makes Transform wait for it.
"""
# No ``from __future__ import annotations``: TFX parses the component's annotations as objects.
import os
from typing import List

from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from schemas.errors import UserError

ANOMALIES_FILE = "SchemaDiff.pb"


class DataAnomaliesError(UserError, RuntimeError):
    """ExampleValidator found anomalies; the message lists them."""


def describe(anomalies, split: str) -> List[str]:
    """One line per anomaly of a ``tensorflow_metadata`` ``Anomalies`` proto."""
    lines = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        detail = info.description or info.short_description
        lines.append(f"split {split!r}, feature {feature!r}: {info.short_description} "
                     f"({detail})")
    if anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        lines.append(f"split {split!r}, whole dataset: {info.short_description} "
                     f"({info.description})")
    return lines


def check_anomalies(uri: str, splits) -> None:
    """Raises :class:`DataAnomaliesError` if any split's anomalies file lists an anomaly.

    Raises:
      FileNotFoundError: A split has no anomalies file (ExampleValidator did not run on it).
    """
    import tensorflow as tf
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    problems = []
    for split in splits:
        path = os.path.join(uri, f"Split-{split}", ANOMALIES_FILE)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"anomaly gate: no {ANOMALIES_FILE} for split {split!r} "
                                    f"under {uri}")
        with tf.io.gfile.GFile(path, "rb") as f:
            problems += describe(anomalies_pb2.Anomalies.FromString(f.read()), split)
    if problems:
        raise DataAnomaliesError(
            f"ExampleValidator found {len(problems)} anomal{'y' if len(problems) == 1 else 'ies'}"
            f" against the schema; the pipeline stops before Transform and training:\n  "
            + "\n  ".join(problems))


@component
def AnomalyGate(  # noqa: N802  (TFX component names are classes)
        anomalies: InputArtifact[standard_artifacts.ExampleAnomalies]) -> None:
    """Fails the run when ExampleValidator found anomalies in any split (module docstring)."""
    check_anomalies(anomalies.uri, list(anomalies.splits))
