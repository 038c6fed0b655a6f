"""OMoE: shared experts, ONE gate for all tasks."""
import numpy as np
import pytest

from tests import layer_checks as lc
from trainer.layers.omoe import OMoE


def small(tasks=lc.TASKS2):
    return lambda: OMoE(tasks, num_experts=3, expert_units=[5, 4], gate_temperature=2.0,
                        name="omoe")


def test_defaults_follow_man_section_4_2():
    omoe = OMoE(["ctr"])
    assert (omoe.num_experts, omoe.expert_units, omoe.gate_temperature) == (8, [256, 128], 1.0)


def test_config_round_trip():
    lc.check_config_round_trip(small(), lc.features())


def test_golden_one_gate_for_all_tasks():
    layer = small(lc.TASKS3)()
    x = lc.features()
    layer(x)
    w = lc.set_golden_weights(layer)
    assert [k for k in w if "gate" in k] == ["shared/gate/logits/kernel"]
    experts = np.stack([lc.np_mlp(x, w, f"shared/expert_{i}", 2) for i in range(3)], axis=1)
    expected = lc.np_gate(x, experts, w, "shared/gate", temperature=2.0)
    lc.assert_close(layer(x), {t: expected for t in lc.TASKS3})


@pytest.mark.parametrize("name,value", [
    ("num_experts", 0), ("expert_units", []), ("gate_temperature", -1.0),
    ("expert_dropout", -0.1), ("tasks", "ctr")])
def test_invalid_args(name, value):
    lc.check_rejects(OMoE, {"tasks": ["ctr", "cvr"]}, name, value)


def test_fit_one_step_three_tasks():
    lc.check_backbone_fit_one_step(small(lc.TASKS3), lc.TASKS3)


def test_mirrored_step_then_save_load(two_cpu_strategy, tmp_path):
    lc.check_backbone_mirrored_and_saved(two_cpu_strategy, small(), lc.TASKS2, tmp_path / "m")
