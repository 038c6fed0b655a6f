"""AdaFTR's training-only layers: RelatednessNet (eq. 8-9, 12) and LearnableTemperature."""
import numpy as np
import pytest
import tensorflow as tf

from tests import layer_checks as lc
from trainer.layers.relatedness import LearnableTemperature, RelatednessNet


def pair(batch=lc.BATCH, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, dim)).astype(np.float32),
            rng.normal(size=(batch, dim)).astype(np.float32))


def small():
    return lambda: RelatednessNet([6, 3], tau_lower=0.1, tau_upper=0.9, name="rel")


def test_defaults_follow_adaftr_table_3():
    net = RelatednessNet()
    assert (net.tau_lower, net.tau_upper, net.stop_input_gradient) == (0.05, 1.0, True)
    tau = LearnableTemperature()
    assert (tau.tau_lower, tau.tau_upper, tau.initial) == (0.05, 1.0, 0.5)


@pytest.mark.parametrize("make,x", [(small(), pair()),
                                    (lambda: LearnableTemperature(0.3, name="t"), lc.features())],
                         ids=["relatedness", "temperature"])
def test_config_round_trip(make, x):
    lc.check_config_round_trip(make, x)


def test_golden_relatedness_and_temperature():
    layer = small()()
    a, b = pair()
    layer((a, b))
    w = lc.set_golden_weights(layer)
    hidden = lc.np_mlp(a * b, w, "mlp", 2)
    expected = 1 / (1 + np.exp(-(hidden @ w["logit/kernel"] + w["logit/bias"])))[:, 0]
    got = layer((a, b)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # eq. 12: tau = (U - L)(1 - y_rel_hat) + L, inside [L, U], decreasing in relatedness.
    np.testing.assert_allclose(layer.temperature(got), 0.8 * (1 - expected) + 0.1, atol=1e-6)
    np.testing.assert_allclose(layer.temperature(np.array([0.0, 1.0])), [0.9, 0.1], atol=1e-7)


def test_stop_input_gradient_keeps_l_rel_out_of_the_backbone():
    a, b = (tf.Variable(v) for v in pair())
    for stop in (True, False):
        layer = RelatednessNet([4], stop_input_gradient=stop)
        with tf.GradientTape() as tape:
            out = tf.reduce_sum(layer((a, b)))
        grads = tape.gradient(out, [a, b] + layer.trainable_variables)
        assert (grads[0] is None and grads[1] is None) == stop
        assert all(g is not None for g in grads[2:])  # the net itself always learns


def test_learnable_temperature_starts_at_initial_and_stays_in_bounds():
    layer = LearnableTemperature(0.2, tau_lower=0.05, tau_upper=1.0)
    assert float(layer(lc.features())) == pytest.approx(0.2, rel=1e-6)
    layer.tau_logit.assign(60.0)
    assert float(layer(lc.features())) == pytest.approx(1.0, rel=1e-6)
    layer.tau_logit.assign(-60.0)
    assert float(layer(lc.features())) == pytest.approx(0.05, rel=1e-6)


@pytest.mark.parametrize("cls,base,name,value", [
    (RelatednessNet, {}, "units", [0]),
    (RelatednessNet, {}, "tau_lower", -0.1),
    (RelatednessNet, {"tau_lower": 0.5}, "tau_upper", 0.4),
    (LearnableTemperature, {}, "initial", 1.0),
    (LearnableTemperature, {}, "tau_upper", "one")])
def test_invalid_args(cls, base, name, value):
    lc.check_rejects(cls, base, name, value)


def relatedness_model():
    """``[x_a, x_b] -> RelatednessNet`` as a Keras model trained on a relatedness label."""
    a = tf.keras.Input(shape=(5,), name="a")
    b = tf.keras.Input(shape=(5,), name="b")
    out = RelatednessNet([6, 3], name="rel")((a, b))
    return tf.keras.Model([a, b], tf.keras.layers.Reshape((1,), name="y")(out))


def test_fit_one_step():
    y = np.array([[1.0], [0.0]] * (lc.BATCH // 2), np.float32)
    model = relatedness_model()
    lc.check_fit_one_step(model, list(pair()), y, layer=model.get_layer("rel"))


def test_mirrored_step_then_save_load(two_cpu_strategy, tmp_path):
    y = np.array([[1.0], [0.0]] * (lc.BATCH // 2), np.float32)
    lc.check_mirrored_step(two_cpu_strategy, relatedness_model, list(pair()), y,
                           save_path=tmp_path / "m")
