"""The whole TFX pipeline on a few thousand synthetic rows (LocalDagRunner + DirectRunner)."""
import glob
import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from pipeline import local_runner
from schemas import config as config_lib
from tests import fixtures
from transform.ingest import synthetic

ROWS = 20_000  # enough for a trained model to beat an untrained one clearly


def _examples(frame, spec, with_labels: bool):
    out = []
    for row in frame.itertuples(index=False):
        feats = {}
        for key in spec.feature_keys + (spec.label_keys if with_labels else ()):
            value = getattr(row, key)
            if key in spec.dense_keys:
                feats[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
            else:
                feats[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
        out.append(tf.train.Example(features=tf.train.Features(feature=feats))
                   .SerializeToString())
    return out


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    cfg = config_lib.load("configs/synthetic_mmoe.yaml", {
        "data.generate_rows": ROWS, "train.epochs": 2, "train.batch_size": 256,
        "eval.min_ctr_auc": 0.0, "pipeline.root": str(root)})
    return cfg, local_runner.run(cfg)


@pytest.mark.slow
def test_pipeline_pushes_a_blessed_model_with_per_head_auc(pipeline_run):
    cfg, result = pipeline_run
    assert result["blessed"] is True
    pushed = result["pushed_model"]
    assert pushed and os.path.exists(os.path.join(pushed, "saved_model.pb"))
    assert os.path.dirname(pushed) == os.path.join(cfg.pipeline.root, "serving")
    for head in ("ctr", "ctcvr"):
        m = result["evaluation"][head]
        assert 0.0 <= m["auc"] <= 1.0
        assert m["example_count"] > 0.1 * ROWS
    trainer = result["trainer"]["heads"]  # run_fn's own eval-split report, GAUC included
    assert set(trainer) == {"ctr", "cvr", "ctcvr"}
    assert 0.0 <= trainer["ctr"]["gauc"] <= 1.0
    assert trainer["cvr"]["count"] < trainer["ctr"]["count"]  # cvr: clicked impressions only
    components = sorted(os.listdir(os.path.join(cfg.pipeline.root, "pipeline")))
    for name in ("CsvExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
                 "AnomalyGate", "Transform", "Trainer", "Evaluator", "Pusher"):
        assert name in components


@pytest.mark.slow
def test_pushed_model_serves_examples_without_labels_in_a_fresh_process(pipeline_run, tmp_path):
    cfg, result = pipeline_run
    spec = fixtures.synthetic_spec(cfg.data.num_actions)
    frame = synthetic.generate(50, seed=99)
    np.save(tmp_path / "with.npy", np.array(_examples(frame, spec, True), dtype=object))
    np.save(tmp_path / "without.npy", np.array(_examples(frame, spec, False), dtype=object))
    np.savez(tmp_path / "raw.npz", **{k: frame[k].to_numpy().astype(
        "float32" if k in spec.dense_keys else "int64") for k in spec.feature_keys})
    # A fresh interpreter that never imports the project: as TF Serving sees the model.
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        m = tf.saved_model.load({result['pushed_model']!r})
        f = m.signatures["serving_default"]
        a = f(examples=tf.constant(list(np.load({str(tmp_path / 'with.npy')!r},
                                                   allow_pickle=True))))
        b = f(examples=tf.constant(list(np.load({str(tmp_path / 'without.npy')!r},
                                                   allow_pickle=True))))
        raw = np.load({str(tmp_path / 'raw.npz')!r})
        c = m.signatures["predict_raw"](**{{k: tf.constant(raw[k]) for k in raw.files}})
        np.savez({str(tmp_path / 'out.npz')!r}, **{{"a_" + k: v.numpy() for k, v in a.items()}},
                 **{{"b_" + k: v.numpy() for k, v in b.items()}},
                 **{{"c_" + k: v.numpy() for k, v in c.items()}})
        print("OK", sorted(a))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=str(tmp_path), env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK ['ctcvr', 'ctr', 'cvr']" in proc.stdout
    out = np.load(tmp_path / "out.npz")
    for head in ("ctr", "cvr", "ctcvr"):
        assert out["a_" + head].shape == (50,)
        np.testing.assert_allclose(out["a_" + head], out["b_" + head], atol=1e-7)
        np.testing.assert_allclose(out["c_" + head], out["a_" + head], atol=1e-6)  # predict_raw
        assert np.all((out["a_" + head] >= 0) & (out["a_" + head] <= 1))
    np.testing.assert_allclose(out["a_ctcvr"], out["a_ctr"] * out["a_cvr"], rtol=1e-5)


@pytest.mark.slow
def test_served_predictions_match_the_trained_network_on_beam_transformed_data(pipeline_run):
    """The serving graph (tf.Transform layer in TF) reproduces the network applied to the
    Transform component's Beam output, to 1e-5."""
    cfg, _ = pipeline_run
    root = os.path.join(cfg.pipeline.root, "pipeline")
    model_dir = max(glob.glob(os.path.join(root, "Trainer", "model", "*", "Format-Serving")))
    transformed = glob.glob(os.path.join(root, "Transform", "transformed_examples", "*",
                                         "Split-eval", "*.gz"))
    raw = glob.glob(os.path.join(root, "CsvExampleGen", "examples", "*", "Split-eval", "*.gz"))
    loaded = tf.saved_model.load(model_dir)
    serve = loaded.signatures["serving_default"]
    raw_records = [r.numpy() for r in tf.data.TFRecordDataset(raw, "GZIP")]
    served = serve(examples=tf.constant(raw_records))["ctr"].numpy()
    network = tf.keras.models.load_model(model_dir)
    spec = {}
    for name, inp in zip(network.input_names, network.inputs):
        spec[name] = tf.io.FixedLenFeature([1], inp.dtype)
    xf = [tf.io.parse_single_example(r, spec)
          for r in tf.data.TFRecordDataset(transformed, "GZIP")]
    batch = {k: tf.stack([x[k] for x in xf]) for k in spec}
    direct = network(batch, training=False)["ctr"].numpy()
    assert len(served) == len(direct) > 0
    np.testing.assert_allclose(np.sort(served), np.sort(direct), atol=1e-5)


@pytest.mark.slow
def test_man_two_stage_training_runs_inside_run_fn(pipeline_run, tmp_path, caplog):
    """MAN's uncertainty recipe, early stopping on the eval split and the meta stage, all in
    the TFX Trainer's run_fn, on the Transform output of the pipeline run above (meta rows are
    read back from the transformed examples), with the train split parsed into memory
    (``train.in_memory``)."""
    from tfx.components.trainer.fn_args_utils import FnArgs

    from pipeline.common import custom_config
    from trainer.tfx_trainer import run_fn

    cfg, _ = pipeline_run
    root = os.path.join(cfg.pipeline.root, "pipeline", "Transform")
    graph = sorted(glob.glob(os.path.join(root, "transform_graph", "*")))[-1]
    examples = sorted(glob.glob(os.path.join(root, "transformed_examples", "*")))[-1]
    man = config_lib.load("configs/man.yaml", {
        "train.epochs": 2, "train.batch_size": 256, "train.in_memory": True, "meta.steps": 3,
        "meta.support_size": 32, "meta.query_size": 32})
    caplog.set_level(logging.INFO, logger="trainer.tfx_trainer")
    run_fn(FnArgs(
        train_files=[os.path.join(examples, "Split-train", "*")],
        eval_files=[os.path.join(examples, "Split-eval", "*")], transform_output=graph,
        serving_model_dir=str(tmp_path / "serving"), model_run_dir=str(tmp_path / "run"),
        custom_config=custom_config(man, fixtures.synthetic_spec())))
    trainer = json.load(open(tmp_path / "run" / "metrics.json"))
    parsed = [r.getMessage() for r in caplog.records if "train.in_memory:" in r.getMessage()]
    train_rows = sum(1 for f in glob.glob(os.path.join(examples, "Split-train", "*"))
                     for _ in tf.data.TFRecordDataset(f, compression_type="GZIP"))
    assert parsed and parsed[0].startswith(f"train.in_memory: {train_rows} rows")
    assert trainer["meta"]["steps"] == 3 and trainer["meta"]["partitions"] >= 2
    assert trainer["early_stopping"]["epochs_run"] <= 2
    assert set(trainer["objective"]) == {"ctr", "ctcvr"}
    names = fixtures.exported_variable_names(str(tmp_path / "serving"))
    assert "backbone/attention/query/kernel:0" in names
    assert not [n for n in names if "log_sigma" in n or "uncertainty" in n]


@pytest.mark.slow
def test_a_worse_model_is_not_pushed(pipeline_run):
    """A second run into the same root is evaluated against the last blessed model (resolved
    from ML Metadata); one that barely trained loses more than eval.max_ctr_auc_drop of CTR
    AUC, is not blessed and is not pushed, whatever min_ctr_auc says."""
    cfg, first = pipeline_run
    assert first["pushed_model"]
    worse = config_lib.load("configs/synthetic_mmoe.yaml", {
        "data.generate_rows": ROWS, "train.epochs": 1, "train.batch_size": 256,
        "train.learning_rate": 1e-9, "eval.min_ctr_auc": 0.0, "eval.max_ctr_auc_drop": 0.005,
        "pipeline.root": cfg.pipeline.root})
    before = sorted(os.listdir(os.path.join(cfg.pipeline.root, "serving")))
    result = local_runner.run(worse)
    assert result["blessed"] is False and result["pushed_model"] is None
    assert sorted(os.listdir(os.path.join(cfg.pipeline.root, "serving"))) == before
    assert result["evaluation"]["ctr"]["auc"] < first["evaluation"]["ctr"]["auc"] - 0.005
