"""Network assembly, the custom train step under MirroredStrategy, save/reload parity."""
import numpy as np
import pytest
import tensorflow as tf

from schemas import config as config_lib
from tests import fixtures
from trainer.data import from_arrays, predict
from trainer.model import build_network
from trainer.objectives import build_objective
from trainer.evaluation import evaluate_heads
from trainer.session import fit_model


def test_network_outputs_named_heads_and_ctcvr_is_product():
    network, arrays, info = fixtures.tiny_network()
    assert sorted(network.output_names) == ["ctcvr", "ctr", "cvr"]
    out = network({k: arrays[k][:16] for k in info.input_names})
    assert {k: tuple(v.shape) for k, v in out.items()} == {h: (16,) for h in ("ctr", "cvr",
                                                                               "ctcvr")}
    np.testing.assert_allclose(out["ctcvr"], out["ctr"] * out["cvr"], rtol=1e-6)
    names = [w.name for w in network.weights]
    assert any("shared/expert_0" in n for n in names) and any("ctr/gate" in n for n in names)


def test_unknown_backbone_and_bad_args_are_config_errors():
    _, _, info = fixtures.tiny_arrays(200)
    cfg = fixtures.tiny_config()
    bad = config_lib.from_dict({"model": {"backbone": "nope"}})
    with pytest.raises(config_lib.ConfigError, match="unknown backbone 'nope'"):
        build_network(bad.model, info)
    bad = config_lib.from_dict({"model": {"backbone_args": {"num_experts": 0}}})
    with pytest.raises(config_lib.ConfigError, match="num_experts=0"):
        build_network(bad.model, info)
    assert cfg.loss.name == "esmm"


def test_esmm_objective_matches_numpy_bce():
    objective = build_objective(fixtures.tiny_config().loss)
    click = np.array([1, 0, 1, 0], np.float32)
    conv = np.array([1, 0, 0, 0], np.float32)
    p_ctr = np.array([0.8, 0.3, 0.6, 0.1], np.float32)
    p_ctcvr = np.array([0.5, 0.01, 0.2, 0.05], np.float32)
    terms = objective({"ctr": click, "cvr": conv}, {"ctr": p_ctr, "ctcvr": p_ctcvr})

    def bce(y, p):
        return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))

    assert float(terms["bce_ctr"]) == pytest.approx(bce(click, p_ctr), rel=1e-5)
    assert float(terms["bce_ctcvr"]) == pytest.approx(bce(click * conv, p_ctcvr), rel=1e-5)
    assert objective.term_names(["ctr", "cvr", "ctcvr"]) == ["bce_ctr", "bce_ctcvr"]


def test_mirrored_two_replicas_train_and_reload_identically(two_cpu_strategy, tmp_path):
    _, arrays, info = fixtures.tiny_arrays(3000)
    cfg = fixtures.tiny_config(epochs=3, batch_size=64)
    assert two_cpu_strategy.num_replicas_in_sync == 2
    ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 128, shuffle=True, seed=1)
    model, progress = fit_model(cfg, info, ds, None, two_cpu_strategy)
    assert progress.examples_per_sec > 0
    history = model.history.history
    assert history["loss"][-1] < history["loss"][0]
    eval_ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 512)
    report = evaluate_heads(model.network, eval_ds)
    assert report["ctr"]["auc"] > 0.65  # planted signal is learned
    assert report["cvr"]["count"] == int(arrays["click_xf"].sum())
    model.network.save(str(tmp_path / "net"), save_format="tf")
    reloaded = tf.keras.models.load_model(str(tmp_path / "net"))
    before, _ = predict(model.network, eval_ds)
    after, _ = predict(reloaded, eval_ds)
    for head in before:
        np.testing.assert_array_equal(before[head], after[head])


def test_training_is_deterministic_on_cpu():
    _, arrays, info = fixtures.tiny_arrays(1500)
    cfg = fixtures.tiny_config(epochs=1, batch_size=100)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    results = []
    for _ in range(2):
        ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 100, shuffle=True, seed=5)
        model, _ = fit_model(cfg, info, ds, None, strategy)
        results.append(predict(model.network, from_arrays(
            arrays, info.input_names, fixtures.TINY_SPEC, 500))[0]["ctr"])
    np.testing.assert_allclose(results[0], results[1], atol=1e-6)


def test_xla_train_step_trains_and_dynamic_shape_losses_are_refused():
    _, arrays, info = fixtures.tiny_arrays(1500)
    cfg = fixtures.tiny_config(epochs=2, jit_compile=True)
    ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 128, shuffle=True, seed=1)
    model, _ = fit_model(cfg, info, ds, None, tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert model.train_function is not None and model._jit_compile  # pylint: disable=protected-access
    history = model.history.history
    assert np.isfinite(history["loss"]).all() and history["loss"][-1] < history["loss"][0]
    d = config_lib.to_dict(cfg)
    d["loss"] = {"name": "pwiser"}
    with pytest.raises(config_lib.ConfigError, match="train.jit_compile: loss 'pwiser' gathers"):
        config_lib.from_dict(d)


def test_mixed_precision_step_scales_the_loss_and_keeps_float32_weights():
    from trainer.optimizers import FusedAdam
    from trainer.session import build_model, compile_model, precision_policy

    _, arrays, info = fixtures.tiny_arrays(1000)
    cfg = fixtures.tiny_config(mixed_precision=True)
    assert precision_policy(cfg) == "float32"  # no GPU here: the flag is ignored, logged
    tf.keras.mixed_precision.set_global_policy("mixed_float16")  # what a GPU run uses
    try:
        model = compile_model(build_model(cfg, info), cfg)  # as the session compiles it
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    assert isinstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, FusedAdam)
    ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 128, shuffle=True, seed=1)
    history = model.fit(ds, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all() and history["loss"][-1] < history["loss"][0]
    assert all(w.dtype == tf.float32 for w in model.network.trainable_weights)
    outputs = model.network({k: arrays[k][:8] for k in info.input_names})
    assert outputs["ctr"].dtype == tf.float32  # heads stay float32 for the losses


def test_steps_per_execution_trains_the_same_steps_as_one_step_per_call():
    """``train.steps_per_execution`` only changes how often Python and the callbacks run: the
    same batches, the same updates (8 steps per epoch here, so the last call of an epoch runs
    the 2 steps left)."""
    from trainer.session import build_model, compile_model

    _, arrays, info = fixtures.tiny_arrays(1000)
    weights, losses = {}, {}
    for spe in (1, 3):
        tf.keras.utils.set_random_seed(3)  # the same shuffles
        cfg = fixtures.tiny_config(steps_per_execution=spe)
        model = compile_model(build_model(cfg, info), cfg)
        ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 128, shuffle=True, seed=1)
        losses[spe] = model.fit(ds, epochs=2, verbose=0).history["loss"]
        assert int(model.optimizer.iterations.numpy()) == 2 * 8
        weights[spe] = [w.numpy() for w in model.network.weights]
    np.testing.assert_allclose(losses[3], losses[1], rtol=1e-5)
    for a, b in zip(weights[3], weights[1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _count_train_step_traces(monkeypatch):
    """A list that gets one entry each time Keras traces ``FunnelModel.train_step``."""
    from trainer.funnel_model import FunnelModel

    traces = []
    original = FunnelModel.train_step

    def counted(self, data):
        traces.append(tf.distribute.get_replica_context() is not None)
        return original(self, data)

    monkeypatch.setattr(FunnelModel, "train_step", counted)
    return traces


@pytest.mark.parametrize("overrides", [
    {}, {"train.lr_schedule": "cosine", "train.lr_warmup_steps": 1},
    {"train.sparse_optimizer": "adam"}, {"loss.name": "uncertainty"}, {"loss.name": "adaftr"},
], ids=["lazy_adam_tables", "lr_schedule", "adam_tables", "uncertainty", "adaftr"])
def test_the_train_step_is_traced_once_not_again_for_its_variables(monkeypatch, overrides):
    """``FunnelModel.build_optimizers`` makes the slots (and a schedule's current rate) before
    the first step, so TensorFlow does not trace the train function a second time after a
    first trace that created variables (it did, doubling the tracing before the first step).
    One step per call: one trace; a multi-step call: two (autograph traces the loop body to
    find its outputs); steps per call capped at the steps per round."""
    _, arrays, info = fixtures.tiny_arrays(1000)
    base = config_lib.to_dict(fixtures.tiny_config(epochs=2))
    for key, value in overrides.items():
        section, name = key.split(".")
        base[section][name] = value
    for spe, steps_per_epoch, want in ((1, 8, 1), (4, 8, 2), (8, 1, 1)):
        cfg = config_lib.from_dict({**base, "train": {**base["train"],
                                                      "steps_per_execution": spe}})
        traces = _count_train_step_traces(monkeypatch)
        rows = {k: v[:128 * steps_per_epoch] for k, v in arrays.items()}
        ds = from_arrays(rows, info.input_names, fixtures.TINY_SPEC, 128, shuffle=True, seed=1)
        model, _ = fit_model(cfg, info, ds, None, tf.distribute.get_strategy(),
                             steps_per_epoch=steps_per_epoch)
        assert len(traces) == want, (spe, steps_per_epoch, overrides)
        assert int(model.optimizer.iterations.numpy()) == 2 * steps_per_epoch


def test_mixed_precision_and_two_replicas_trace_the_step_once(monkeypatch, two_cpu_strategy):
    from trainer.session import build_model, compile_model

    _, arrays, info = fixtures.tiny_arrays(1000)
    cfg = fixtures.tiny_config(steps_per_execution=1, epochs=2)
    tf.keras.mixed_precision.set_global_policy("mixed_float16")  # what a GPU run uses
    try:
        model = compile_model(build_model(cfg, info), cfg)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    assert isinstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    traces = _count_train_step_traces(monkeypatch)
    ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 128, shuffle=True, seed=1)
    model.fit(ds, epochs=2, verbose=0)
    assert len(traces) == 1
    traces = _count_train_step_traces(monkeypatch)
    fit_model(cfg, info, ds, None, two_cpu_strategy, steps_per_epoch=8)
    assert traces == [True, True]  # one trace, the step built once per replica


def test_metrics_files_are_strict_json_with_null_for_non_finite_numbers(tmp_path):
    """A head whose labels are one class has a NaN AUC; Python's json writes ``NaN``, which
    is not JSON (jq and browsers refuse the whole file). ``write_json`` writes null, turns
    NumPy scalars into numbers, and refuses what JSON cannot hold."""
    import json

    from trainer.session import write_json

    value = {"heads": {"a": {"auc": float("nan"), "logloss": np.float32(0.25),
                             "count": np.int64(7)},
                       "b": {"auc": np.float64("nan"), "gauc": float("inf")}},
             "history": (0.5, -float("inf")), "ok": np.bool_(True), "name": None}
    path = write_json(str(tmp_path / "metrics.json"), value)

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    got = json.loads(open(path).read(), parse_constant=refuse)
    assert got == {"heads": {"a": {"auc": None, "logloss": 0.25, "count": 7},
                             "b": {"auc": None, "gauc": None}},
                   "history": [0.5, None], "ok": True, "name": None}
    with pytest.raises(TypeError, match="not JSON serialisable: ndarray"):
        write_json(str(tmp_path / "bad.json"), {"x": np.zeros(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # nothing half-made
