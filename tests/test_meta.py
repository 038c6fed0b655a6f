"""MAN's two-stage training: MAML step (trainer/meta.py), partition sampling, early stopping,
the uncertainty recipe, and the export of a meta-trained MAN model."""

import numpy as np
import pytest
import tensorflow as tf

from schemas import config as config_lib
from tests import fixtures
from trainer.data import from_arrays
from trainer.meta import PartitionSampler, fusion_layers, maml_gradients, substituted
from trainer.session import fit_model


def _linear(w0):
    layer = tf.keras.layers.Dense(1, use_bias=False, kernel_initializer=tf.constant_initializer(w0))
    layer.build((None, 1))
    return layer


def _mse(layer):
    return lambda batch: tf.reduce_mean(tf.square(layer(batch[0]) - batch[1]))


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_step_matches_hand_computed_update(first_order):
    """Model y = w x, loss mean((w x - y)^2): every derivative is closed-form."""
    w, alpha = 0.7, 0.1
    xa, ya = np.array([[1.0], [2.0], [-1.0]]), np.array([[0.5], [1.0], [0.0]])
    xb, yb = np.array([[3.0], [0.5]]), np.array([[2.0], [-1.0]])
    layer = _linear(w)
    loss, grads = maml_gradients(
        [layer], [layer.kernel], _mse(layer),
        (tf.constant(xa, tf.float32), tf.constant(ya, tf.float32)),
        (tf.constant(xb, tf.float32), tf.constant(yb, tf.float32)), alpha, first_order)
    g_a = np.mean(2 * xa * (w * xa - ya))
    w_adapted = w - alpha * g_a
    dlb = np.mean(2 * xb * (w_adapted * xb - yb))                # dL_b/dtheta' at theta'
    hessian_a = np.mean(2 * xa ** 2)                            # d^2 L_a / dw^2
    expected = dlb if first_order else dlb * (1 - alpha * hessian_a)
    assert float(loss) == pytest.approx(np.mean((w_adapted * xb - yb) ** 2), rel=1e-5)
    assert float(grads[0]) == pytest.approx(expected, rel=1e-5)
    assert float(layer.kernel) == pytest.approx(w)  # the variable itself is untouched
    if not first_order:  # the second-order term is really there
        assert abs(expected - dlb) > 0.1 * abs(dlb)


def test_substituted_restores_the_variables_and_refuses_strangers():
    layer = _linear(2.0)
    x = tf.constant([[3.0]])
    with substituted([layer], {layer.kernel.ref(): tf.constant([[5.0]])}):
        assert float(layer(x)) == 15.0
    assert float(layer(x)) == 6.0 and layer.kernel in layer.trainable_weights
    assert len(layer.trainable_weights) == 1
    other = tf.Variable([[1.0]], name="stranger")
    with pytest.raises(ValueError, match="not attributes of the given layers.*stranger"):
        with substituted([layer], {other.ref(): tf.constant([[0.0]])}):
            pass
    assert float(layer(x)) == 6.0


def test_partition_sampler_draws_disjoint_rows_of_one_partition():
    partitions = np.repeat([3, 5, 9], [40, 7, 25])
    sampler = PartitionSampler(partitions, 8, 4, seed=0)
    assert sampler.keys == [3, 9] and sampler.skipped == 1  # 5 has too few rows
    seen = set()
    for _ in range(20):
        support, query = sampler.sample()
        assert len(support) == 8 and len(query) == 4 and not set(support) & set(query)
        assert len(set(partitions[np.concatenate([support, query])])) == 1
        seen.add(int(partitions[support[0]]))
    assert seen == {3, 9}
    with pytest.raises(config_lib.ConfigError, match="no partition has support_size \\+ "
                                                     "query_size = 100 rows \\(largest has 40\\)"):
        PartitionSampler(partitions, 60, 40, seed=0)


def _man_config(**sections):
    d = config_lib.to_dict(fixtures.tiny_config(epochs=2, batch_size=128))
    d["model"].update({"backbone": "man", "tower_units": [8, 4],
                       "backbone_args": {"num_shared_experts": 1, "num_task_experts": 1,
                                         "expert_units": [8]}})
    d["loss"] = {"name": "uncertainty", "weights": {}}
    d["meta"] = {"enabled": True, "partition_key": "item", "steps": 3, "support_size": 16,
                 "query_size": 16}
    for key, value in sections.items():
        d[key] = {**d.get(key, {}), **value}
    return config_lib.from_dict(d)


def _fit(cfg, strategy, rows=1500, validation=True):
    _, arrays, info = fixtures.tiny_arrays(rows)
    ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 128, shuffle=True, seed=1)
    val = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 500) if validation else None
    label_keys = {"click": "click_xf", "conversion": "conversion_xf"}
    return fit_model(cfg, info, ds, val, strategy, meta_rows=lambda: (arrays, label_keys)), info


def test_meta_stage_moves_only_the_fusion_layers_under_two_replicas(two_cpu_strategy):
    cfg = _man_config(meta={"enabled": False})
    (model, _), _ = _fit(cfg, two_cpu_strategy, validation=False)  # stage 1
    fusion = fusion_layers(model.network, cfg.meta.layers)
    assert sorted(l.name for l in fusion) == ["attention", "ctr/logit", "ctr/tower",
                                              "cvr/logit", "cvr/tower"]
    fusion_refs = {v.ref() for l in fusion for v in l.trainable_variables}
    before = {v.ref(): v.numpy().copy() for v in model.network.trainable_variables}
    from trainer.meta import meta_train
    _, arrays, info = fixtures.tiny_arrays(1500)
    summary = meta_train(model, arrays, info.input_names,
                         {"click": "click_xf", "conversion": "conversion_xf"}, "item_xf",
                         config_lib.MetaConfig(enabled=True, partition_key="item", steps=4,
                                               support_size=16, query_size=16, outer_lr=0.05),
                         two_cpu_strategy, seed=0)
    assert summary["steps"] == 4 and summary["partitions"] == 25
    for v in model.network.trainable_variables:
        moved = not np.array_equal(before[v.ref()], v.numpy())
        assert moved == (v.ref() in fusion_refs), v.name


def test_two_stage_man_reports_weights_and_exports_without_log_sigma(tmp_path):
    from serving import export

    pre, arrays, info = fixtures.tiny_arrays(1500)
    cfg = _man_config(train={"early_stopping_patience": 1, "epochs": 3})
    (model, progress), _ = _fit(cfg, tf.distribute.OneDeviceStrategy("/cpu:0"))
    summary = progress.summary
    assert set(summary) == {"early_stopping", "objective", "meta", "steps"}
    stop = summary["early_stopping"]
    history = model.history.history["val_ctcvr_auc"]
    assert stop["best"] == pytest.approx(max(history)) and stop["epochs_run"] == len(history)
    weights = summary["objective"]
    log_sigma = model.objective.sigma.log_sigma.numpy()
    assert weights["ctr"]["weight"] == pytest.approx(0.5 * np.exp(-2 * log_sigma[0]), rel=1e-6)
    assert not np.allclose(log_sigma, 0.0)  # learned
    assert summary["meta"]["steps"] == 3
    out = export.export_from_preprocessor(model.network, pre, str(tmp_path / "1"))
    names = fixtures.exported_variable_names(out)
    assert "backbone/attention/query/kernel:0" in names
    assert not [n for n in names if "log_sigma" in n or "uncertainty" in n]
    loaded = tf.saved_model.load(out)
    frame = fixtures.tiny_frame(50, seed=8)
    feeds = {k: tf.constant(frame[k].to_numpy().astype("float32" if k == "price" else "int64"))
             for k in fixtures.TINY_SPEC.feature_keys}
    got = loaded.signatures["predict_raw"](**feeds)
    want = model.network(pre.transform(frame), training=False)
    for head in ("ctr", "cvr", "ctcvr"):
        np.testing.assert_allclose(got[head].numpy(), want[head].numpy(), atol=1e-5)


@pytest.mark.parametrize("sections, message", [
    ({"meta": {"partition_key": "price"}}, r"meta.partition_key: expected one of the sparse "
                                           r"features \['item', 'user'\], got 'price'"),
    ({"train": {"early_stopping_patience": 2}, "meta": {"enabled": False}},
     r"early_stopping_patience needs validation data"),
    ({"train": {"early_stopping_patience": 1, "early_stopping_monitor": "val_auc"},
      "meta": {"enabled": False}}, r"'val_auc' is not a training log key")])
def test_two_stage_configuration_errors(sections, message):
    cfg = _man_config(**sections)
    validation = "early_stopping_monitor" in sections.get("train", {})
    with pytest.raises(config_lib.ConfigError, match=message):
        _fit(cfg, tf.distribute.OneDeviceStrategy("/cpu:0"), rows=400, validation=validation)
