"""The inference-only SavedModel (serving/): fresh-process reload, parity, OOV, warmup.

One tiny model is trained, saved like ``funnelrank train`` does, and exported through
``funnelrank export`` (``funnelrank.commands.serving.export_main``) once per module; a single
subprocess that never imports the project then answers every served-output question.
"""
import argparse
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from funnelrank.commands import serving as cli_commands
from serving import client, serve_check, versioning, warmup
from serving.signatures import PREDICT_RAW, SERVING_DEFAULT
from tests import fixtures
from trainer.data import from_arrays
from trainer.session import fit_model

TRAINING_ONLY = ("optimizer", "adam", "log_sigma", "relatedness", "iter")
UNKNOWN_USER, UNKNOWN_ITEM = 10_000, -7


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    pre, arrays, info = fixtures.tiny_arrays()
    cfg = fixtures.tiny_config()
    ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 256, shuffle=True, seed=1)
    model, _ = fit_model(cfg, info, ds, None, tf.distribute.get_strategy())
    assert model.optimizer.iterations.numpy() > 0  # training state exists...
    train_dir = root / "train"
    model.network.save(str(train_dir / "model"), save_format="tf")
    (train_dir / "preprocessor.json").write_text(pre.to_json())
    fixtures.tiny_frame(20, seed=4).to_csv(root / "eval.csv", index=False)
    base = root / "base"
    rc = cli_commands.export_main(argparse.Namespace(
        model=str(train_dir), out=str(base), version=None, name="tiny",
        warmup_csv=str(root / "eval.csv")))
    assert rc == 0
    return {"root": root, "base": base, "dir": versioning.latest_version_dir(str(base)),
            "network": model.network, "pre": pre}


@pytest.fixture(scope="module")
def served(exported):
    """Outputs of the export computed in a fresh interpreter without the project."""
    root = exported["root"]
    frame = fixtures.tiny_frame(60, seed=11)
    unknown = frame.head(5).copy()
    unknown["user"] = UNKNOWN_USER
    unknown["item"] = UNKNOWN_ITEM
    types = client.feature_types_from_spec(fixtures.TINY_SPEC)
    rows = frame.to_dict("records")  # labels included: the served model must ignore them
    inputs = {
        "examples": np.array(client.serialize_examples(rows, types), dtype=object),
        "unknown": np.array(client.serialize_examples(unknown.to_dict("records"), types),
                            dtype=object),
        "missing": np.array(client.serialize_examples(
            [{k: v for k, v in r.items()} for r in rows[:2]],
            {k: t for k, t in types.items() if k != "item"}), dtype=object)}
    for key, kind in types.items():
        inputs["raw_" + key] = frame[key].to_numpy().astype(kind)
    np.savez(root / "in.npz", **inputs)
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, tensorflow as tf
        d = np.load({str(root / 'in.npz')!r}, allow_pickle=True)
        m = tf.saved_model.load({exported['dir']!r}, tags=["serve"])
        sd, raw = m.signatures["serving_default"], m.signatures["predict_raw"]
        out = {{}}
        for name in ("examples", "unknown"):
            for k, v in sd(examples=tf.constant(list(d[name]))).items():
                out[name + "_" + k] = v.numpy()
        feeds = {{k[4:]: tf.constant(d[k]) for k in d.files if k.startswith("raw_")}}
        for k, v in raw(**feeds).items():
            out["raw_" + k] = v.numpy()
        try:
            sd(examples=tf.constant(list(d["missing"])))
            error = None
        except Exception as e:
            error = str(e)
        np.savez({str(root / 'out.npz')!r}, **out)
        project = sorted(n for n in sys.modules
                         if n.split(".")[0] in ("trainer", "serving", "schemas", "funnelrank",
                                                "transform", "pipeline", "tests"))
        print(json.dumps({{"project_modules": project, "missing_error": error,
                          "signatures": sorted(m.signatures)}}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.pop("TF_USE_LEGACY_KERAS", None)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=str(root), env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return frame, unknown, report, dict(np.load(root / "out.npz"))


def test_export_is_versioned_with_a_model_config(exported):
    base = str(exported["base"])
    assert versioning.versions(base) == [int(os.path.basename(exported["dir"]))]
    text = (exported["base"] / versioning.MODEL_CONFIG_FILE).read_text()
    assert 'name: "tiny"' in text and f'base_path: "{os.path.abspath(base)}"' in text
    assert 'model_platform: "tensorflow"' in text


def test_fresh_process_without_project_code_serves_both_signatures(served):
    _, _, report, _ = served
    assert report["project_modules"] == []
    assert report["signatures"] == [PREDICT_RAW, SERVING_DEFAULT]


def test_served_outputs_equal_the_trained_network(exported, served):
    frame, _, _, out = served
    direct = exported["network"](exported["pre"].transform(frame), training=False)
    assert sorted(direct) == ["ctcvr", "ctr", "cvr"]
    for head in direct:
        want = direct[head].numpy()
        assert out["examples_" + head].shape == (len(frame),)
        np.testing.assert_allclose(out["examples_" + head], want, atol=1e-5)
        np.testing.assert_allclose(out["raw_" + head], want, atol=1e-5)


def test_unknown_ids_go_to_the_oov_bucket(exported, served):
    _, unknown, _, out = served
    pre = exported["pre"]
    xf = pre.transform(unknown)
    assert np.all(xf["user_xf"] == len(pre.vocabularies["user"]))  # the reference is OOV too
    assert np.all(xf["item_xf"] == len(pre.vocabularies["item"]))
    direct = exported["network"](xf, training=False)
    for head in direct:
        np.testing.assert_allclose(out["unknown_" + head], direct[head].numpy(), atol=1e-5)


def test_a_request_missing_a_feature_fails_naming_it(served):
    _, _, report, _ = served
    assert report["missing_error"] and "item" in report["missing_error"]
    with pytest.raises(client.RequestError, match="missing feature 'item'"):
        client.serialize_examples([{"user": 1, "price": 2.0}],
                                  client.feature_types_from_spec(fixtures.TINY_SPEC))


def test_no_training_only_variables_in_the_export(exported):
    names = [n for n, _ in tf.train.list_variables(
        os.path.join(exported["dir"], "variables", "variables"))]
    assert any("VARIABLE_VALUE" in n for n in names)
    leaked = [n for n in names if any(bad in n.lower() for bad in TRAINING_ONLY)]
    assert leaked == []
    restored = fixtures.exported_variable_names(exported["dir"])
    assert "backbone/shared/expert_0/dense_0/kernel:0" in restored
    assert [n for n in restored if any(bad in n.lower() for bad in TRAINING_ONLY)] == []
    sizes = sorted(int(np.prod(s)) for n, s in tf.train.list_variables(
        os.path.join(exported["dir"], "variables", "variables")) if s)
    want = sorted(int(np.prod(w.shape)) for w in exported["network"].weights)
    assert sizes == want  # exactly the network's weights, nothing else


def test_warmup_file_parses_and_replays_in_serve_check(exported, tmp_path, capsys):
    requests = warmup.read_warmup(exported["dir"])
    assert requests and all(r.model_spec.signature_name == SERVING_DEFAULT for r in requests)
    batch = tf.make_ndarray(requests[-1].inputs["examples"])
    first = fixtures.tiny_frame(20, seed=4).iloc[0]  # real rows from --warmup-csv
    assert len(batch) == cli_commands.WARMUP_CSV_ROWS
    feats = tf.train.Example.FromString(batch[0]).features.feature
    assert feats["user"].int64_list.value == [first["user"]]
    assert feats["price"].float_list.value[0] == pytest.approx(first["price"])
    report_path = tmp_path / "check.json"
    rc = cli_commands.serve_check_main(argparse.Namespace(
        model_dir=str(exported["base"]), repeats=3, json=str(report_path)))
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "serve-check: OK" in printed and "input  examples: string[-1]" in printed
    assert "input  price: float32[-1]" in printed and "output ctcvr: float32[-1]" in printed
    report = json.loads(report_path.read_text())
    assert len(report["replayed"]) == len(requests)
    assert all(r["finite_probabilities"] for r in report["replayed"])


def test_serve_check_fails_without_warmup(exported, capsys):
    path = warmup.warmup_path(exported["dir"])
    saved = open(path, "rb").read()
    os.remove(path)
    try:
        assert serve_check.main([exported["dir"], "--repeats", "1"]) == 1
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
    rc = cli_commands.export_main(argparse.Namespace(
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
