"""Warm start: a session's network starts from a previous model's weights; embedding rows
follow their vocabulary entries when the vocabularies changed."""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from funnelrank import cli
from schemas import features
from tests import fixtures
from trainer import warm_start
from trainer.session import TrainingSession
from trainer.tfx_trainer import base_model_source
from trainer.warm_start import RowMap, WarmStart, WarmStartError, vocab_row_map
from transform import preprocessor as preprocess
from transform.preprocessing import NUM_OOV_BUCKETS

ONE_DEVICE = "/cpu:0"


def _trained(tmp_path, cfg, frame_seed=0, name="previous"):
    """A network trained one epoch on ``tiny_frame(seed=frame_seed)``, saved as the fast path
    saves it; returns ``(network, preprocessor, path)``."""
    frame = fixtures.tiny_frame(1200, seed=frame_seed)
    pre = preprocess.fit(frame, fixtures.TINY_SPEC)
    info = fixtures.FeatureInfo(pre.vocab_sizes, fixtures.TINY_SPEC.dense_keys)
    session = TrainingSession(cfg, fixtures.TINY_SPEC, info,
                              tf.distribute.OneDeviceStrategy(ONE_DEVICE))
    ds = session.dataset(_split(pre.transform(frame)), training=True)
    model, _ = session.fit_datasets(ds, None)
    path = str(tmp_path / name)
    model.network.save(path, save_format="tf")
    return model.network, pre, path


def _split(arrays):
    from trainer.session import SplitData

    return SplitData(arrays=arrays)


def _session(cfg, pre, source=None, strategy=None):
    info = fixtures.FeatureInfo(pre.vocab_sizes, fixtures.TINY_SPEC.dense_keys)
    return TrainingSession(cfg, fixtures.TINY_SPEC, info,
                           strategy or tf.distribute.OneDeviceStrategy(ONE_DEVICE),
                           warm_start_from=source)


def _weights(network):
    return {v.name: v.numpy() for v in network.weights}


def test_vocab_row_map_follows_entries_and_keeps_oov_rows():
    rm = vocab_row_map(["a", "b", "c"], ["c", "a", "d"], num_oov_buckets=1)
    np.testing.assert_array_equal(rm.rows, [2, 0, -1, 3])
    assert rm.old_rows == 4
    assert RowMap.fresh(3).old_rows is None and (RowMap.fresh(3).rows == -1).all()


def test_initial_weights_are_the_previous_models(tmp_path):
    cfg = fixtures.tiny_config(epochs=1)
    previous, pre, path = _trained(tmp_path, cfg)
    cold = _weights(_session(cfg, pre).build().network)
    session = _session(cfg, pre, WarmStart(path))
    warm = _weights(session.build().network)
    old = _weights(previous)
    assert sorted(warm) == sorted(old)
    for name in old:
        np.testing.assert_array_equal(warm[name], old[name], err_msg=name)
    # the test can fail: a cold start differs from the previous model everywhere it trained
    assert any(not np.array_equal(cold[n], old[n]) for n in old)
    report = session.warm_start_report
    assert report["restored"] == len(old) and not report["kept_initial"]


def test_warm_start_under_two_replicas(tmp_path, two_cpu_strategy):
    cfg = fixtures.tiny_config(epochs=1)
    previous, pre, path = _trained(tmp_path, cfg)
    session = _session(cfg, pre, WarmStart(path), strategy=two_cpu_strategy)
    model = session.build()
    old = _weights(previous)
    for variable in model.network.weights:
        for value in two_cpu_strategy.experimental_local_results(variable):
            np.testing.assert_array_equal(value.numpy(), old[variable.name], err_msg=variable.name)


def _warm_started_on_new_vocabularies(tmp_path, cfg):
    """A network of ``cfg`` trained on one frame, and the session of a new run on data with a
    new user id and another frequency order of the vocabularies, warm-started from it.

    Returns:
      ``(previous network, its preprocessor, the new preprocessor, the new run's network
      without warm start, the new run's session)``.
    """
    previous, old_pre, path = _trained(tmp_path, cfg)
    frame = fixtures.tiny_frame(1200, seed=5)
    frame.loc[:40, "user"] = 999
    new_pre = preprocess.fit(frame, fixtures.TINY_SPEC)
    assert new_pre.vocabularies["user"] != old_pre.vocabularies["user"]
    source = WarmStart(path, {features.transformed_name(k): vocab_row_map(
        old_pre.vocabularies[k], v, NUM_OOV_BUCKETS) for k, v in new_pre.vocabularies.items()})
    cold = _session(cfg, new_pre).build().network
    return previous, old_pre, new_pre, cold, _session(cfg, new_pre, source)


@pytest.mark.parametrize("fused", [False, True], ids=["per-feature tables", "fused table"])
def test_embedding_rows_follow_their_vocabulary_entries(tmp_path, fused):
    cfg = fixtures.tiny_config(epochs=1)
    if fused:
        from schemas import config as config_lib

        raw = config_lib.to_dict(cfg)
        raw["model"]["embedding_fused"] = True
        cfg = config_lib.from_dict(raw)
    previous, old_pre, new_pre, cold, session = _warm_started_on_new_vocabularies(tmp_path, cfg)
    network = session.build().network
    embedding = network.get_layer("embedding")
    old_embedding = previous.get_layer("embedding")

    def table(layer, key):
        name = features.transformed_name(key)
        if fused:
            offset = layer.row_offsets[name]
            return layer.tables["fused"].embeddings.numpy()[offset:offset + layer
                                                            .sparse_vocab_sizes[name]]
        return layer.tables[name].embeddings.numpy()

    for key in ("user", "item"):
        new_table, old_table = table(embedding, key), table(old_embedding, key)
        fresh = table(cold.get_layer("embedding"), key)
        old_vocab = old_pre.vocabularies[key]
        for i, entry in enumerate(new_pre.vocabularies[key]):
            if entry in old_vocab:
                np.testing.assert_array_equal(new_table[i], old_table[old_vocab.index(entry)])
            else:
                np.testing.assert_array_equal(new_table[i], fresh[i])  # kept its init
        np.testing.assert_array_equal(new_table[-1], old_table[-1])  # the OOV row
    assert session.warm_start_report["new_rows"] == 1  # user 999
    assert len(session.warm_start_report["remapped_tables"]) == (1 if fused else 2)


def test_wide_rows_follow_their_vocabulary_entries_and_a_moved_cross_starts_fresh(tmp_path):
    """Before, the wide tables were copied by position: after a vocabulary change an id's
    regression weight went to another id."""
    import dataclasses

    cfg = fixtures.tiny_config(epochs=1)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(  # the tiny spec's names are not
        cfg.model, wide=True, wide_crosses=(("user", "item"),)))  # the preset's: past the check
    previous, old_pre, new_pre, cold, session = _warm_started_on_new_vocabularies(tmp_path, cfg)
    cold = cold.get_layer("wide")
    wide = session.build().network.get_layer("wide")
    old_wide = previous.get_layer("wide")
    for key in ("user", "item"):
        name = features.transformed_name(key)
        new_table = wide.tables[name].embeddings.numpy()
        old_table = old_wide.tables[name].embeddings.numpy()
        old_vocab = old_pre.vocabularies[key]
        for i, entry in enumerate(new_pre.vocabularies[key]):
            want = (old_table[old_vocab.index(entry)] if entry in old_vocab
                    else cold.tables[name].embeddings.numpy()[i])
            np.testing.assert_array_equal(new_table[i], want, err_msg=f"{key} {entry}")
    report = session.warm_start_report
    assert {n for n in report["remapped_tables"] if n.startswith("wide/")} == {
        "wide/wide/user_xf/embeddings:0", "wide/wide/item_xf/embeddings:0"}
    cross = wide.cross_tables["user_xf_x_item_xf"].embeddings
    assert report["kept_initial"][cross.name] == "the previous vocabulary is unknown"
    np.testing.assert_array_equal(cross.numpy(), cold.cross_tables["user_xf_x_item_xf"]
                                  .embeddings.numpy())


def test_changed_layers_keep_their_initialisation_and_are_reported(tmp_path):
    cfg = fixtures.tiny_config(epochs=1)
    _, pre, path = _trained(tmp_path, cfg)
    from schemas import config as config_lib

    raw = config_lib.to_dict(cfg)
    raw["model"]["tower_units"] = [6]
    session = _session(config_lib.from_dict(raw), pre, WarmStart(path))
    session.build()
    kept = session.warm_start_report["kept_initial"]
    assert kept["ctr/tower/dense_0/kernel:0"] == "shape (8, 6), previous (8, 8)"
    assert kept["ctr/logit/kernel:0"] == "shape (6, 1), previous (8, 1)"
    assert session.warm_start_report["restored"] > 0


def test_unusable_sources_are_named(tmp_path):
    cfg = fixtures.tiny_config(epochs=1)
    _, arrays, info = fixtures.tiny_arrays(200)
    pre = preprocess.fit(fixtures.tiny_frame(200), fixtures.TINY_SPEC)
    with pytest.raises(WarmStartError, match=r"warm start: .*nothing is not a SavedModel"):
        _session(cfg, pre, WarmStart(str(tmp_path / "nothing"))).build()
    other = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2, name="other")])
    other.save(str(tmp_path / "other"), save_format="tf")
    with pytest.raises(WarmStartError, match=r"no variable of the network is in .*other"):
        _session(cfg, pre, WarmStart(str(tmp_path / "other"))).build()
    with pytest.raises(WarmStartError, match=r"--warm-start .*: expected the output directory "
                                             r"of a finished `funnelrank train`"):
        warm_start.output_source(str(tmp_path), {}, 1, features.transformed_name)


@pytest.mark.parametrize("traces", [True, False], ids=["traced", "configs_only"])
def test_saved_variables_are_every_weight_by_name_read_from_the_files(tmp_path, traces):
    """``funnelrank train`` and the serving export save without traced functions; a Keras
    save with them (the default) is read the same way: from the two object graphs, nothing
    loaded or run."""
    network, _, _ = fixtures.tiny_network()
    path = str(tmp_path / "model")
    network.save(path, save_format="tf", save_traces=traces)
    got = warm_start.saved_variables(path)
    want = {v.name: v.numpy() for v in network.weights}
    assert sorted(got) == sorted(want) and "backbone/ctr/gate/logits/kernel:0" in got
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    other = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2, name="other")])
    other.save(str(tmp_path / "other"), save_format="tf")
    shutil.rmtree(os.path.join(path, "variables"))
    shutil.copytree(str(tmp_path / "other" / "variables"), os.path.join(path, "variables"))
    with pytest.raises(WarmStartError, match=r"saved_model.pb has \d+ objects, its variables "
                                             r"\d+: not one save"):
        warm_start.saved_variables(path)


class _TftOutput:
    """The one method of ``tft.TFTransformOutput`` that ``base_model_source`` reads."""

    def __init__(self, vocabularies):
        self.vocabularies = vocabularies

    def vocabulary_by_name(self, name):
        return [v.encode() for v in self.vocabularies[name]]


def test_tfx_base_model_maps_rows_through_the_exported_vocabularies(tmp_path):
    base = tmp_path / "Format-Serving"
    (base / "assets").mkdir(parents=True)
    (base / "assets" / "vocab_user").write_text("7\n3\n5\n")
    spec = features.DatasetSpec(
        name="t", sparse_keys=("user", "item", "shop"), dense_keys=(),
        label_keys={"ctr": "click"}, funnel=False, hash_buckets={"shop": 10},
        sparse_dtypes={"user": "int", "item": "int", "shop": "int"})
    source = base_model_source(str(base), _TftOutput({"vocab_user": ["5", "7", "9"],
                                                      "vocab_item": ["1", "2"]}), spec)
    assert source.model_dir == str(base)
    np.testing.assert_array_equal(source.row_maps["user_xf"].rows, [2, 0, -1, 3])
    assert source.row_maps["user_xf"].old_rows == 4
    # no exported vocabulary: the table starts fresh rather than take others' rows
    assert source.row_maps["item_xf"].old_rows is None
    assert "shop_xf" not in source.row_maps  # hash buckets are copied as they are


@pytest.mark.slow
def test_cli_train_warm_starts_from_a_previous_output(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    common = ["train", "--config", "configs/mmoe.yaml", "--rows", "3000", "--epochs", "1"]
    assert cli.main(common + ["--out", str(first)]) == 0
    assert cli.main(common + ["--seed", "9", "--out", str(second), "--warm-start",
                              str(first)]) == 0
    metrics = json.load(open(second / "metrics.json"))
    started = metrics["warm_start"]
    assert started["from"] == os.path.join(str(first), "model")
    assert started["restored"] > 0 and not started["kept_initial"]
    # The 9 wide tables (every sparse feature of the synthetic data) and the deep part's 5
    # (deep_max_vocabulary 100: category, device, hour, target action, user segment).
    tables = started["remapped_tables"]
    assert len([t for t in tables if t.startswith("wide/")]) == 9 and len(tables) == 14, tables
    for out in (first, second):  # a mean of AUCs (not summed over the 2 replicas)
        metrics = json.load(open(out / "metrics.json"))
        stop = metrics["early_stopping"]
        assert stop["monitor"] == "val_mean_auc" and 0.5 < stop["best"] < 1
        heads = metrics["validation_heads"]
        assert stop["best"] == pytest.approx(  # Keras' 1,000-threshold AUCs, 9 conversions
            np.mean([heads[h]["auc"] for h in ("ctr", "cvr", "ctcvr")]), abs=0.03)
    assert "warm start from" in capsys.readouterr().out
    assert cli.main(common + ["--out", str(tmp_path / "third"), "--warm-start",
                              str(tmp_path / "none")]) == 2
