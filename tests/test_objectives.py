"""Loss recipes selected by config: esmm and pwiser (BCE + lambda * PWiseR)."""
import numpy as np
import pytest
import tensorflow as tf

from schemas import config as config_lib
from tests import fixtures
from tests.test_pwiser import _reference as pwiser_reference
from trainer.data import from_arrays
from trainer.objectives import build_objective
from trainer.session import fit_model


def _bce(y, p):
    return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))


def _cfg(**loss):
    return config_lib.from_dict({"loss": loss}).loss


@pytest.mark.parametrize("head", ["ctr", "ctcvr"])
def test_pwiser_recipe_adds_lambda_times_pwiser_to_esmm(head):
    rng = np.random.default_rng(0)
    click = (rng.random(64) < 0.4).astype(np.float32)
    conversion = click * (rng.random(64) < 0.5).astype(np.float32)
    outputs = {"ctr": rng.uniform(0.05, 0.95, 64).astype(np.float32),
               "ctcvr": rng.uniform(0.01, 0.5, 64).astype(np.float32)}
    objective = build_objective(_cfg(name="pwiser", args={"lambda": 0.25, "m1": 0.2,
                                                          "head": head}))
    terms = objective({"ctr": click, "cvr": conversion}, outputs)
    assert objective.term_names(["ctr", "cvr", "ctcvr"]) == ["bce_ctr", "bce_ctcvr", "pwiser"]
    assert float(terms["bce_ctr"]) == pytest.approx(_bce(click, outputs["ctr"]), rel=1e-5)
    expected = 0.25 * pwiser_reference(click, conversion, outputs[head].astype(np.float64),
                                       m1=0.2, m2=0.3)
    assert float(terms["pwiser"]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("loss, message", [
    ({"name": "pwiser", "args": {"lamda": 1}}, r"takes \['calibrator', 'cvr_clicked', 'head', "
                                               r"'lambda', 'm1', 'm2', 'margin_mode'\] "
                                               r"arguments, got "
                                               r"\['lamda'\]"),
    ({"name": "pwiser", "args": {"head": "cvr"}},
     r"loss.args.head` must be one of \['ctr', 'ctcvr'\], received: loss.args.head='cvr'"),
    ({"name": "pwiser", "args": {"lambda": -1}},
     r"loss.args.lambda` must be a finite number >= 0, received: loss.args.lambda=-1"),
    ({"name": "pwiser", "args": {"margin_mode": "x"}}, r"margin_mode=.x."),
    ({"name": "esmm", "args": {"m1": 1}}, r"esmm takes \['calibrator', 'cvr_clicked'\] "
                                          r"arguments, got "
                                          r"\['m1'\]"),
    ({"name": "esmm", "args": {"calibrator": -0.5}}, r"`loss.args.calibrator` must be a finite "
                                                     r"number >= 0, received: "
                                                     r"loss.args.calibrator=-0.5"),
    ({"name": "focal"}, r"loss.name: expected one of \[.*'bce'.*\], got 'focal'"),
])
def test_bad_loss_config_is_named(loss, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        build_objective(_cfg(**loss))


def test_calibrator_term_is_weighted_mean_excess_of_ctcvr_over_ctr():
    objective = build_objective(_cfg(name="esmm", args={"calibrator": 0.6}))
    ctr = np.array([0.5, 0.2, 0.1], np.float32)
    ctcvr = np.array([0.1, 0.3, 0.15], np.float32)
    terms = objective({"ctr": np.ones(3, np.float32), "cvr": np.zeros(3, np.float32)},
                      {"ctr": ctr, "ctcvr": ctcvr})
    assert float(terms["calibrator"]) == pytest.approx(0.6 * np.mean([0, 0.1, 0.05]), rel=1e-5)
    with pytest.raises(config_lib.ConfigError, match="calibrator needs a ctcvr head"):
        objective.term_names(["ctr"])


def test_cvr_clicked_adds_the_cvr_bce_over_clicked_rows_only():
    """ESMM + loss.args.cvr_clicked: w * BCE(p_cvr, conversion) averaged over clicked rows
    (AdaFTR eq. 4's L_cvr), beside the entire-space terms, which do not change."""
    objective = build_objective(_cfg(name="esmm", args={"cvr_clicked": 0.5}))
    click = np.array([1, 0, 1, 1, 0], np.float32)
    conversion = np.array([1, 0, 0, 1, 0], np.float32)
    outputs = {"ctr": np.array([0.7, 0.2, 0.6, 0.4, 0.1], np.float32),
               "cvr": np.array([0.3, 0.9, 0.2, 0.6, 0.05], np.float32),
               "ctcvr": np.array([0.2, 0.1, 0.1, 0.25, 0.01], np.float32)}
    terms = objective({"ctr": click, "cvr": conversion}, outputs)
    assert objective.term_names(["ctr", "cvr", "ctcvr"]) == ["bce_ctr", "bce_ctcvr",
                                                            "bce_cvr_clicked"]
    clicked = click == 1
    expected = 0.5 * _bce(conversion[clicked], outputs["cvr"][clicked])
    assert float(terms["bce_cvr_clicked"]) == pytest.approx(expected, rel=1e-5)
    assert float(terms["bce_ctcvr"]) == pytest.approx(_bce(click * conversion, outputs["ctcvr"]),
                                                      rel=1e-5)
    none_clicked = objective({"ctr": np.zeros(5, np.float32), "cvr": conversion}, outputs)
    assert float(none_clicked["bce_cvr_clicked"]) == 0.0  # no clicked row: 0, not NaN
    with pytest.raises(config_lib.ConfigError, match=r"cvr_clicked trains the cvr head, the "
                                                     r"model's heads are \['ctr'\]"):
        objective.term_names(["ctr"])
    assert build_objective(_cfg(name="esmm")).term_names(["ctr", "cvr", "ctcvr"]) == [
        "bce_ctr", "bce_ctcvr"]  # off by default


def test_pwiser_on_ctcvr_needs_the_ctcvr_head():
    objective = build_objective(_cfg(name="pwiser", args={"head": "ctcvr"}))
    with pytest.raises(config_lib.ConfigError, match="heads are \\['ctr'\\]"):
        objective.term_names(["ctr"])


def test_pwiser_trains_under_two_replicas_without_nan(two_cpu_strategy):
    _, arrays, info = fixtures.tiny_arrays(2000)
    cfg = config_lib.from_dict({**config_lib.to_dict(fixtures.tiny_config(epochs=2)),
                                "loss": {"name": "pwiser", "args": {"lambda": 0.5}}})
    ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 256, shuffle=True, seed=1)
    model, _ = fit_model(cfg, info, ds, None, two_cpu_strategy)
    history = model.history.history
    assert np.all(np.isfinite(history["pwiser"])) and history["pwiser"][-1] > 0
    assert history["loss"][-1] < history["loss"][0]


def test_pwiser_on_a_direct_ctcvr_tower_trains_end_to_end():
    """FuxiCTR-style tasks [ctr, ctcvr] (the paper's baselines): PWiseR ranks on the ctcvr
    tower itself, ESMM's BCE terms train both towers, cvr is derived (ctcvr / ctr)."""
    from trainer.session import evaluate_heads

    _, arrays, info = fixtures.tiny_arrays(1200)
    base = config_lib.to_dict(fixtures.tiny_config(epochs=2))
    base["model"]["tasks"] = ["ctr", "ctcvr"]
    base["loss"] = {"name": "pwiser", "args": {"lambda": 0.5, "head": "ctcvr"}}
    cfg = config_lib.from_dict(base)
    ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 200, shuffle=True, seed=1)
    model, _ = fit_model(cfg, info, ds, None, tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert sorted(model.network.output_names) == ["ctcvr", "ctr", "cvr"]
    assert any("ctcvr/tower" in v.name for v in model.network.trainable_variables)
    history = model.history.history
    for term in ("bce_ctr", "bce_ctcvr", "pwiser"):
        assert np.all(np.isfinite(history[term])), term
    assert history["loss"][-1] < history["loss"][0]
    x, y = next(iter(ds))
    outputs = model.training_network(x, training=False)
    terms = model.objective(y, outputs)
    click, conv = y["ctr"].numpy(), y["cvr"].numpy()
    want = 0.5 * pwiser_reference(click, conv, outputs["ctcvr"].numpy().astype(np.float64))
    assert want > 0 and float(terms["pwiser"]) == pytest.approx(want, rel=1e-5)
    report = evaluate_heads(model.network, from_arrays(arrays, info.input_names,
                                                       fixtures.TINY_SPEC, 600))
    assert sorted(report) == ["ctcvr", "ctr", "cvr"]
