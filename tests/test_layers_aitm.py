"""AITM, its AIT module and the calibrator (Xi et al., KDD'21)."""
import numpy as np
import pytest
import tensorflow as tf

from tests import layer_checks as lc
from trainer.layers.aitm import AITM, AITModule, aitm_calibration_loss, aitm_calibrator


def small(tasks=lc.TASKS2):
    return lambda: AITM(tasks, tower_units=[5, 4], name="aitm")


def np_ait(p, q, w, prefix, k):
    """AITM eq. 3-5."""
    u = np.stack([p, q], axis=1)
    h = {i: lc.np_dense(u, w, f"{prefix}/h{i}") for i in (1, 2, 3)}
    a = lc.np_softmax((h[2] * h[3]).sum(-1) / np.sqrt(k), axis=1)
    return np.einsum("bu,buk->bk", a, h[1])


def test_defaults():
    assert AITM(["ctr", "ctcvr"]).tower_units == [128, 64, 32]


@pytest.mark.parametrize("make", [small(), lambda: AITModule(3, name="ait")],
                         ids=["aitm", "ait_module"])
def test_config_round_trip(make):
    x = lc.features() if make().name != "ait" else (lc.features(seed=1), lc.features(seed=2))
    lc.check_config_round_trip(make, x)


def test_golden_three_tasks_along_the_funnel():
    layer = small(lc.TASKS3)()
    x = lc.features()
    layer(x)
    w = lc.set_golden_weights(layer)
    assert not any(k.startswith("conversion/transfer") or k.startswith("click/ait") for k in w)
    expected, prev = {}, None
    for t in lc.TASKS3:
        q = lc.np_mlp(x, w, f"{t}/tower", 2)
        if prev is None:
            expected[t] = q
        else:
            p = lc.np_mlp(expected[prev], w, f"{prev}/transfer", 1)
            expected[t] = np_ait(p, q, w, f"{t}/ait", 4)
        prev = t
    lc.assert_close(layer(x), expected)


def test_ait_weights_are_a_softmax_over_p_and_q():
    ait = AITModule(3)
    p, q = lc.features(seed=3), lc.features(seed=4)
    ait((p, q))
    weights = ait.attention_weights((p, q)).numpy()
    assert weights.shape == (lc.BATCH, 2)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)


def test_calibrator_penalises_only_a_later_step_above_the_earlier_one():
    p_ctr = np.array([0.5, 0.2, 0.1, 0.9], np.float32)
    p_ctcvr = np.array([[0.1], [0.3], [0.1], [0.95]], np.float32)  # [B, 1] must not broadcast
    expected = np.maximum(p_ctcvr[:, 0] - p_ctr, 0).mean()
    assert float(aitm_calibrator(p_ctr, p_ctcvr)) == pytest.approx(expected)  # (0.1+0.05)/4
    assert float(aitm_calibrator(p_ctr, p_ctr * 0.5)) == 0.0
    assert float(aitm_calibrator(np.zeros([0]), np.zeros([0]))) == 0.0
    third = p_ctcvr[:, 0] * 0.5
    total = aitm_calibration_loss([p_ctr, p_ctcvr, third])
    assert float(total) == pytest.approx(expected)  # the third step is below the second
    with pytest.raises(ValueError, match="received: 1"):
        aitm_calibration_loss([p_ctr])


def test_calibrator_gradient_pushes_the_later_step_down():
    p_prev = tf.Variable([0.2, 0.6])
    p_next = tf.Variable([0.4, 0.1])
    with tf.GradientTape() as tape:
        loss = aitm_calibrator(p_prev, p_next)
    g_prev, g_next = tape.gradient(loss, [p_prev, p_next])
    np.testing.assert_allclose(g_next.numpy(), [0.5, 0.0])
    np.testing.assert_allclose(g_prev.numpy(), [-0.5, 0.0])


@pytest.mark.parametrize("cls,name,value", [
    (AITM, "tasks", ["ctr", ""]), (AITM, "tower_units", [8, 0]), (AITM, "tower_dropout", 1),
    (AITModule, "units", 0)])
def test_invalid_args(cls, name, value):
    base = {"tasks": ["ctr", "ctcvr"]} if cls is AITM else {"units": 4}
    lc.check_rejects(cls, base, name, value)


def test_fit_one_step_three_tasks():
    lc.check_backbone_fit_one_step(small(lc.TASKS3), lc.TASKS3)


def test_mirrored_step_then_save_load(two_cpu_strategy, tmp_path):
    lc.check_backbone_mirrored_and_saved(two_cpu_strategy, small(), lc.TASKS2, tmp_path / "m")
