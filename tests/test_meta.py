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
    return fit_model(cfg, info, ds, val, strategy, spec=fixtures.TINY_SPEC,
                     meta_arrays=lambda: arrays), info


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
                         fixtures.TINY_SPEC, "item_xf",
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
    cfg = _man_config(train={"early_stopping_patience": 1, "epochs": 3,
                             "early_stopping_monitor": "val_ctcvr_auc"})
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
    meta = summary["meta"]
    assert meta["steps"] == 3 and len(meta["query_loss"]) == 3  # the trajectory, per step
    # 3 steps < meta.log_every: the first and last windows are the whole trajectory.
    assert meta["query_loss_last"] == pytest.approx(np.mean(meta["query_loss"]))
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
      "meta": {"enabled": False}}, r"'val_auc' is not a validation log key; have \[.*'val_loss'")])
def test_two_stage_configuration_errors(sections, message):
    cfg = _man_config(**sections)
    validation = "early_stopping_monitor" in sections.get("train", {})
    with pytest.raises(config_lib.ConfigError, match=message):
        _fit(cfg, tf.distribute.OneDeviceStrategy("/cpu:0"), rows=400, validation=validation)


# ----------------------------------------------------------------------------- test tasks (4.3)
def test_adapt_takes_plain_gradient_steps_on_tensors():
    """y = w x, loss mean((w x - y)^2): k inner steps of w <- w - a * mean(2 x (w x - y))."""
    from trainer.meta import adapt

    w, alpha, steps = 0.7, 0.1, 3
    xa, ya = np.array([[1.0], [2.0], [-1.0]]), np.array([[0.5], [1.0], [0.0]])
    layer = _linear(w)
    theta, losses = adapt([layer], [layer.kernel], _mse(layer),
                          (tf.constant(xa, tf.float32), tf.constant(ya, tf.float32)), alpha,
                          steps)
    expected = [w]
    for _ in range(steps):
        expected.append(expected[-1] - alpha * np.mean(2 * xa * (expected[-1] * xa - ya)))
    assert float(theta[0]) == pytest.approx(expected[-1], rel=1e-5)
    np.testing.assert_allclose(losses.numpy(), [np.mean((v * xa - ya) ** 2) for v in expected],
                               rtol=1e-5)
    assert float(layer.kernel) == pytest.approx(w)  # the variable itself is untouched


def _test_task_cfg(**meta):
    args = {"enabled": False, "partition_key": "item", "support_size": 16, "query_size": 16,
            "inner_lr": 0.05, "test_task_eval": True, "test_task_steps": 2, **meta}
    return config_lib.MetaConfig(**args)


def test_test_tasks_score_fine_tuned_copies_and_leave_the_model_as_it_is():
    from trainer.session import build_model
    from trainer.meta import evaluate_test_tasks

    _, arrays, info = fixtures.tiny_arrays(1500)
    model = build_model(_man_config(), info)
    cfg = _test_task_cfg()
    model(_batch_x(arrays, info, np.arange(4)))
    before = [v.numpy().copy() for v in model.variables]
    summary = evaluate_test_tasks(model, arrays, info.input_names, fixtures.TINY_SPEC, "item_xf",
                                  cfg, seed=5)
    for b, v in zip(before, model.variables):
        np.testing.assert_array_equal(b, v.numpy(), err_msg=v.name)
    sampler = PartitionSampler(arrays["item_xf"], 16, 16, seed=0)
    assert summary["partitions"] == 25 and summary["partitions_skipped"] == 0
    assert set(summary["per_partition"]) == {str(k) for k in sampler.keys}
    for key, rows in sampler.groups.items():
        entry = summary["per_partition"][str(key)]
        assert (entry["support_rows"], entry["query_rows"]) == (16, len(rows) - 16)
        assert entry["after"]["ctr"]["count"] == len(rows) - 16
    pooled = summary["pooled"]
    assert pooled["after"]["ctr"]["count"] == 1500 - 25 * 16
    assert pooled["after"]["cvr"]["count"] < pooled["after"]["ctr"]["count"]  # clicked only
    assert pooled["after"]["ctr"]["logloss"] != pooled["before"]["ctr"]["logloss"]
    falls = [e["support_loss"][1] < e["support_loss"][0]
             for e in summary["per_partition"].values()]
    assert sum(falls) >= 20, falls  # small steps on the support loss lower it

    # One partition by hand: assign the same SGD steps to the variables, score, restore.
    first = sampler.keys[0]
    rows = sampler.groups[first]
    chosen = np.zeros(len(rows), bool)
    chosen[np.random.default_rng(5).choice(len(rows), 16, replace=False)] = True
    support, query = rows[chosen], rows[~chosen]
    variables = [v for layer in fusion_layers(model.network, cfg.layers)
                 for v in layer.trainable_variables]
    x_s, y_s = _batch_x(arrays, info, support), _labels(arrays, support)
    saved = [v.numpy().copy() for v in variables]
    for _ in range(2):
        with tf.GradientTape() as tape:
            terms = model.loss_terms(y_s, model.training_outputs(x_s, y_s, training=False))
            loss = tf.add_n(list(terms.values()))
        for v, g in zip(variables, tape.gradient(loss, variables)):
            v.assign_sub(0.05 * g)
    probs = model.network(_batch_x(arrays, info, query), training=False)["ctr"].numpy()
    for v, s in zip(variables, saved):
        v.assign(s)
    from trainer import metrics as offline
    click = arrays["click_xf"][query].reshape(-1)
    got = summary["per_partition"][str(first)]["after"]["ctr"]
    assert got["auc"] == pytest.approx(offline.auc(click, probs), abs=1e-6)
    assert got["logloss"] == pytest.approx(offline.logloss(click, probs), rel=1e-5)


def test_zero_test_task_steps_scores_the_trained_model():
    from trainer.session import build_model
    from trainer.meta import evaluate_test_tasks

    _, arrays, info = fixtures.tiny_arrays(600)
    model = build_model(_man_config(), info)
    summary = evaluate_test_tasks(model, arrays, info.input_names,
                                  fixtures.TINY_SPEC,
                                  "item_xf", _test_task_cfg(test_task_steps=0), seed=1)
    assert summary["pooled"]["after"] == summary["pooled"]["before"]
    for entry in summary["per_partition"].values():
        assert len(set(entry["support_loss"])) == 1
    with pytest.raises(config_lib.ConfigError, match="no column 'segment_xf'"):
        evaluate_test_tasks(model, arrays, info.input_names, fixtures.TINY_SPEC, "segment_xf",
                            _test_task_cfg(), seed=1)


def test_test_tasks_of_a_model_built_for_two_replicas_match_the_single_device_ones(
        two_cpu_strategy):
    from trainer.session import build_model
    from trainer.meta import evaluate_test_tasks

    _, arrays, info = fixtures.tiny_arrays(600)
    args = (arrays, info.input_names, fixtures.TINY_SPEC,
            "item_xf", _test_task_cfg(support_size=8, query_size=8))
    with two_cpu_strategy.scope():
        mirrored = build_model(_man_config(), info)
    single = build_model(_man_config(), info)  # same seed: same initial weights
    got = evaluate_test_tasks(mirrored, *args, seed=2)
    want = evaluate_test_tasks(single, *args, seed=2)
    assert got["partitions"] == want["partitions"] > 0
    for key, entry in want["per_partition"].items():
        for which in ("before", "after"):
            for head, metrics in entry[which].items():
                assert got["per_partition"][key][which][head]["logloss"] == pytest.approx(
                    metrics["logloss"], rel=1e-5), (key, which, head)


def test_test_task_steps_must_not_be_negative():
    with pytest.raises(config_lib.ConfigError, match=r"`meta.test_task_steps` must be an "
                                                     r"integer >= 0, received: "
                                                     r"meta.test_task_steps=-1"):
        _man_config(meta={"test_task_steps": -1})


@pytest.mark.slow
def test_train_writes_test_tasks_and_the_bench_reads_them(tmp_path):
    from funnelrank.commands import bench
    from funnelrank.commands import train as train_local

    cfg = config_lib.load("configs/man.yaml", {
        "data.generate_rows": 3000, "train.epochs": 1, "train.batch_size": 256,
        "train.early_stopping_patience": 0, "meta.steps": 2, "meta.support_size": 16,
        "meta.query_size": 16, "meta.test_task_eval": True,
        "model.backbone_args": {"num_shared_experts": 1, "num_task_experts": 1,
                                "expert_units": [8]}, "model.tower_units": [4]})
    result = train_local.train(cfg, str(tmp_path / "run"))
    tasks = result["test_tasks"]
    assert tasks["split"] == "eval" and tasks["partitions"] >= 1
    assert tasks["pooled"]["after"]["ctr"]["count"] == sum(
        e["query_rows"] for e in tasks["per_partition"].values())
    assert bench._metric(result, "test_tasks.ctr.auc") == tasks["pooled"]["after"]["ctr"]["auc"]
    assert bench._metric(result, "test_tasks_before.cvr.logloss") == \
        tasks["pooled"]["before"]["cvr"]["logloss"]
    assert bench._metric(result, "ctr.auc") == result["heads"]["ctr"]["auc"]


def _batch_x(arrays, info, rows):
    return {k: tf.constant(arrays[k][rows]) for k in info.input_names}


def _labels(arrays, rows):
    return {"ctr": tf.constant(arrays["click_xf"][rows].reshape(-1)),
            "cvr": tf.constant(arrays["conversion_xf"][rows].reshape(-1))}
