"""Pipeline gates: ExampleValidator's findings stop the run (listed in the error); the
Evaluator blesses only above a minimum AUC and not far below the last blessed model."""
import os

import pytest
import tensorflow_model_analysis as tfma
from tensorflow_metadata.proto.v0 import anomalies_pb2

from pipeline.anomaly_gate import ANOMALIES_FILE, DataAnomaliesError, check_anomalies
from pipeline.pipeline import eval_config
from schemas import tasks as tasks_lib


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


def test_eval_config_gates_on_min_auc_and_on_the_baseline_drop():
    heads = tasks_lib.heads(("ctr", "cvr"), True)
    labels = {"ctr": "click", "cvr": "conversion"}
    with_baseline = eval_config(heads, labels, "ctr", 0.6, max_auc_drop=0.01)
    assert [s.name for s in with_baseline.model_specs] == ["candidate", "baseline"]
    assert with_baseline.model_specs[1].is_baseline
    ctr = with_baseline.metrics_specs[0]
    assert list(ctr.output_names) == ["ctr"]
    auc = ctr.metrics[0]
    assert auc.class_name == "AUC"
    threshold = auc.per_slice_thresholds[0].threshold
    assert threshold.value_threshold.lower_bound.value == 0.6
    assert threshold.change_threshold.absolute.value == -0.01
    assert threshold.change_threshold.direction == tfma.MetricDirection.HIGHER_IS_BETTER
    assert not [m for spec in with_baseline.metrics_specs[1:] for m in spec.metrics
                if m.per_slice_thresholds]  # cvr, ctcvr: reported, never gating
    alone = eval_config(heads, labels, "ctr", 0.55)
    assert len(alone.model_specs) == 1
    alone_threshold = alone.metrics_specs[0].metrics[0].per_slice_thresholds[0].threshold
    assert alone_threshold.value_threshold.lower_bound.value == 0.55
    assert not alone_threshold.HasField("change_threshold")