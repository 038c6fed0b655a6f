"""Uncertainty weighting (trainer/losses/uncertainty.py) against NumPy (MAN eq. 3)."""
import numpy as np
import pytest
import tensorflow as tf

from trainer.losses.uncertainty import UncertaintyWeights, uncertainty_weighted


def _reference(losses, log_sigma):
    return sum(np.exp(-2 * s) / 2 * l + s for l, s in zip(losses, log_sigma))


def test_function_matches_numpy_and_eq3():
    losses = np.array([0.7, 0.05, 2.3])
    log_sigma = np.array([0.0, -1.2, 0.8])
    got = uncertainty_weighted(tf.constant(losses), tf.constant(log_sigma))
    assert float(got) == pytest.approx(_reference(losses, log_sigma), abs=1e-12)
    s1, s2 = np.exp(log_sigma[:2])  # eq. 3 with two tasks
    eq3 = losses[0] / (2 * s1 ** 2) + losses[1] / (2 * s2 ** 2) + np.log(s1 * s2)
    got2 = uncertainty_weighted([tf.constant(0.7, tf.float64), 0.05], log_sigma[:2])
    assert float(got2) == pytest.approx(eq3, abs=1e-12)


def test_layer_weights_gradient_and_config():
    layer = UncertaintyWeights(num_tasks=2, initial_log_sigma=0.5, name="uw")
    losses = [tf.constant(1.2), tf.constant(0.3)]
    with tf.GradientTape() as tape:
        total = layer(losses)
    assert [w.name for w in layer.trainable_weights] == ["uw/log_sigma:0"]
    np.testing.assert_allclose(layer.log_sigma.numpy(), [0.5, 0.5])
    assert float(total) == pytest.approx(_reference([1.2, 0.3], [0.5, 0.5]), rel=1e-6)
    grad = tape.gradient(total, layer.log_sigma).numpy()
    np.testing.assert_allclose(grad, -np.exp(-1.0) * np.array([1.2, 0.3]) + 1.0, rtol=1e-5)
    config = layer.get_config()
    clone = UncertaintyWeights.from_config(config)
    assert clone.get_config() == config
    restored = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
    assert isinstance(restored, UncertaintyWeights) and restored.num_tasks == 2
    assert tf.keras.utils.get_registered_name(UncertaintyWeights) == "funnelrank>UncertaintyWeights"


def test_layer_rejects_bad_args_and_wrong_number_of_losses():
    with pytest.raises(ValueError, match="num_tasks=0"):
        UncertaintyWeights(0)
    with pytest.raises(ValueError, match="initial_log_sigma=nan"):
        UncertaintyWeights(2, initial_log_sigma=float("nan"))
    with pytest.raises(ValueError, match="received: 3"):
        UncertaintyWeights(2)([tf.constant(1.0)] * 3)
