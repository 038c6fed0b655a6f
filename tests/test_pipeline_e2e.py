"""The whole TFX pipeline on a few thousand synthetic rows (LocalDagRunner + DirectRunner)."""
import glob
import json
import logging
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from funnelrank import layers
from pipeline import local_runner
from schemas import config as config_lib
from tests import fixtures
from transform.ingest import synthetic

ROWS = 20_000  # enough for a trained model to beat an untrained one clearly
# A real bar: on these rows the fast path's ctr AUC is about 0.63 (an untrained model: 0.5),
# so the blessing can fail, and does for a model that did not train (the last test).
MIN_AUC = 0.6
OVERRIDES = {"data.generate_rows": ROWS, "train.epochs": 2, "train.batch_size": 256,
             "eval.min_auc": MIN_AUC, "pipeline.enable_cache": True}


def _examples(frame, spec, with_labels: bool):
    out = []
    for row in frame.itertuples(index=False):
        feats = {}
        for key in spec.feature_keys + (tuple(spec.label_keys.values()) if with_labels else ()):
            value = getattr(row, key)
            if key in spec.dense_keys:
                feats[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
            else:
                feats[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
        out.append(tf.train.Example(features=tf.train.Features(feature=feats))
                   .SerializeToString())
    return out


def _sets(overrides):
    """``--set key=value`` arguments of the CLI for ``overrides``."""
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """The default config through ``funnelrank run`` as a user starts it: a fresh process, no
    TF log level set, ``pipeline.enable_cache`` on (a later run into the same root reuses what
    did not change). Returns the config, the run's result as ``local_runner.run`` reports it
    (read back from the root) and the lines it printed (stdout, then stderr)."""
    root = tmp_path_factory.mktemp("e2e")
    cfg = config_lib.load("configs/synthetic_mmoe.yaml",
                          {**OVERRIDES, "pipeline.root": str(root / "work")})
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run(
        [sys.executable, "-m", "funnelrank.cli", "run", "--root", cfg.pipeline.root]
        + _sets(OVERRIDES),
        cwd=root, env=env, capture_output=True, text=True, timeout=1500)
    lines = (proc.stdout + proc.stderr).splitlines()
    assert proc.returncode == 0, "\n".join(lines[-40:])
    pipeline_root = os.path.join(cfg.pipeline.root, "pipeline")
    served = glob.glob(os.path.join(cfg.pipeline.root, "serving", "*"))
    result = {"pushed_model": max(served) if served else None,
              "blessed": local_runner.blessed(pipeline_root),
              "evaluation": local_runner.read_evaluation(pipeline_root),
              "trainer": local_runner.read_trainer_metrics(pipeline_root)}
    return cfg, result, lines


def _executions(metadata_path):
    """Component -> the states of its executions, oldest first (``COMPLETE``, ``CACHED``)."""
    from ml_metadata.proto import metadata_store_pb2

    out = {}
    for name, e in local_runner.component_executions(local_runner.open_metadata(metadata_path)):
        out.setdefault(name, []).append(
            metadata_store_pb2.Execution.State.Name(e.last_known_state))
    return out


@pytest.mark.slow
def test_run_prints_at_most_60_lines_and_keeps_the_full_log(pipeline_run):
    """What the user sees of the run above: a line per component and the result, not the
    libraries' logs (those are in the log file under the root)."""
    cfg, _, lines = pipeline_run
    assert len(lines) <= 60, "\n".join(lines)
    components = [line for line in lines if re.fullmatch(r"\[\d+/\d+\] \S+ done in \d+ s", line)]
    assert len(components) == 10, "\n".join(lines)  # 9 components + the baseline resolver
    assert any(line.startswith("pushed model: ") for line in lines)
    log_line = [line for line in lines if "full log: " in line][-1]
    log_file = log_line.split("full log: ")[1]
    assert log_file.startswith(os.path.join(cfg.pipeline.root, "logs"))
    text = open(log_file).read()
    assert len(text.splitlines()) > 10 * len(lines)  # the libraries' output is there
    assert "Component Transform is running" in text
    assert "Attempting to infer TFX Python dependency" not in text  # no TFX sdist built


@pytest.mark.slow
def test_pipeline_pushes_a_blessed_model_with_per_head_auc(pipeline_run):
    cfg, result, _ = pipeline_run
    assert result["blessed"] is True
    pushed = result["pushed_model"]
    assert pushed and os.path.exists(os.path.join(pushed, "saved_model.pb"))
    assert os.path.dirname(pushed) == os.path.join(cfg.pipeline.root, "serving")
    assert result["evaluation"]["ctr"]["auc"] > MIN_AUC  # the bar the blessing applied
    for head in ("ctr", "cvr", "ctcvr"):
        assert 0.5 < result["evaluation"][head]["auc"] <= 1.0, head
    # TFMA scores the post-click cvr on clicked rows only (weighted by the click column).
    assert result["evaluation"]["cvr"]["example_count"] < \
        0.2 * result["evaluation"]["ctr"]["example_count"]
    trainer = result["trainer"]["heads"]  # run_fn's own eval-split report, GAUC included
    assert set(trainer) == {"ctr", "cvr", "ctcvr"}
    assert 0.5 < trainer["ctr"]["gauc"] <= 1.0
    assert trainer["cvr"]["count"] < trainer["ctr"]["count"]  # cvr: clicked impressions only
    # TFMA and the Trainer score the same eval rows with the same model.
    assert result["evaluation"]["ctr"]["auc"] == pytest.approx(trainer["ctr"]["auc"], abs=2e-3)
    components = sorted(os.listdir(os.path.join(cfg.pipeline.root, "pipeline")))
    for name in ("ImportExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
                 "AnomalyGate", "Transform", "Trainer", "Evaluator", "Pusher"):
        assert name in components


@pytest.mark.slow
def test_both_training_paths_write_one_metrics_shape_on_the_same_rows(pipeline_run, tmp_path):
    """Issue 15: ``funnelrank train`` and the TFX Trainer on the same config write metrics.json
    with the same fields, the same heads and head fields, and the same split row counts (one
    split, made once by ``prepare``); their AUCs agree to within the noise of two runs whose
    input order differs (TFX reads its examples in its own order)."""
    cfg, result, _ = pipeline_run
    tfx_metrics = result["trainer"]
    # A fresh process as for the run above: one device (this worker has 2 logical CPUs).
    proc = subprocess.run(
        [sys.executable, "-m", "funnelrank.cli", "train", "--out", str(tmp_path / "fast")]
        + _sets({**OVERRIDES, "pipeline.root": str(tmp_path / "work")}),
        cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fast_metrics = json.load(open(tmp_path / "fast" / "metrics.json"))
    assert set(fast_metrics) == set(tfx_metrics)
    assert set(fast_metrics["heads"]) == set(tfx_metrics["heads"]) == {"ctr", "cvr", "ctcvr"}
    for head in fast_metrics["heads"]:
        assert set(fast_metrics["heads"][head]) == set(tfx_metrics["heads"][head]), head
        assert fast_metrics["heads"][head]["count"] == tfx_metrics["heads"][head]["count"], head
        assert fast_metrics["validation_heads"][head]["count"] == \
            tfx_metrics["validation_heads"][head]["count"], head
    assert fast_metrics["validation_heads"]["ctr"]["count"] == fast_metrics["rows"]["validation"]
    assert fast_metrics["rows"] == tfx_metrics["rows"]
    assert set(fast_metrics["rows"]) == {"train", "validation", "eval"}
    assert fast_metrics["steps"] == tfx_metrics["steps"]
    assert fast_metrics["heads"]["ctr"]["auc"] == pytest.approx(
        tfx_metrics["heads"]["ctr"]["auc"], abs=0.03)


@pytest.mark.slow
def test_pushed_model_serves_examples_without_labels_in_a_fresh_process(pipeline_run, tmp_path):
    cfg, result, _ = pipeline_run
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
    """The serving graph (tf.Transform in TF) on the raw eval examples reproduces, row by row
    and on every head, the network applied to the Transform component's Beam output. Beam may
    write rows in another order: each Beam row is matched to its raw row by its transformed
    values (the z-scored dense features identify a row), never by sorting predictions."""
    cfg, _, _ = pipeline_run
    root = os.path.join(cfg.pipeline.root, "pipeline")
    model_dir = max(glob.glob(os.path.join(root, "Trainer", "model", "*", "Format-Serving")))
    transformed = glob.glob(os.path.join(root, "Transform", "transformed_examples", "*",
                                         "Split-eval", "*.gz"))
    raw = glob.glob(os.path.join(root, "ImportExampleGen", "examples", "*", "Split-eval",
                                 "*.gz"))
    assert raw and transformed
    loaded = tf.saved_model.load(model_dir)
    raw_records = [r.numpy() for r in tf.data.TFRecordDataset(raw, "GZIP")]
    served = {k: v.numpy() for k, v in loaded.signatures["serving_default"](
        examples=tf.constant(raw_records)).items()}
    network = tf.keras.models.load_model(model_dir, custom_objects=layers.custom_objects())
    spec = {name: tf.io.FixedLenFeature([1], inp.dtype)
            for name, inp in zip(network.input_names, network.inputs)}
    xf = [tf.io.parse_single_example(r, spec)
          for r in tf.data.TFRecordDataset(transformed, "GZIP")]
    beam = {k: tf.stack([x[k] for x in xf]).numpy() for k in spec}
    assert len(raw_records) == len(xf) > 100
    dense = sorted(k for k in spec if spec[k].dtype == tf.float32)
    sparse = sorted(k for k in spec if spec[k].dtype != tf.float32)

    def keys(columns):
        return [tuple(np.round(columns[k][i, 0], 4) for k in dense) +
                tuple(int(columns[k][i, 0]) for k in sparse) for i in range(len(xf))]

    # The same transformed values, computed in TF from the raw records by the Transform graph:
    in_graph = _transform_in_graph(root, raw_records, spec)
    position = {key: i for i, key in enumerate(keys(in_graph))}
    order = [position[key] for key in keys(beam)]  # KeyError: a Beam row no raw row gives
    assert sorted(order) == list(range(len(xf)))
    direct = network({k: tf.constant(v) for k, v in beam.items()}, training=False)
    for head in ("ctr", "cvr", "ctcvr"):
        np.testing.assert_allclose(served[head][order], direct[head].numpy().reshape(-1),
                                   atol=1e-5, err_msg=head)


def _transform_in_graph(pipeline_root, raw_records, spec):
    """The Transform graph's outputs for serialized raw examples, in their order."""
    import tensorflow_transform as tft

    graph = max(glob.glob(os.path.join(pipeline_root, "Transform", "transform_graph", "*")))
    output = tft.TFTransformOutput(graph)
    parsed = tf.io.parse_example(tf.constant(raw_records), output.raw_feature_spec())
    out = output.transform_raw_features(parsed)
    return {k: tf.reshape(out[k], [-1, 1]).numpy() for k in spec}


@pytest.mark.slow
def test_man_two_stage_training_runs_inside_run_fn(pipeline_run, tmp_path, caplog):
    """MAN's uncertainty recipe, early stopping on the eval split and the meta stage, all in
    the TFX Trainer's run_fn, on the Transform output of the pipeline run above (meta rows are
    read back from the transformed examples), with the train split parsed into memory
    (``train.in_memory``)."""
    from tfx.components.trainer.fn_args_utils import FnArgs

    from trainer.tfx_trainer import run_fn
    from transform.ingest import prepare

    cfg, _, _ = pipeline_run
    root = os.path.join(cfg.pipeline.root, "pipeline", "Transform")
    graph = sorted(glob.glob(os.path.join(root, "transform_graph", "*")))[-1]
    examples = sorted(glob.glob(os.path.join(root, "transformed_examples", "*")))[-1]
    man = config_lib.load("configs/man.yaml", {
        "train.epochs": 1, "train.batch_size": 256, "train.in_memory": True, "meta.steps": 3,
        "meta.support_size": 32, "meta.query_size": 32})
    caplog.set_level(logging.INFO, logger="trainer.session")
    run_fn(FnArgs(
        train_files=[os.path.join(examples, "Split-train", "*")],
        eval_files=[os.path.join(examples, "Split-validation", "*")], transform_output=graph,
        serving_model_dir=str(tmp_path / "serving"), model_run_dir=str(tmp_path / "run"),
        custom_config=config_lib.to_custom_config(man, prepare.read_spec(
            os.path.join(cfg.pipeline.root, "data", "prepared")))))
    trainer = json.load(open(tmp_path / "run" / "metrics.json"))
    parsed = [r.getMessage() for r in caplog.records
              if r.getMessage().startswith("train split parsed into memory:")]
    train_rows = sum(1 for f in glob.glob(os.path.join(examples, "Split-train", "*"))
                     for _ in tf.data.TFRecordDataset(f, compression_type="GZIP"))
    assert parsed and parsed[0].startswith(f"train split parsed into memory: {train_rows} rows")
    assert trainer["meta"]["steps"] == 3 and trainer["meta"]["partitions"] >= 2
    assert trainer["early_stopping"]["epochs_run"] == 1
    assert set(trainer["objective"]) == {"ctr", "ctcvr"}
    names = fixtures.exported_variable_names(str(tmp_path / "serving"))
    assert "backbone/attention/query/kernel:0" in names
    assert not [n for n in names if "log_sigma" in n or "uncertainty" in n]


@pytest.mark.slow
def test_a_worse_model_is_not_pushed(pipeline_run):
    """A second run into the same root is evaluated against the last blessed model (resolved
    from ML Metadata); one that barely trained loses more than eval.max_auc_drop of ctr AUC,
    is not blessed and is not pushed, whatever eval.min_auc says. Only training settings
    changed, so the cached run reuses everything up to Transform (the prepared data is kept
    as it was, Transform gets only the dataset spec) and trains, evaluates and pushes anew."""
    cfg, first, _ = pipeline_run
    assert first["pushed_model"]
    worse = config_lib.load("configs/synthetic_mmoe.yaml", {
        # Both optimizers barely step: the shipped config trains the tables with their own;
        # and no logistic-regression start (it alone would be a good model).
        **OVERRIDES, "train.epochs": 1, "train.learning_rate": 1e-9,
        "model.wide_init": None, "model.wide_frozen": False,
        "train.sparse_learning_rate": 1e-9, "eval.min_auc": 0.0,
        "eval.max_auc_drop": 0.005, "pipeline.root": cfg.pipeline.root})
    before = sorted(os.listdir(os.path.join(cfg.pipeline.root, "serving")))
    result = local_runner.run(worse)
    assert result["blessed"] is False and result["pushed_model"] is None
    assert sorted(os.listdir(os.path.join(cfg.pipeline.root, "serving"))) == before
    assert result["evaluation"]["ctr"]["auc"] < first["evaluation"]["ctr"]["auc"] - 0.005
    states = _executions(os.path.join(cfg.pipeline.root, "metadata.db"))
    reused = ("ImportExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator",
              "AnomalyGate", "Transform")
    for name in reused:
        assert states[name] == ["COMPLETE", "CACHED"], (name, states)
    assert sorted(result["cached"]) == sorted(reused)
    assert result["last_pushed_model"] == first["pushed_model"]
    for name in ("Trainer", "Evaluator", "Pusher"):
        assert states[name] == ["COMPLETE", "COMPLETE"], (name, states)
