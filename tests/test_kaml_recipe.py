"""KAML end to end below the pipeline: the recipe's terms, the per-action model with HKE,
target-action evaluation and the selector signature of the export."""

import numpy as np
import pytest
import tensorflow as tf

from schemas import config as config_lib
from schemas import features
from tests import fixtures
from tests.test_kaml import _ref_masked_bce as _np_masked_bce
from tests.test_kaml import _ref_rlu as _np_rlu
from trainer.data import from_arrays, predict
from trainer.model import HKE_INPUT, LOGITS, FeatureInfo, build_networks
from trainer.objectives import build_objective
from trainer.evaluation import evaluate_heads, select_target_action
from trainer.session import SplitData, TrainingSession, fit_model
from transform import adm
from transform import preprocessor as preprocess
from transform.ingest import synthetic

N = 5


def _cfg(model=None, loss=None, **sections):
    d = {"adm": {"enabled": True, "window_seconds": 3 * 86_400, "thresholds": [1]},
         "model": {"backbone": "mmoe", "tasks": ["ctr", "actions"], "hke": True,
                   "hke_units": [8], "tower_units": [4], "embedding_dim": 4,
                   "backbone_args": {"num_experts": 2, "expert_units": [8]}, **(model or {})},
         "loss": {"name": "kaml", "weights": {}, "args": {"gamma": 0.7, **(loss or {})}},
         "train": {"batch_size": 256, "epochs": 1, "learning_rate": 0.01, "seed": 3}}
    d.update(sections)
    return config_lib.from_dict(d)


def _heads_network():
    x = tf.keras.Input(shape=(2,))
    logits = {h: tf.keras.layers.Dense(1, name=h)(x) for h in
              ["ctr"] + [features.action_head(j) for j in range(N)]}
    outs = {h: tf.keras.layers.Activation("sigmoid")(v) for h, v in logits.items()}
    return tf.keras.Model(x, {**outs, LOGITS: logits})


def _batch(b=40, seed=0):
    rng = np.random.default_rng(seed)
    click = (rng.random(b) < 0.5).astype(np.float32)
    actions = click[:, None] * (rng.random((b, N)) < 0.3).astype(np.float32)
    target = rng.integers(0, N, b)
    original = np.eye(N, dtype=np.float32)[target]
    mask = np.maximum(original, (rng.random((b, N)) < 0.4).astype(np.float32))
    labels = {"ctr": click, "cvr": actions[np.arange(b), target],
              "actions": actions, "adm_mask": mask, "adm_original": original}
    logits = rng.normal(size=(b, N)).astype(np.float32)
    outputs = {"ctr": rng.uniform(0.1, 0.9, b).astype(np.float32),
               LOGITS: {features.action_head(j): logits[:, j] for j in range(N)}}
    return labels, outputs, logits


@pytest.mark.parametrize("mask, ranking_positives", [
    ("adm", "masked"), ("target", "masked"), ("all", "masked"), ("adm", "submitted"),
    ("target", "submitted")])
def test_recipe_terms_match_numpy(mask, ranking_positives):
    every_action = mask == "all"
    objective = build_objective(_cfg(loss={"mask": mask, "beta": [1, 2, 0.5, 1, 3],
                                           "ranking_positives": ranking_positives}).loss)
    objective.build(_heads_network())
    labels, outputs, logits = _batch()
    terms = objective(labels, outputs)
    assert objective.term_names(["ctr"]) == ["bce_ctr", "bce_actions", "ranking"]
    mask = {"adm": labels["adm_mask"], "target": labels["adm_original"],
            "all": np.ones((40, N), np.float32)}[mask]
    valid = mask * labels["ctr"][:, None]  # post-click samples only
    probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    want_bce = _np_masked_bce(labels["actions"], probs, valid)
    clicked = labels["ctr"] > 0.5
    # eq. 11's Type A: positives inside the valid mask, or every submitted positive (Sec. 3.4)
    ranked = labels["actions"] * valid if ranking_positives == "masked" else labels["actions"]
    if not every_action:  # the two readings differ on these data
        assert (labels["actions"] * (1 - valid))[clicked].sum() > 0
    want_rank = _np_rlu(ranked[clicked], logits[clicked].astype(np.float64),
                        np.array([1, 2, 0.5, 1, 3]))
    assert float(terms["bce_actions"]) == pytest.approx(0.7 * want_bce, rel=1e-5)
    assert float(terms["ranking"]) == pytest.approx(0.3 * want_rank, rel=1e-5)


@pytest.mark.parametrize("sections, message", [
    ({"loss": {"name": "kaml", "args": {"gamma": 1.5}}},
     r"loss.args.gamma` must be a finite number >= 0 and <= 1, received: loss.args.gamma=1.5"),
    ({"loss": {"name": "kaml", "args": {"mask": "some"}}},
     r"loss.args.mask` must be one of \['adm', 'target', 'all'\], received: loss.args.mask='some'"),
    ({"loss": {"name": "kaml", "args": {"beta": [1, -1]}}},
     r"loss.args.beta` must be a number >= 0 or one per action, "
     r"received: loss.args.beta=\[1, -1\]"),
    ({"loss": {"name": "kaml", "args": {"ranking_positives": "all"}}},
     r"loss.args.ranking_positives` must be one of \['masked', 'submitted'\], received: "
     r"loss.args.ranking_positives='all'"),
    ({"model": {"tasks": ["ctr", "cvr"], "hke": False}},
     r"loss.name kaml trains per-action heads"),
    ({"adm": {"enabled": False}}, r"\[ctr, actions\] needs adm.enabled: true"),
    ({"adm": {"enabled": True, "thresholds": [1, 2]}},
     r"adm.thresholds: expected 1 value or one per action \(5\), got \[1, 2\]")])
def test_bad_kaml_configuration_is_named(sections, message):
    d = config_lib.to_dict(_cfg())
    for key, value in sections.items():
        d[key] = {**d[key], **value}
    with pytest.raises(config_lib.ConfigError, match=message):
        build_objective(config_lib.from_dict(d).loss)


@pytest.fixture(scope="module")
def kaml_data():
    log = synthetic.generate(6000, seed=5)
    spec = features.with_adm(fixtures.synthetic_spec())
    frames = {"train": log.iloc[:4800].reset_index(drop=True),
              "eval": log.iloc[4800:].reset_index(drop=True)}
    frames = adm.add_to_frames(frames, adm.AdmParams.for_spec(spec, 3 * 86_400, 1))
    pre = preprocess.fit(frames["train"], spec)
    arrays = {k: pre.transform(v) for k, v in frames.items()}
    info = FeatureInfo(pre.vocab_sizes, spec.dense_keys, num_actions=N)
    return spec, pre, frames, arrays, info


def test_networks_with_hke_share_layers_and_serve_without_extended_towers(kaml_data):
    _, _, _, arrays, info = kaml_data
    nets = build_networks(_cfg().model, info, aux=("logits",))
    assert sorted(nets.inference.output_names) == ["ctr"] + [f"cvr_{j}" for j in range(N)]
    assert nets.extra_inputs == (HKE_INPUT,)
    assert not [v.name for v in nets.inference.weights if "extended" in v.name]
    assert any("cvr_3/hke/extended" in v.name for v in nets.training.weights)
    x = {k: arrays["eval"][k][:50] for k in info.input_names}
    served = nets.inference(x)
    ones = np.ones((50, N), np.float32)
    trained = nets.training({**x, HKE_INPUT: ones})  # M = 1: the training path IS serving
    for j in range(N):
        np.testing.assert_allclose(trained[f"cvr_{j}"], served[f"cvr_{j}"], atol=1e-6)


def test_training_moves_extended_towers_and_evaluates_on_target_actions(kaml_data,
                                                                        two_cpu_strategy):
    spec, _, _, arrays, info = kaml_data
    cfg = _cfg()
    ds = from_arrays(arrays["train"], info.input_names, spec, 256, shuffle=True, seed=1)
    model, _ = fit_model(cfg, info, ds, None, two_cpu_strategy)
    history = model.history.history
    assert all(np.isfinite(history[t]).all() for t in ("bce_ctr", "bce_actions", "ranking"))
    eval_ds = from_arrays(arrays["eval"], info.input_names, spec, 1000)
    report = evaluate_heads(model.network, eval_ds)
    outputs, labels = predict(model.network, eval_ds)
    target = np.argmax(labels["adm_original"], axis=1)
    clicked = labels["ctr"] > 0.5
    assert report["cvr"]["count"] == int(clicked.sum())
    for j in range(N):
        assert report[f"cvr_{j}"]["count"] == int((clicked & (target == j)).sum())
    selected = select_target_action(outputs, labels)
    np.testing.assert_allclose(selected["cvr"],
                               np.stack([outputs[f"cvr_{j}"] for j in range(N)], 1)
                               [np.arange(len(target)), target])
    np.testing.assert_allclose(selected["ctcvr"], outputs["ctr"] * selected["cvr"], rtol=1e-6)
    # Both training paths score through the session: the derived cvr/ctcvr heads stay in.
    session = TrainingSession(cfg, spec, info)
    via_session = session.evaluate(model, SplitData(arrays=arrays["eval"]))
    assert set(via_session) == {"ctr", "cvr", "ctcvr"} | {f"cvr_{j}" for j in range(N)}
    for head, metrics in report.items():
        assert via_session[head]["count"] == metrics["count"]
        assert via_session[head]["auc"] == pytest.approx(metrics["auc"], abs=1e-4, nan_ok=True)


def test_export_selects_the_target_action_and_has_a_selector(kaml_data, tmp_path):
    from serving import client, export
    from serving.signatures import SELECT_CVR

    spec, pre, frames, arrays, info = kaml_data
    cfg = _cfg()
    ds = from_arrays(arrays["train"], info.input_names, spec, 256, shuffle=True, seed=1)
    model, _ = fit_model(cfg, info, ds, None, tf.distribute.OneDeviceStrategy("/cpu:0"))
    out = export.export_from_preprocessor(model.network, pre, str(tmp_path / "1"))
    names = fixtures.exported_variable_names(out)
    assert "cvr_0/hke/original/dense_0/kernel:0" in names
    assert not [n for n in names if "extended" in n]
    loaded = tf.saved_model.load(out)
    assert SELECT_CVR in loaded.signatures
    rows = frames["eval"].head(30)
    types = client.feature_types_from_spec(spec)
    examples = tf.constant(client.serialize_examples(rows.to_dict("records"), types))
    got = loaded.signatures["serving_default"](examples=examples)
    direct = model.network(pre.transform(rows), training=False)
    target = rows["target_action"].to_numpy()
    per_action = np.stack([direct[f"cvr_{j}"].numpy() for j in range(N)], axis=1)
    np.testing.assert_allclose(got["cvr"], per_action[np.arange(30), target], atol=1e-5)
    np.testing.assert_allclose(got["ctcvr"], direct["ctr"].numpy() * got["cvr"].numpy(),
                               atol=1e-5)
    other = (target + 1) % N
    picked = loaded.signatures[SELECT_CVR](examples=examples, target_action=tf.constant(other))
    changed = rows.assign(target_action=other)
    direct_other = model.network(pre.transform(changed), training=False)
    per_other = np.stack([direct_other[f"cvr_{j}"].numpy() for j in range(N)], axis=1)
    np.testing.assert_allclose(picked["cvr"], per_other[np.arange(30), other], atol=1e-5)
    bad = rows.head(2).assign(target_action=N)
    with pytest.raises(tf.errors.InvalidArgumentError, match="target_action must be in 0..4"):
        loaded.signatures["serving_default"](examples=tf.constant(
            client.serialize_examples(bad.to_dict("records"), types)))
