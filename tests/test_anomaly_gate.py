"""The anomaly gate: ExampleValidator's findings stop the pipeline, listed in the error."""
import os

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2

from pipeline.anomaly_gate import ANOMALIES_FILE, DataAnomaliesError, check_anomalies


def _write(root, split, anomalies):
    os.makedirs(root / f"Split-{split}", exist_ok=True)
    (root / f"Split-{split}" / ANOMALIES_FILE).write_bytes(anomalies.SerializeToString())


def test_clean_splits_pass(tmp_path):
    for split in ("train", "eval"):
        _write(tmp_path, split, anomalies_pb2.Anomalies())
    check_anomalies(str(tmp_path), ["train", "eval"])


def test_every_anomaly_is_listed_with_split_and_feature(tmp_path):
    _write(tmp_path, "train", anomalies_pb2.Anomalies())
    bad = anomalies_pb2.Anomalies()
    bad.anomaly_info["price"].short_description = "Unexpected data type"
    bad.anomaly_info["price"].description = "Expected data of type: FLOAT but got INT"
    bad.anomaly_info["device"].short_description = "Column dropped"
    bad.dataset_anomaly_info.short_description = "Low num examples in dataset."
    _write(tmp_path, "eval", bad)
    with pytest.raises(DataAnomaliesError) as err:
        check_anomalies(str(tmp_path), ["train", "eval"])
    text = str(err.value)
    assert "found 3 anomalies" in text and "stops before Transform and training" in text
    assert ("split 'eval', feature 'price': Unexpected data type (Expected data of type: FLOAT "
            "but got INT)") in text
    assert "split 'eval', feature 'device': Column dropped" in text
    assert "split 'eval', whole dataset: Low num examples in dataset." in text
    assert "'train'" not in text


def test_missing_split_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no SchemaDiff.pb for split 'test'"):
        check_anomalies(str(tmp_path), ["test"])
