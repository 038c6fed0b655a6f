"""CrossStitch and CrossStitchUnit (Misra et al., CVPR'16)."""
import numpy as np
import pytest

from tests import layer_checks as lc
from trainer.layers.cross_stitch import CrossStitch, CrossStitchUnit


def small(tasks=lc.TASKS2):
    return lambda: CrossStitch(tasks, units=[5, 4], self_weight=0.8, name="xs")


def test_defaults_and_identity_ish_init():
    layer = CrossStitch(["ctr", "cvr"])
    assert (layer.units, layer.self_weight, layer.activation) == ([128, 64, 32], 0.9, "relu")
    layer = small(lc.TASKS3)()
    layer(lc.features())
    for stitch in layer.stitches:
        alpha = stitch.alpha.numpy()
        np.testing.assert_allclose(np.diag(alpha), 0.8)
        np.testing.assert_allclose(alpha.sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(alpha[0, 1:], 0.1, rtol=1e-6)
    one = CrossStitchUnit(1, 0.5)
    one([lc.features()])
    np.testing.assert_allclose(one.alpha.numpy(), [[1.0]])


@pytest.mark.parametrize("make", [small(), lambda: CrossStitchUnit(3, 0.6, name="unit")],
                         ids=["cross_stitch", "unit"])
def test_config_round_trip(make):
    x = lc.features() if "unit" not in make().name else [lc.features(seed=i) for i in range(3)]
    lc.check_config_round_trip(make, x)


def test_golden_three_tasks():
    layer = small(lc.TASKS3)()
    x = lc.features()
    layer(x)
    w = lc.set_golden_weights(layer)
    xs = [x] * 3
    for l in range(2):
        hs = np.stack([lc.np_mlp(xi, w, f"{t}/layer_{l}", 1) for t, xi in zip(lc.TASKS3, xs)], 1)
        xs = list(np.einsum("ts,bsd->btd", w[f"stitch_{l}/alpha"], hs).transpose(1, 0, 2))
    lc.assert_close(layer(x), dict(zip(lc.TASKS3, xs)))


@pytest.mark.parametrize("name,value", [
    ("tasks", None), ("units", [3, 0]), ("dropout", -0.5), ("self_weight", 0.0),
    ("self_weight", 1.5)])
def test_invalid_args(name, value):
    lc.check_rejects(CrossStitch, {"tasks": ["ctr", "cvr"]}, name, value)


def test_fit_one_step_three_tasks():
    lc.check_backbone_fit_one_step(small(lc.TASKS3), lc.TASKS3)


def test_mirrored_step_then_save_load(two_cpu_strategy, tmp_path):
    lc.check_backbone_mirrored_and_saved(two_cpu_strategy, small(), lc.TASKS2, tmp_path / "m")
