"""TFX pipeline runs of their own (LocalDagRunner + DirectRunner): KAML with the ADM Beam
component, and runs stopped by bad input or by ExampleValidator anomalies.

Kept apart from test_pipeline_e2e.py (whose tests share one default-pipeline run) so that
pytest-xdist can run the two files on different workers."""
import glob
import os

import pytest
import tensorflow as tf

from pipeline import local_runner
from schemas import config as config_lib
from tests import fixtures
from transform.ingest import synthetic
from transform.ingest.validate import DataValidationError


@pytest.mark.slow
def test_bad_input_stops_before_any_component_runs(tmp_path):
    frame = synthetic.generate(30, seed=1)
    frame.loc[7, "click"] = 0
    frame.loc[7, "conversion"] = 1
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    cfg = config_lib.load("configs/synthetic_mmoe.yaml", {
        "data.path": str(bad), "pipeline.root": str(tmp_path / "root")})
    with pytest.raises(DataValidationError, match=r"bad\.csv.*row 8.*conversion"):
        local_runner.run(cfg)
    assert not os.path.exists(tmp_path / "root" / "pipeline")


@pytest.mark.slow
def test_kaml_pipeline_runs_adm_in_beam_and_pushes_a_selector(tmp_path):
    """ADM as a Beam component before StatisticsGen/Transform/Evaluator, per-action heads with
    HKE and the KAML recipe in run_fn, and a pushed model with the selector signature."""
    cfg = config_lib.load("configs/kaml.yaml", {
        "data.generate_rows": 3000, "train.epochs": 1, "train.batch_size": 256,
        "eval.min_auc": 0.0, "pipeline.root": str(tmp_path)})
    result = local_runner.run(cfg)
    assert result["pushed_model"]
    root = os.path.join(str(tmp_path), "pipeline")
    assert "AttributionDrivenMasking" in os.listdir(root)
    adm_files = glob.glob(os.path.join(root, "AttributionDrivenMasking", "adm_examples", "*",
                                       "Split-train", "*.gz"))
    assert adm_files
    example = tf.train.Example.FromString(next(iter(
        tf.data.TFRecordDataset(adm_files[0], compression_type="GZIP"))).numpy())
    assert {"adm_mask_0", "adm_original_4", "adm_count_2"} <= set(example.features.feature)
    heads = result["trainer"]["heads"]
    assert {"cvr", "ctcvr", "cvr_0", "cvr_4"} <= set(heads)
    loaded = tf.saved_model.load(result["pushed_model"])
    assert {"serving_default", "predict_raw", "select_cvr"} <= set(loaded.signatures)
    names = fixtures.exported_variable_names(result["pushed_model"])
    assert "cvr_4/hke/original/dense_0/kernel:0" in names
    assert not [n for n in names if "extended" in n]


@pytest.mark.slow
def test_anomalies_stop_the_pipeline_before_transform_and_training(tmp_path, capsys):
    from funnelrank import cli

    from transform.ingest import schema as schema_lib

    # The schema prepare derives for this data, with one feature's type changed.
    schema = open(schema_lib.write_schema(fixtures.synthetic_spec(),
                                          str(tmp_path / "derived.pbtxt"))).read()
    at = schema.index('name: "price"')
    schema = schema[:at] + schema[at:].replace("type: FLOAT", "type: INT", 1)
    (tmp_path / "schema.pbtxt").write_text(schema)
    config = tmp_path / "c.yaml"
    config.write_text(f"base: {os.path.abspath('configs/synthetic_mmoe.yaml')}\n"
                      f"data: {{generate_rows: 1500}}\n"
                      f"pipeline: {{root: {tmp_path / 'run'},\n"
                      f"           schema: {tmp_path / 'schema.pbtxt'}}}\n")
    assert cli.main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "ExampleValidator found" in err and "feature 'price'" in err
    ran = os.listdir(tmp_path / "run" / "pipeline")
    assert "ExampleValidator" in ran and "Transform" not in ran and "Trainer" not in ran
