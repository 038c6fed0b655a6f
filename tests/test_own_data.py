"""Bring your own data: a dataset, its features and tasks declared in the config alone.

A census-like CSV made here (string categoricals with spaces, ``?``, quoted commas and empty
cells, dense gaps, two unrelated tasks), the real AliExpress sample, and the Ali-CCP preset
spelled out as a generic CSV config.
"""
import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from funnelrank.commands import train as fast
from schemas import config as config_lib
from schemas import features
from tests import fixtures
from tests.conftest import SHARED


def _census_cfg(path, **changes):
    raw = json.loads(json.dumps(fixtures.CENSUS_CONFIG))
    raw["data"]["path"] = str(path)
    for dotted, value in changes.items():
        section, key = dotted.split(".", 1)
        raw.setdefault(section, {})[key] = value
    return config_lib.from_dict(raw)


@pytest.fixture(scope="module")
def census_run(tmp_path_factory):
    """The census-like CSV trained by ``funnelrank train`` from the config alone."""
    root = tmp_path_factory.mktemp("census")
    csv = fixtures.write_census_csv(str(root / "census.csv"), rows=3000)
    cfg = _census_cfg(csv)
    metrics = fast.train(cfg, str(root / "out"))
    return root, csv, cfg, metrics


def test_string_categoricals_and_two_unrelated_tasks_train_from_the_config(census_run):
    root, _, cfg, metrics = census_run
    assert cfg.loss.name == "bce" and cfg.tasks == ("income", "married")
    assert set(metrics["heads"]) == {"income", "married"}
    for head in ("income", "married"):
        m = metrics["heads"][head]
        assert m["count"] == metrics["rows"]["eval"]
        assert 0.6 < m["auc"] <= 1.0, (head, m)  # both tasks carry planted signal
    spec = metrics["dataset_spec"]
    assert spec["sparse_dtypes"] == {"education": "string", "occupation": "string",
                                     "region": "string"}
    assert set(spec["optional_keys"]) == {"education", "occupation", "age", "hours"}
    pre = json.loads((root / "out" / "preprocessor.json").read_text())
    vocab = pre["vocabularies"]["education"]
    assert "Some college, no degree" in vocab and "?" in vocab and "Not in universe" in vocab
    assert "" in vocab  # the empty cell is a value of its own, not the OOV bucket
    assert np.isfinite(pre["means"]["age"]) and np.isfinite(pre["stds"]["hours"])


def test_the_export_scores_raw_string_features_row_by_row(census_run, tmp_path):
    from funnelrank.commands import serving as commands
    from serving import client
    from serving.signatures import PREDICT_RAW, SERVING_DEFAULT
    from transform.preprocessor import Preprocessor

    root, csv, cfg, _ = census_run
    args = type("A", (), {"model": str(root / "out"), "out": str(tmp_path / "serve"),
                          "version": 1, "name": "census", "warmup_csv": csv,
                          "base_path": None})()
    assert commands.export_main(args) == 0
    served = tf.saved_model.load(str(tmp_path / "serve" / "1"))
    frame = fixtures.census_frame(40, seed=9)
    pre = Preprocessor.from_json((root / "out" / "preprocessor.json").read_text())
    network, _ = commands.load_trained_network(str(root / "out"))
    typed = frame.astype(object).where(frame.notna(), None)
    typed = typed.replace({"": None})
    expected = network(pre.transform(typed.rename(columns={})), training=False)
    rows = [{k: v for k, v in r.items()} for r in typed.to_dict("records")]
    types = client.feature_types_from_spec(pre.spec)
    examples = client.serialize_examples(rows, types, pre.spec.optional_keys)
    by_example = served.signatures[SERVING_DEFAULT](examples=tf.constant(examples))
    raw = client._raw_columns(rows, types, pre.spec.optional_keys)
    by_raw = served.signatures[PREDICT_RAW](**{
        k: tf.constant(v, dtype=tf.string if types[k] == "string" else tf.float32)
        for k, v in raw.items()})
    for head in ("income", "married"):
        np.testing.assert_allclose(by_example[head].numpy(), expected[head].numpy(),
                                   rtol=1e-5, atol=1e-6, err_msg=head)
        np.testing.assert_allclose(by_raw[head].numpy(), expected[head].numpy(),
                                   rtol=1e-5, atol=1e-6, err_msg=head)


def test_three_independent_tasks(tmp_path):
    frame = fixtures.census_frame(1500, seed=2)
    frame["owns_home"] = (frame["age"].fillna(40) > 45).astype(int)
    path = tmp_path / "three.csv"
    frame.to_csv(path, index=False, na_rep="")
    cfg = _census_cfg(path, **{"data.labels": {"income": "income_50k", "married": "is_married",
                                               "home": "owns_home"}})
    cfg = config_lib.from_dict({**config_lib.to_dict(cfg),
                                "model": {**config_lib.to_dict(cfg)["model"], "tasks": None}})
    metrics = fast.train(cfg, str(tmp_path / "out"))
    assert set(metrics["heads"]) == {"income", "married", "home"}
    assert metrics["heads"]["home"]["auc"] > 0.8


@pytest.mark.parametrize("backbone, args", [
    ("shared_bottom", {"bottom_units": [8]}), ("omoe", {"num_experts": 2, "expert_units": [8]}),
    ("cgc", {"num_shared_experts": 1, "num_task_experts": 1, "expert_units": [8]}),
    ("ple", {"num_levels": 2, "num_shared_experts": 1, "num_task_experts": 1,
             "expert_units": [8]}),
    ("cross_stitch", {"units": [8]}), ("dnn", {"units": [8]}),
    ("masknet", {"num_blocks": 1, "block_units": 8}),
    ("man", {"num_shared_experts": 1, "num_task_experts": 1, "expert_units": [8]}),
])
@pytest.mark.parametrize("tasks", [2, 3])
def test_every_non_funnel_backbone_takes_any_number_of_tasks(backbone, args, tasks):
    from trainer.model import FeatureInfo, build_network

    labels = {f"t{i}": f"y{i}" for i in range(tasks)}
    cfg = config_lib.from_dict({
        "data": {"adapter": "csv", "path": "x.csv",
                 "features": {"sparse": ["a"], "dense": ["b"]}, "labels": labels},
        "model": {"backbone": backbone, "backbone_args": args, "tower_units": [4]}})
    info = FeatureInfo({"a": 5}, ("b",))
    network = build_network(cfg.model, info, funnel=False)
    out = network({"a_xf": tf.constant([[1], [4]], tf.int64),
                   "b_xf": tf.constant([[0.5], [-1.0]])})
    assert sorted(out) == sorted(labels)
    assert all(out[t].shape == (2,) for t in labels)


@pytest.mark.parametrize("backbone", ["esmm", "aitm"])
def test_funnel_backbones_refuse_independent_tasks(backbone):
    from trainer.preflight import check_experiment

    cfg = _census_cfg("x.csv", **{"model.backbone": backbone, "model.backbone_args": {}})
    with pytest.raises(config_lib.ConfigError, match=rf"model.backbone '{backbone}' models the "
                                                     r"click -> conversion funnel"):
        check_experiment(cfg)


def test_a_typo_in_loss_args_fails_before_any_data_work(tmp_path):
    from trainer.preflight import check_experiment

    cfg = config_lib.from_dict({"loss": {"name": "pwiser", "args": {"lamda": 0.1}}})
    with pytest.raises(config_lib.ConfigError, match=r"loss.args: pwiser takes"):
        check_experiment(cfg)
    bad_backbone = config_lib.from_dict({"model": {"backbone_args": {"num_expert": 2}}})
    with pytest.raises(config_lib.ConfigError, match=r"model.backbone_args for 'mmoe'"):
        check_experiment(bad_backbone)


def test_aliexpress_config_trains_on_the_real_sample(tmp_path):
    sample = os.path.join(SHARED, "data", "aliexpress_sample")
    if not os.path.isdir(sample):
        pytest.fail(f"AliExpress sample not found at {sample}: CI must put shared/ beside the "
                    "clone")
    cfg = config_lib.load("configs/aliexpress_mmoe.yaml", {
        "data.path": sample, "train.epochs": 1, "train.batch_size": 32})
    metrics = fast.train(cfg, str(tmp_path / "out"))
    assert metrics["rows"]["eval"] == 20  # the test file, whole
    assert metrics["rows"]["train"] + metrics["rows"]["validation"] == 100
    assert set(metrics["heads"]) == {"ctr", "cvr", "ctcvr"}
    spec = metrics["dataset_spec"]
    assert len(spec["sparse_keys"]) == 16 and len(spec["dense_keys"]) == 63
    assert set(spec["sparse_dtypes"].values()) == {"int"}


def test_ali_ccp_preset_and_the_same_roles_spelled_out_give_the_same_results(tmp_path,
                                                                            ali_ccp_dir):
    preset = config_lib.load("configs/ali_ccp_mmoe.yaml",
                             {"data.path": ali_ccp_dir, "train.epochs": 1})
    spelled = config_lib.to_dict(preset)
    spelled["data"].update(adapter="csv", features=_ali_ccp_features(),
                           labels={"ctr": "click", "cvr": "purchase"})
    generic = config_lib.from_dict(spelled)
    assert generic.data.adapter == "csv"
    a = fast.train(preset, str(tmp_path / "preset"))
    b = fast.train(generic, str(tmp_path / "generic"))
    assert a["rows"] == b["rows"]
    for head in ("ctr", "cvr", "ctcvr"):
        assert a["heads"][head] == pytest.approx(b["heads"][head]), head


def _ali_ccp_features():
    import dataclasses

    features, _ = config_lib.preset("ali_ccp", 5)
    return json.loads(json.dumps(dataclasses.asdict(features)))


def test_prepared_splits_are_the_same_rows_for_every_consumer(tmp_path):
    from schemas import features as features_lib
    from transform.ingest import prepare

    csv = fixtures.write_census_csv(str(tmp_path / "c.csv"), rows=1000, seed=4)
    cfg = _census_cfg(csv)
    spec = features_lib.spec_from_config(cfg.data, cfg.funnel)
    first = prepare.load_frames(prepare.prepare(cfg.data, spec, str(tmp_path / "a")))
    second = prepare.load_frames(prepare.prepare(cfg.data, spec, str(tmp_path / "b")))
    for split in ("train", "validation", "eval"):
        pd.testing.assert_frame_equal(first[split], second[split])
    assert sum(len(f) for f in first.values()) == 1000


@pytest.mark.slow
def test_the_census_csv_runs_through_the_tfx_pipeline_from_the_config(census_run, tmp_path):
    """The same config through the TFX pipeline (ImportExampleGen ... Pusher): the same prepared
    rows as the fast path, TFMA and the Trainer score both tasks' heads, and the pushed model
    takes the raw strings (missing ones left out) on both signatures, row for row."""
    from pipeline import local_runner
    from serving import client
    from serving.signatures import PREDICT_RAW, SERVING_DEFAULT

    _, csv, _, fast_metrics = census_run
    cfg = _census_cfg(csv, **{"pipeline.root": str(tmp_path / "root")})
    result = local_runner.run(cfg)
    assert result["blessed"] is True and result["pushed_model"]
    assert result["trainer"]["rows"] == fast_metrics["rows"]  # one split for both paths
    assert set(result["trainer"]["heads"]) == set(result["evaluation"]) == {"income", "married"}
    for head in ("income", "married"):
        assert result["evaluation"][head]["example_count"] == fast_metrics["rows"]["eval"]
        assert result["evaluation"][head]["auc"] == pytest.approx(
            result["trainer"]["heads"][head]["auc"], abs=2e-3)
        assert result["evaluation"][head]["auc"] > 0.6, head
    served = tf.saved_model.load(result["pushed_model"])
    spec = features.spec_from_dict(result["trainer"]["dataset_spec"])
    typed = fixtures.census_frame(40, seed=9)
    typed = typed.astype(object).where(typed.notna(), None).replace({"": None})
    rows = typed.to_dict("records")
    types = client.feature_types_from_spec(spec)
    by_example = served.signatures[SERVING_DEFAULT](examples=tf.constant(
        client.serialize_examples(rows, types, spec.optional_keys)))
    raw = client._raw_columns(rows, types, spec.optional_keys)
    by_raw = served.signatures[PREDICT_RAW](**{
        k: tf.constant(v, dtype=tf.string if types[k] == "string" else tf.float32)
        for k, v in raw.items()})
    for head in ("income", "married"):
        values = by_example[head].numpy()
        assert values.shape == (40,) and np.all((values > 0) & (values < 1))
        np.testing.assert_allclose(by_raw[head].numpy(), values, rtol=1e-5, atol=1e-6)
