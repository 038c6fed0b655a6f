"""HKE (KAML eq. 9-10): original/extended sub-towers merged by the target indicator M."""
import numpy as np
import pytest
import tensorflow as tf

from tests import layer_checks as lc
from trainer.layers.hke import HKE


def small():
    return lambda: HKE(units=[5, 4], head_units=[3], name="hke")


def m_values():
    return np.array([1, 0, 1, 1, 0, 0, 1, 0], np.float32)


def test_defaults():
    hke = HKE()
    assert (hke.units, hke.head_units, hke.dropout) == ([32], [16], 0.0)


def test_config_round_trip():
    lc.check_config_round_trip(small(), (lc.features(), m_values()))


def test_golden_merge_and_serving_path():
    layer = small()()
    x, m = lc.features(), m_values()
    layer((x, m))
    w = lc.set_golden_weights(layer)
    original = lc.np_mlp(x, w, "hke/original", 2)
    extended = lc.np_mlp(x, w, "hke/extended", 2)
    merged = m[:, None] * original + (1 - m[:, None]) * extended  # eq. 10
    expected = lc.np_dense(lc.np_mlp(merged, w, "hke/head", 1), w, "hke/logit")
    lc.assert_close(layer((x, m)), expected)
    serving = lc.np_dense(lc.np_mlp(original, w, "hke/head", 1), w, "hke/logit")
    lc.assert_close(layer.inference_logit(x), serving)
    lc.assert_close(layer((x, np.ones(lc.BATCH, np.float32))), serving)  # M = 1 everywhere


def test_functional_serving_graph_holds_no_extended_weights():
    layer = HKE([4], [3], name="cvr_0/hke")
    inputs = tf.keras.Input(shape=(lc.DIM,))
    layer.build(inputs.shape)
    served = tf.keras.Model(inputs, layer.inference_logit(inputs))
    names = [v.name for v in served.weights]
    assert names and not [n for n in names if "extended" in n]
    assert any("cvr_0/hke/original" in n for n in names)


@pytest.mark.parametrize("name,value", [("units", []), ("head_units", [2, -1]),
                                        ("dropout", 2.0)])
def test_invalid_args(name, value):
    lc.check_rejects(HKE, {}, name, value)


def hke_model():
    # Seeded: with 4 rows per sub-tower, an unlucky draw can leave every ReLU unit of a
    # sub-tower dead on its rows (no gradient at all), which depends on the tests run before.
    tf.keras.utils.set_random_seed(1)
    x = tf.keras.Input(shape=(lc.DIM,), name="x")
    m = tf.keras.Input(shape=(), name="m")
    logit = HKE([5, 4], [3], name="hke")((x, m))
    return tf.keras.Model([x, m], tf.keras.layers.Activation("sigmoid", name="y")(logit))


def test_fit_one_step_moves_both_sub_towers():
    model = hke_model()
    lc.check_fit_one_step(model, [lc.features(), m_values()], lc.labels(["y"])["y"],
                          layer=model.get_layer("hke"))


def test_mirrored_step_then_save_load(two_cpu_strategy, tmp_path):
    lc.check_mirrored_step(two_cpu_strategy, hke_model, [lc.features(), m_values()],
                           lc.labels(["y"])["y"], save_path=tmp_path / "m")
