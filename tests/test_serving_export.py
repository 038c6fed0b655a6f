"""The inference-only SavedModel (serving/): served = trained row by row, OOV, missing values,
warmup, serve-check, and the export's hardening (issue 17).

Two datasets are trained by ``funnelrank train`` from a config alone, once per module: int ids
(the ctr/cvr funnel, an optional id and an optional price) and string ids with missing values
(the census-like CSV of ``tests.fixtures``, two unrelated tasks). Each is exported twice: by
``funnelrank export`` (``export_from_preprocessor``) and by the TFX Trainer's exporter
(``export_serving_model``) behind a tf.Transform output fitted here on the same prepared train
split. A single subprocess that never imports the project then answers every served-output
question, through ``serving_default`` and ``predict_raw`` with the requests the client builds.
"""
import argparse
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from funnelrank import cli
from funnelrank.commands import serving as commands
from funnelrank.commands import train as fast
from schemas import config as config_lib
from schemas import features
from serving import client, export, serve_check, versioning, warmup
from serving.signatures import PREDICT_RAW, SERVING_DEFAULT
from tests import fixtures
from trainer.data import from_arrays
from trainer.session import fit_model

TRAINING_ONLY = ("optimizer", "adam", "log_sigma", "relatedness", "iter")
MODEL = {"backbone": "mmoe", "backbone_args": {"num_experts": 2, "expert_units": [8]},
         "embedding_dim": 4, "tower_units": [8]}
TRAIN = {"batch_size": 128, "epochs": 1, "learning_rate": 0.02, "seed": 3}
UNKNOWN_USER, UNKNOWN_ITEM = 10_000, -7
UNSEEN_TEXT = "Doctorate, honoris causa"
EXPORTERS = ("preprocessor", "transform")
CASES = ("int_ids", "string_ids")


# --------------------------------------------------------------------------- the two datasets
def _int_frame(rows: int, seed: int) -> pd.DataFrame:
    """``fixtures.tiny_frame`` with ~5% of ``item`` and of ``price`` missing."""
    frame = fixtures.tiny_frame(rows, seed)
    rng = np.random.default_rng(seed + 100)
    item = pd.array(frame["item"], dtype="Int64")
    item[rng.random(rows) < 0.05] = pd.NA
    frame["item"] = item
    frame.loc[rng.random(rows) < 0.05, "price"] = np.nan
    return frame


def _int_requests() -> pd.DataFrame:
    """Request rows: unknown ids (rows 0-4), a missing item (5-9), a missing price (10-14)."""
    frame = fixtures.tiny_frame(60, seed=11)
    frame["item"] = pd.array(frame["item"], dtype="Int64")
    frame.loc[0:4, "user"] = UNKNOWN_USER
    frame.loc[0:4, "item"] = UNKNOWN_ITEM
    frame.loc[5:9, "item"] = pd.NA
    frame.loc[10:14, "price"] = np.nan
    return frame


def _string_requests() -> pd.DataFrame:
    """Census rows (empty strings and NaN are missing values) plus unseen texts (rows 0-4)
    and a missing age (rows 10-12)."""
    frame = fixtures.census_frame(60, seed=9)
    for key in ("education", "occupation"):
        frame[key] = frame[key].astype(object).where(frame[key] != "", None)
    frame.loc[0:4, "education"] = UNSEEN_TEXT
    frame.loc[0:4, "region"] = "Atlantis"
    frame.loc[10:12, "age"] = np.nan
    return frame


def _rows(frame: pd.DataFrame):
    """Client rows: NA/NaN -> None, numpy scalars -> Python (labels stay in: ignored)."""
    out = []
    for record in frame.astype(object).to_dict("records"):
        out.append({k: None if v is None or v is pd.NA or (isinstance(v, float) and v != v)
                    else v for k, v in record.items()})
    return out


def _train(kind: str, root) -> dict:
    if kind == "int_ids":
        frame = _int_frame(1200, seed=0)
        data = {"features": {"sparse": ["user", "item"], "dense": ["price"]},
                "labels": {"ctr": "click", "cvr": "conversion"}}
        requests = _int_requests()
    else:
        frame = fixtures.census_frame(1200, seed=0)
        data = {k: fixtures.CENSUS_CONFIG["data"][k] for k in ("features", "labels")}
        requests = _string_requests()
    csv = str(root / "data.csv")
    frame.to_csv(csv, index=False, na_rep="")
    cfg = config_lib.from_dict({"name": kind, "model": MODEL, "train": TRAIN,
                                "data": {"adapter": "csv", "path": csv, **data}})
    out = root / "train"
    fast.train(cfg, str(out))
    network, pre = commands.load_trained_network(str(out))
    return {"kind": kind, "root": root, "csv": csv, "cfg": cfg, "train_dir": out,
            "pre": pre, "network": network, "requests": requests}


def _tft_output(run: dict):
    """tf.Transform fitted by Beam on the prepared train split of ``run`` (as the Transform
    component does: the derived schema, the prepared tf.Examples, ``preprocessing_fn``)."""
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io
    from tfx_bsl.public import tfxio

    from schemas.config import SPEC_KEY
    from transform.ingest import examples, schema
    from transform.preprocessing import preprocessing_fn

    spec = run["pre"].spec
    prepared = run["train_dir"] / "data" / "prepared"
    files = examples.split_files(str(prepared), "train")
    assert files, prepared
    raw_schema = schema.schema_from_spec(spec)
    source = tfxio.TFExampleRecord(file_pattern=files, schema=raw_schema,
                                   telemetry_descriptors=["test"])
    fn = functools.partial(preprocessing_fn,
                           custom_config={SPEC_KEY: features.spec_to_dict(spec)})
    out = str(run["root"] / "tft")
    with beam.Pipeline() as pipeline:
        with tft_beam.Context(temp_dir=str(run["root"] / "tft_tmp"), force_tf_compat_v1=False):
            raw = pipeline | source.BeamSource()
            transform_fn = (raw, source.TensorAdapterConfig()) | tft_beam.AnalyzeDataset(fn)
            _ = transform_fn | tft_beam.WriteTransformFn(out)
    # The raw schema beside it, as the Transform component writes it (raw_feature_spec()).
    metadata_io.write_metadata(dataset_metadata.DatasetMetadata(raw_schema),
                               os.path.join(out, tft.TFTransformOutput.RAW_METADATA_DIR))
    return tft.TFTransformOutput(out)


_RUNS = {}


def _run(kind: str, factory) -> dict:
    """The trained and exported ``kind`` run, built once per test session."""
    if kind in _RUNS:
        return _RUNS[kind]
    run = _train(kind, factory.mktemp(kind))
    base = run["root"] / "base"
    rc = commands.export_main(argparse.Namespace(
        model=str(run["train_dir"]), out=str(base), version=None, name="tiny",
        warmup_csv=run["csv"]))
    assert rc == 0
    run["base"] = base
    run["dirs"] = {"preprocessor": versioning.latest_version_dir(str(base))}
    network, _ = commands.load_trained_network(str(run["train_dir"]))  # a fresh copy
    run["dirs"]["transform"] = export.export_serving_model(
        network, _tft_output(run), run["pre"].spec, str(run["root"] / "tfx" / "1"))
    _RUNS[kind] = run
    return run


@pytest.fixture(scope="module", params=CASES)
def run(request, tmp_path_factory):
    return _run(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def int_run(tmp_path_factory):
    return _run("int_ids", tmp_path_factory)


@pytest.fixture(scope="module")
def string_run(tmp_path_factory):
    return _run("string_ids", tmp_path_factory)


# --------------------------------------------------------------------------- served outputs
def _expected(run: dict, frame: pd.DataFrame):
    """``{head: [N]}`` of the trained network on the in-process preprocessing of ``frame``."""
    network = run["network"]
    xf = run["pre"].transform(frame)
    return {h: v.numpy() for h, v in network({k: xf[k] for k in network.input_names},
                                              training=False).items()}


def _raw_rows(run: dict):
    """Indices of the request rows predict_raw can carry (no missing int64 id)."""
    types = client.feature_types_from_spec(run["pre"].spec)
    rows = _rows(run["requests"])
    return [i for i, r in enumerate(rows)
            if all(r[k] is not None for k, t in types.items() if t == client.INT64)]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Outputs of every export, computed in a fresh interpreter without the project."""
    from tensorflow_serving.apis import predict_pb2

    root = tmp_path_factory.mktemp("served")
    jobs = {}
    for kind in CASES:
        run = _run(kind, tmp_path_factory)
        spec = run["pre"].spec
        types = client.feature_types_from_spec(spec)
        rows = _rows(run["requests"])
        requests = {
            SERVING_DEFAULT: client.grpc_request(rows, types, "m", optional=spec.optional_keys),
            PREDICT_RAW: client.grpc_request([rows[i] for i in _raw_rows(run)], types, "m",
                                             signature_name=PREDICT_RAW,
                                             optional=spec.optional_keys)}
        required = [k for k in types if k not in spec.optional_keys][0]
        missing = client.serialize_examples(
            rows[:2], {k: t for k, t in types.items() if k != required}, spec.optional_keys)
        requests["missing"] = predict_pb2.PredictRequest()
        requests["missing"].model_spec.signature_name = SERVING_DEFAULT
        requests["missing"].inputs["examples"].CopyFrom(
            tf.make_tensor_proto(missing, dtype=tf.string, shape=[2]))
        for exporter, model_dir in run["dirs"].items():
            for name, request in requests.items():
                path = root / f"{kind}.{exporter}.{name}.pb"
                path.write_bytes(request.SerializeToString())
                jobs[f"{kind}.{exporter}.{name}"] = (model_dir, str(path))
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, tensorflow as tf
        from tensorflow_serving.apis import predict_pb2
        jobs = json.loads({json.dumps(jobs)!r})
        out, report, models = {{}}, {{"errors": {{}}, "signatures": {{}}}}, {{}}
        for job, (model_dir, path) in sorted(jobs.items()):
            if model_dir not in models:
                models[model_dir] = tf.saved_model.load(model_dir, tags=["serve"])
            m = models[model_dir]
            report["signatures"][job] = sorted(m.signatures)
            request = predict_pb2.PredictRequest.FromString(open(path, "rb").read())
            fn = m.signatures[request.model_spec.signature_name]
            feeds = {{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}}
            try:
                for head, value in fn(**feeds).items():
                    out[job + "." + head] = value.numpy()
            except Exception as e:
                report["errors"][job] = str(e)[:2000]
        np.savez({str(root / 'out.npz')!r}, **out)
        report["project_modules"] = sorted(
            n for n in sys.modules if n.split(".")[0] in (
                "trainer", "serving", "schemas", "funnelrank", "transform", "pipeline", "tests"))
        print(json.dumps(report))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.pop("TF_USE_LEGACY_KERAS", None)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=str(root), env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return report, dict(np.load(root / "out.npz"))


def test_fresh_process_without_project_code_serves_both_signatures(served):
    report, _ = served
    assert report["project_modules"] == []
    assert len(report["signatures"]) == len(CASES) * len(EXPORTERS) * 3
    for job, names in report["signatures"].items():
        assert names == [PREDICT_RAW, SERVING_DEFAULT], job


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("signature", [SERVING_DEFAULT, PREDICT_RAW])
def test_served_outputs_equal_the_trained_network_row_by_row(run, served, exporter, signature):
    report, out = served
    job = f"{run['kind']}.{exporter}.{signature}"
    assert job not in report["errors"], report["errors"].get(job)
    rows = list(range(len(run["requests"]))) if signature == SERVING_DEFAULT else _raw_rows(run)
    if signature == PREDICT_RAW and run["kind"] == "int_ids":
        assert len(rows) == len(run["requests"]) - 5  # the rows without item can't be sent
    want = _expected(run, run["requests"])
    heads = {"int_ids": ["ctcvr", "ctr", "cvr"], "string_ids": ["income", "married"]}
    assert sorted(want) == heads[run["kind"]]
    assert sorted(k[len(job) + 1:] for k in out if k.startswith(job + ".")) == sorted(want)
    for head, values in want.items():
        got, expected = out[f"{job}.{head}"], values[rows]
        assert got.shape == (len(rows),), (head, got.shape)
        # Rows differ from each other, so a served row compared with another row would fail.
        assert np.abs(expected - np.roll(expected, 1)).max() > 1e-3, head
        for i, row in enumerate(rows):
            assert abs(float(got[i]) - float(expected[i])) <= 1e-5, (
                f"{head}: request row {row} served {got[i]:.6f}, trained network "
                f"{expected[i]:.6f}")


def test_unknown_ids_go_to_the_oov_bucket(run):
    pre, frame = run["pre"], run["requests"].iloc[:5]
    xf = pre.transform(frame)
    unknown = {"int_ids": ("user", "item"), "string_ids": ("education", "region")}
    for key in unknown[run["kind"]]:  # the reference itself maps them to OOV
        assert np.all(xf[features.transformed_name(key)] == len(pre.vocabularies[key])), key
    # ...and served == reference on these rows: test_served_outputs_equal_... rows 0-4


def test_missing_values_are_served_as_in_training(run):
    """The reference maps a missing id to the vocabulary entry of ``""`` (its own value, not
    OOV) and a missing dense value to 0 (the mean); served == reference on those rows."""
    pre, frame = run["pre"], run["requests"]
    xf = pre.transform(frame)
    missing_id = "item" if run["kind"] == "int_ids" else "education"
    dense = "price" if run["kind"] == "int_ids" else "age"
    absent = frame[missing_id].isna().to_numpy()
    assert absent.sum() >= 3 and frame[dense].isna().sum() >= 3
    vocab = pre.vocabularies[missing_id]
    assert "" in vocab
    assert np.all(xf[features.transformed_name(missing_id)][absent] == vocab.index(""))
    assert np.all(xf[features.transformed_name(dense)][frame[dense].isna().to_numpy()] == 0)
    assert set(pre.spec.optional_keys) >= {missing_id, dense}


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_a_request_missing_a_feature_fails_naming_it(run, served, exporter):
    report, _ = served
    spec = run["pre"].spec
    required = [k for k in spec.feature_keys if k not in spec.optional_keys][0]
    error = report["errors"].get(f"{run['kind']}.{exporter}.missing")
    assert error and required in error
    with pytest.raises(client.RequestError, match=f"row 0: missing feature '{required}'"):
        client.serialize_examples([{k: 1 for k in spec.feature_keys if k != required}],
                                  client.feature_types_from_spec(spec))


# --------------------------------------------------------------------------- the export itself
def test_export_is_versioned_with_a_model_config(int_run):
    base = str(int_run["base"])
    version = os.path.basename(int_run["dirs"]["preprocessor"])
    assert versioning.versions(base) == [int(version)]
    assert sorted(os.listdir(base)) == sorted([version, versioning.MODEL_CONFIG_FILE])
    text = (int_run["base"] / versioning.MODEL_CONFIG_FILE).read_text()
    assert 'name: "tiny"' in text and f'base_path: "{os.path.abspath(base)}"' in text
    assert 'model_platform: "tensorflow"' in text


def _reloads_with_keras(saved_dir: str, run: dict) -> None:
    """``tf.keras.models.load_model`` rebuilds ``saved_dir`` from the registered layers'
    configs, and it predicts what ``run``'s trained network predicts."""
    from funnelrank import layers

    reloaded = tf.keras.models.load_model(saved_dir, custom_objects=layers.custom_objects())
    network = run["network"]
    xf = run["pre"].transform(_int_frame(50, seed=3))
    x = {k: xf[k] for k in network.input_names}
    want, got = network(x, training=False), reloaded(x, training=False)
    assert set(got) == set(want) == {"ctr", "cvr", "ctcvr"}
    for head in want:
        np.testing.assert_allclose(got[head].numpy(), want[head].numpy(), rtol=1e-6, atol=1e-7)


def test_the_train_output_model_reloads_with_keras_and_predicts_the_same(int_run):
    """``<out>/model`` is saved without traced functions (README): load_model rebuilds it
    from the registered layers' configs, with the trained weights."""
    model_dir = str(int_run["train_dir"] / "model")
    assert tf.saved_model.load(model_dir).signatures.keys() == set()  # no traces kept
    _reloads_with_keras(model_dir, int_run)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_the_export_keeps_signatures_not_layer_traces_and_reloads_with_keras(int_run,
                                                                             exporter):
    """The serving export is saved without the layers' traced functions (README "Serving"):
    TF Serving and ``tf.saved_model.load`` see the signatures only, and
    ``tf.keras.models.load_model`` rebuilds the network from the layers' configs, with the
    exported weights."""
    export_dir = int_run["dirs"][exporter]
    loaded = tf.saved_model.load(export_dir)
    assert set(loaded.signatures) == {SERVING_DEFAULT, PREDICT_RAW}
    assert not callable(loaded)  # a traced __call__ would make the restored object callable
    _reloads_with_keras(export_dir, int_run)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_a_warm_start_reads_every_network_weight_from_the_export(int_run, exporter):
    """``train.warm_start`` in the pipeline starts from the last blessed export (with its
    preprocessing attached): its variables, read from the files, are the network's."""
    from trainer import warm_start

    saved = warm_start.saved_variables(int_run["dirs"][exporter])
    network = int_run["network"]
    assert {w.name for w in network.weights} <= set(saved)
    for weight in network.weights:
        np.testing.assert_array_equal(saved[weight.name], weight.numpy(), err_msg=weight.name)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_no_training_only_variables_in_the_export(int_run, exporter):
    export_dir = int_run["dirs"][exporter]
    names = [n for n, _ in tf.train.list_variables(
        os.path.join(export_dir, "variables", "variables"))]
    assert any("VARIABLE_VALUE" in n for n in names)
    leaked = [n for n in names if any(bad in n.lower() for bad in TRAINING_ONLY)]
    assert leaked == []
    restored = fixtures.exported_variable_names(export_dir)
    assert "backbone/shared/expert_0/dense_0/kernel:0" in restored
    assert [n for n in restored if any(bad in n.lower() for bad in TRAINING_ONLY)] == []
    sizes = sorted(int(np.prod(s)) for n, s in tf.train.list_variables(
        os.path.join(export_dir, "variables", "variables")) if s)
    want = sorted(int(np.prod(w.shape)) for w in int_run["network"].weights)
    assert sizes == want  # exactly the network's weights, nothing else


def _warmup_examples(export_dir):
    requests = warmup.read_warmup(export_dir)
    assert requests and all(r.model_spec.signature_name == SERVING_DEFAULT for r in requests)
    return requests, [tf.train.Example.FromString(e).features.feature
                      for e in tf.make_ndarray(requests[-1].inputs["examples"])]


def _serve_check(model_dir, tmp_path, capsys):
    report_path = tmp_path / "check.json"
    rc = commands.serve_check_main(argparse.Namespace(
        model_dir=str(model_dir), repeats=3, json=str(report_path)))
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "serve-check: OK" in printed and "input  examples: string[-1]" in printed
    return printed, json.loads(report_path.read_text())


def test_warmup_file_parses_and_replays_in_serve_check(int_run, tmp_path, capsys):
    requests, batch = _warmup_examples(int_run["dirs"]["preprocessor"])
    first = pd.read_csv(int_run["csv"]).iloc[0]  # real rows from --warmup-csv
    assert len(batch) == commands.WARMUP_CSV_ROWS
    assert batch[0]["user"].int64_list.value == [first["user"]]
    assert batch[0]["price"].float_list.value[0] == pytest.approx(first["price"])
    printed, report = _serve_check(int_run["base"], tmp_path, capsys)
    assert "input  price: float32[-1]" in printed and "output ctcvr: float32[-1]" in printed
    assert "input  user: int64[-1]" in printed
    assert len(report["replayed"]) == len(requests)
    assert all(r["finite_probabilities"] for r in report["replayed"])


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_serve_check_with_string_and_optional_features(string_run, exporter, tmp_path, capsys):
    """The census warmup holds strings with spaces, commas and '?', and rows lacking optional
    features (CSV rows from --warmup-csv; vocabulary rows for the TFX exporter)."""
    export_dir = string_run["dirs"][exporter]
    requests, batch = _warmup_examples(export_dir)
    texts = {b for ex in batch for k in ("education", "region") if k in ex
             for b in ex[k].bytes_list.value}
    assert texts and all(isinstance(t, bytes) for t in texts)
    if exporter == "preprocessor":
        csv = pd.read_csv(string_run["csv"], dtype=str, keep_default_na=False).head(len(batch))
        assert [ex["region"].bytes_list.value[0].decode() for ex in batch] == list(csv["region"])
        optional = string_run["pre"].spec.optional_keys
        lacking = [(i, k) for i, ex in enumerate(batch) for k in optional if k not in ex]
        assert lacking == [(i, k) for i, row in csv.iterrows() for k in optional
                           if row[k] == ""]
        assert lacking  # the warmup rows do leave optional features out
    printed, report = _serve_check(export_dir, tmp_path, capsys)
    assert "input  region: string[-1]" in printed and "input  age: float32[-1]" in printed
    assert "output income: float32[-1]" in printed
    assert len(report["replayed"]) == len(requests)


def test_serve_check_fails_without_warmup(int_run, capsys):
    export_dir = int_run["dirs"]["preprocessor"]
    path = warmup.warmup_path(export_dir)
    saved = open(path, "rb").read()
    os.remove(path)
    try:
        assert serve_check.main([export_dir, "--repeats", "1"]) == 1
        assert "no warmup file" in capsys.readouterr().out
    finally:
        with open(path, "wb") as f:
            f.write(saved)


def test_fused_experts_and_table_export_only_inference_variables(tmp_path):
    """Fused experts, the fused embedding table, batch-row L2 and dropout add no variable to
    the export and change no served output: the stacked kernels are inference weights."""
    from schemas import config as config_lib

    pre, arrays, info = fixtures.tiny_arrays(600)
    raw = config_lib.to_dict(fixtures.tiny_config())
    raw["model"]["backbone_args"]["fused_experts"] = True
    raw["model"].update({"embedding_fused": True, "embedding_l2": 0.01,
                         "embedding_l2_mode": "batch", "embedding_dropout": 0.1,
                         "embedding_feature_dropout": 0.1})
    cfg = config_lib.from_dict(raw)
    ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 200, shuffle=True, seed=1)
    model, _ = fit_model(cfg, info, ds, None, tf.distribute.get_strategy())
    train_dir = tmp_path / "train"
    model.network.save(str(train_dir / "model"), save_format="tf")
    (train_dir / "preprocessor.json").write_text(pre.to_json())
    (train_dir / "metrics.json").write_text(json.dumps({"config": config_lib.to_dict(cfg)}))
    rc = commands.export_main(argparse.Namespace(
        model=str(train_dir), out=str(tmp_path / "base"), version=None, name="tiny",
        warmup_csv=None))
    assert rc == 0
    export_dir = versioning.latest_version_dir(str(tmp_path / "base"))
    restored = fixtures.exported_variable_names(export_dir)
    assert "backbone/shared/experts/dense_0/kernel:0" in restored
    assert "embedding/embedding/fused/embeddings:0" in restored
    assert not [n for n in restored if "/expert_" in n or any(
        bad in n.lower() for bad in TRAINING_ONLY)]
    sizes = sorted(int(np.prod(s)) for n, s in tf.train.list_variables(
        os.path.join(export_dir, "variables", "variables")) if s)
    assert sizes == sorted(int(np.prod(w.shape)) for w in model.network.weights)
    frame = fixtures.tiny_frame(30, seed=5)
    served = tf.saved_model.load(export_dir).signatures[SERVING_DEFAULT](
        examples=tf.constant(client.serialize_examples(
            frame.to_dict("records"), client.feature_types_from_spec(fixtures.TINY_SPEC))))
    direct = model.network(pre.transform(frame), training=False)
    for head in direct:
        np.testing.assert_allclose(served[head].numpy(), direct[head].numpy(), atol=1e-5)


# --------------------------------------------------------------------------- issue 17
def _cli(argv, capsys):
    """``funnelrank ARGV`` in process: (exit status, stderr).

    ``cli.main`` points the root logger at this test's captured stderr; the handlers are put
    back afterwards, or a later test's log call would write to a closed stream and print
    logging's own traceback into that test's stderr.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    capsys.readouterr()
    try:
        rc = cli.main(argv)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return rc, capsys.readouterr().err


def _one_line_error(err: str, command: str) -> str:
    """The error line of a user error: exactly one, no traceback, values cut short."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"funnelrank {command}: error: ")]
    assert len(lines) == 1, err
    assert len(lines[0]) < 400, lines[0]
    return lines[0]


def _copy_train_dir(run, tmp_path):
    target = tmp_path / "train"
    shutil.copytree(run["train_dir"], target, ignore=shutil.ignore_patterns(
        "data", "backup", "logs"))
    return target


def _truncate(path) -> None:
    data = open(path, "rb").read()
    assert len(data) > 8, path
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])


def test_export_never_runs_code_from_the_model_directory(int_run, tmp_path, capsys):
    """A Keras SavedModel whose Lambda layer writes a marker file when its Python runs,
    placed as ``model/`` of a train output: ``tf.keras.models.load_model`` runs it (checked
    here first); ``funnelrank export`` must not, and refuses weights that do not fit."""
    marker = tmp_path / "marker"
    namespace = {}
    exec(f"def touch(x):\n    open({str(marker)!r}, 'a').write('ran')\n    return x\n",
         namespace)
    inputs = tf.keras.Input(shape=(1,), name="user_xf")
    hostile = tf.keras.Model(inputs, tf.keras.layers.Dense(1, name="ctr")(
        tf.keras.layers.Lambda(namespace["touch"])(inputs)))
    train_dir = _copy_train_dir(int_run, tmp_path)
    shutil.rmtree(train_dir / "model")
    hostile.save(str(train_dir / "model"), save_format="tf")
    os.remove(marker)  # saving traced the Lambda
    tf.keras.models.load_model(str(train_dir / "model"), compile=False)
    assert marker.exists()  # the hazard is real
    os.remove(marker)

    rc, err = _cli(["export", "--model", str(train_dir), "--out", str(tmp_path / "out")], capsys)
    assert not marker.exists()
    assert rc == 2
    line = _one_line_error(err, "export")
    assert f"{train_dir / 'model'}: its weights do not load into the network" in line
    assert not (tmp_path / "out").exists() or versioning.versions(str(tmp_path / "out")) == []


@pytest.mark.parametrize("damaged, message", [
    ("metrics.json", "metrics.json: not a metrics.json of funnelrank train"),
    ("preprocessor.json", "preprocessor.json: not a preprocessor.json written by funnelrank"),
    ("model/saved_model.pb", "saved_model.pb: not a readable SavedModel, truncated or corrupt"),
    ("model/variables/variables.index", "its weights do not load"),
    ("model/variables/variables.data-00000-of-00001", "its weights do not load"),
])
def test_export_of_a_truncated_train_output_is_exit_2(int_run, tmp_path, capsys, damaged,
                                                      message):
    train_dir = _copy_train_dir(int_run, tmp_path)
    _truncate(train_dir / damaged)
    out = tmp_path / "out"
    rc, err = _cli(["export", "--model", str(train_dir), "--out", str(out)], capsys)
    assert rc == 2, err
    line = _one_line_error(err, "export")
    assert str(train_dir) in line and message in line, line
    assert not out.exists() or versioning.versions(str(out)) == []


@pytest.mark.parametrize("damaged, message", [
    ("saved_model.pb", "not a loadable SavedModel (OSError: Cannot parse file"),
    ("variables/variables.index", "not a loadable SavedModel"),
    ("variables/variables.data-00000-of-00001", "not a loadable SavedModel"),
    ("assets.extra/tf_serving_warmup_requests", "not a file of PredictionLog records"),
])
def test_serve_check_of_a_truncated_export_is_exit_2(int_run, tmp_path, capsys, damaged,
                                                     message):
    export_dir = tmp_path / "7"
    shutil.copytree(int_run["dirs"]["preprocessor"], export_dir)
    _truncate(export_dir / damaged)
    rc, err = _cli(["serve-check", str(tmp_path), "--repeats", "1"], capsys)
    assert rc == 2, err
    line = _one_line_error(err, "serve-check")
    assert str(export_dir) in line and message in line, line


def test_serve_check_of_a_directory_without_a_model_is_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, err = _cli(["serve-check", str(tmp_path / "empty")], capsys)
    assert rc == 2
    assert "holds no saved_model.pb" in _one_line_error(err, "serve-check")
    rc, err = _cli(["serve-check", str(tmp_path / "absent")], capsys)
    assert rc == 2
    assert "absent" in _one_line_error(err, "serve-check")


def test_export_out_pointing_to_an_existing_file_is_exit_2(int_run, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me")
    rc, err = _cli(["export", "--model", str(int_run["train_dir"]), "--out", str(target)],
                   capsys)
    assert rc == 2
    assert f"--out {target}: is an existing file" in _one_line_error(err, "export")
    assert target.read_text() == "keep me"


def test_a_failed_export_leaves_no_version_directory(int_run, tmp_path, monkeypatch):
    """The export is written to a temporary directory and renamed into ``<base>/<version>``:
    a failure after the SavedModel was written (here: while writing the warmup file) leaves
    neither the version nor the temporary directory for TF Serving to find."""
    written = []

    def fail(export_dir, *args, **kwargs):
        written.append(export_dir)
        assert os.path.exists(os.path.join(export_dir, "saved_model.pb"))
        raise OSError("disk full")

    monkeypatch.setattr(warmup, "write_warmup", fail)
    base = tmp_path / "base"
    with pytest.raises(OSError, match="disk full"):
        commands.export_main(argparse.Namespace(model=str(int_run["train_dir"]), out=str(base),
                                                version=5, name="m", warmup_csv=None))
    assert written and os.path.basename(written[0]) != "5"  # it was not the version itself
    assert not (base / "5").exists() and versioning.versions(str(base)) == []
    assert not base.exists() or os.listdir(base) == []
    monkeypatch.undo()
    assert commands.export_main(argparse.Namespace(
        model=str(int_run["train_dir"]), out=str(base), version=5, name="m",
        warmup_csv=None)) == 0
    assert versioning.versions(str(base)) == [5]
    assert sorted(os.listdir(base)) == ["5", versioning.MODEL_CONFIG_FILE]


@pytest.mark.parametrize("cell, shown", [
    ("cheap", "'cheap'"), ("9" * 10_000, "(10002 chars)"), ("1.5", "'1.5'")])
def test_a_bad_warmup_csv_cell_is_exit_2_naming_file_row_and_column(int_run, tmp_path, capsys,
                                                                    cell, shown):
    frame = pd.read_csv(int_run["csv"], dtype=str, keep_default_na=False).head(4)
    column = "user" if cell != "cheap" else "price"
    frame.loc[2, column] = cell
    csv = tmp_path / "warmup.csv"
    frame.to_csv(csv, index=False)
    rc, err = _cli(["export", "--model", str(int_run["train_dir"]), "--out",
                    str(tmp_path / "out"), "--warmup-csv", str(csv)], capsys)
    assert rc == 2
    line = _one_line_error(err, "export")
    assert f"{csv}: data row 3, column '{column}': expected " in line and shown in line, line
    assert len(line) - len(str(csv)) < 200  # the value cut short; the path is the test's


