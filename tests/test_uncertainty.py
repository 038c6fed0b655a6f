"""Uncertainty weighting (trainer/losses/uncertainty.py, UncertaintyWeighting) and MAN's recipe
against NumPy (MAN eq. 3)."""
import numpy as np
import pytest
import tensorflow as tf

from schemas import config as config_lib
from trainer.losses.uncertainty import UncertaintyWeighting
from trainer.objectives import build_objective


def _reference(losses, log_sigma):
    return sum(np.exp(-2 * s) / 2 * l + s for l, s in zip(losses, log_sigma))


def _weighted(losses, log_sigma):
    layer = UncertaintyWeighting(len(log_sigma), dtype="float64")
    layer.build(None)
    layer.log_sigma.assign(log_sigma)
    return layer(losses), layer


def test_matches_numpy_and_eq3_for_lists_tensors_and_dicts():
    losses = np.array([0.7, 0.05, 2.3])
    log_sigma = np.array([0.0, -1.2, 0.8])
    got, layer = _weighted(tf.constant(losses), log_sigma)
    assert float(got) == pytest.approx(_reference(losses, log_sigma), abs=1e-12)
    s1, s2 = np.exp(log_sigma[:2])  # eq. 3 with two tasks
    eq3 = losses[0] / (2 * s1 ** 2) + losses[1] / (2 * s2 ** 2) + np.log(s1 * s2)
    got2, layer2 = _weighted([tf.constant(0.7, tf.float64), np.float64(0.05)], log_sigma[:2])
    assert float(got2) == pytest.approx(eq3, abs=1e-12)
    terms = layer2.weighted({"ctr": 0.7, "ctcvr": np.float64(0.05)})
    assert list(terms) == ["ctr", "ctcvr"]
    assert float(terms["ctcvr"]) == pytest.approx(0.05 / (2 * s2 ** 2) + log_sigma[1], abs=1e-12)
    named = {"ctr": np.float64(0.7), "ctcvr": np.float64(0.05)}
    assert float(layer2(named)) == pytest.approx(eq3, abs=1e-12)
    np.testing.assert_allclose(layer.task_weights(), 0.5 * np.exp(-2 * log_sigma), rtol=1e-12)


def test_layer_weights_gradient_and_config():
    layer = UncertaintyWeighting(num_tasks=2, initial_log_sigma=0.5, name="uw")
    losses = [tf.constant(1.2), tf.constant(0.3)]
    with tf.GradientTape() as tape:
        total = layer(losses)
    assert [w.name for w in layer.trainable_weights] == ["uw/log_sigma:0"]
    np.testing.assert_allclose(layer.log_sigma.numpy(), [0.5, 0.5])
    assert float(total) == pytest.approx(_reference([1.2, 0.3], [0.5, 0.5]), rel=1e-6)
    grad = tape.gradient(total, layer.log_sigma).numpy()
    np.testing.assert_allclose(grad, -np.exp(-1.0) * np.array([1.2, 0.3]) + 1.0, rtol=1e-5)
    config = layer.get_config()
    clone = UncertaintyWeighting.from_config(config)
    assert clone.get_config() == config
    restored = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
    assert isinstance(restored, UncertaintyWeighting) and restored.num_tasks == 2
    assert tf.keras.utils.get_registered_name(UncertaintyWeighting) == \
        "funnelrank>UncertaintyWeighting"


def test_layer_rejects_bad_args_and_wrong_number_of_losses():
    with pytest.raises(ValueError, match="num_tasks=0"):
        UncertaintyWeighting(0)
    with pytest.raises(ValueError, match="initial_log_sigma=nan"):
        UncertaintyWeighting(2, initial_log_sigma=float("nan"))
    with pytest.raises(ValueError, match="received: 3"):
        UncertaintyWeighting(2)([tf.constant(1.0)] * 3)


def _recipe(**args):
    return build_objective(config_lib.from_dict(
        {"loss": {"name": "uncertainty", "weights": {}, "args": args}}).loss)


def _outputs_network():
    x = tf.keras.Input(shape=(2,))
    return tf.keras.Model(x, {"ctr": tf.keras.layers.Dense(1, name="ctr")(x),
                              "ctcvr": tf.keras.layers.Dense(1, name="ctcvr")(x)})


def _np_bce(y, p, wp=1.0, wn=1.0):
    return -np.mean(wp * y * np.log(p) + wn * (1 - y) * np.log(1 - p))


def test_recipe_terms_are_eq_3_with_class_weights():
    recipe = _recipe(initial_log_sigma=0.3, positive_weight={"ctcvr": 4.0},
                     negative_weight={"ctr": 0.5})
    recipe.build(_outputs_network())
    recipe.sigma.log_sigma.assign([0.3, -0.2])
    click = np.array([1, 0, 1, 1, 0], np.float32)
    conv = np.array([1, 0, 0, 1, 0], np.float32)
    p_ctr = np.array([0.7, 0.2, 0.6, 0.9, 0.4], np.float32)
    p_ctcvr = np.array([0.3, 0.05, 0.1, 0.5, 0.02], np.float32)
    terms = recipe({"ctr": click, "cvr": conv}, {"ctr": p_ctr, "ctcvr": p_ctcvr})
    l_ctr = _np_bce(click, p_ctr, wn=0.5)
    l_ctcvr = _np_bce(click * conv, p_ctcvr, wp=4.0)
    assert float(terms["task_ctr"]) == pytest.approx(0.5 * np.exp(-0.6) * l_ctr + 0.3, rel=1e-5)
    assert float(terms["task_ctcvr"]) == pytest.approx(0.5 * np.exp(0.4) * l_ctcvr - 0.2,
                                                       rel=1e-5)
    total = _reference([l_ctr, l_ctcvr], [0.3, -0.2])
    assert float(terms["task_ctr"] + terms["task_ctcvr"]) == pytest.approx(total, rel=1e-5)
    report = recipe.report()
    assert report["ctcvr"]["weight"] == pytest.approx(0.5 * np.exp(0.4), rel=1e-6)
    assert [v.name for v in recipe.trainable_variables] == ["uncertainty/log_sigma:0"]


def test_recipe_without_uncertainty_is_eq_2():
    recipe = _recipe(uncertainty=False)
    recipe.build(_outputs_network())
    assert recipe.layers == [] and recipe.report() == {}
    y = {"ctr": np.array([1.0, 0.0]), "cvr": np.array([0.0, 0.0])}
    terms = recipe(y, {"ctr": np.array([0.6, 0.3]), "ctcvr": np.array([0.1, 0.2])})
    assert float(terms["task_ctr"]) == pytest.approx(_np_bce(np.array([1, 0]),
                                                             np.array([0.6, 0.3])), rel=1e-5)


@pytest.mark.parametrize("args, message", [
    ({"uncertainty": 1}, r"loss.args.uncertainty: expected true/false, got 1"),
    ({"positive_weight": {"cvr": 2.0}}, r"positive_weight: expected a mapping of \['ctr', "
                                        r"'ctcvr'\] to positive numbers, got \{'cvr': 2.0\}"),
    ({"negative_weight": {"ctr": 0}}, r"negative_weight: .* got \{'ctr': 0\}"),
    ({"initial_log_sigma": float("inf")}, r"initial_log_sigma=inf")])
def test_recipe_bad_arguments_are_named(args, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        _recipe(**args)
