"""SharedBottom (hard parameter sharing)."""
import pytest

from tests import layer_checks as lc
from trainer.layers.shared_bottom import SharedBottom


def small(tasks=lc.TASKS2):
    return lambda: SharedBottom(tasks, bottom_units=[5, 3], name="sb")


def test_defaults_follow_adaftr():
    assert SharedBottom(["ctr"]).bottom_units == [128]


def test_config_round_trip():
    lc.check_config_round_trip(small(), lc.features())


def test_golden_three_tasks():
    layer = small(lc.TASKS3)()
    x = lc.features()
    layer(x)
    w = lc.set_golden_weights(layer)
    expected = lc.np_mlp(x, w, "shared/bottom", 2)
    lc.assert_close(layer(x), {t: expected for t in lc.TASKS3})


@pytest.mark.parametrize("name,value", [
    ("tasks", []), ("tasks", ["a", "a"]), ("bottom_units", [4, 0]), ("bottom_dropout", 1.0)])
def test_invalid_args(name, value):
    lc.check_rejects(SharedBottom, {"tasks": ["ctr", "cvr"]}, name, value)


def test_fit_one_step_three_tasks():
    lc.check_backbone_fit_one_step(small(lc.TASKS3), lc.TASKS3)


def test_mirrored_step_then_save_load(two_cpu_strategy, tmp_path):
    lc.check_backbone_mirrored_and_saved(two_cpu_strategy, small(), lc.TASKS2, tmp_path / "m")
