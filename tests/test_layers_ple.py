"""CGC and PLE (Tang et al., RecSys'20)."""
import numpy as np
import pytest

from tests import layer_checks as lc
from trainer.layers.ple import CGC, PLE

T = 1.5  # gate temperature used in the golden tests


def small_cgc(tasks=lc.TASKS2, **kw):
    return lambda: CGC(tasks, num_shared_experts=2, num_task_experts=1, expert_units=[5, 4],
                       gate_temperature=T, name="cgc", **kw)


def small_ple(tasks=lc.TASKS2, num_levels=2):
    return lambda: PLE(tasks, num_levels=num_levels, num_shared_experts=2, num_task_experts=1,
                       expert_units=[5, 4], gate_temperature=T, name="ple")


def np_cgc(xs, w, prefix, tasks, shared_gate):
    """PLE eq. 5-7 (+ the shared gate of eq. 8) for 2 shared and 1 task expert, 2 layers."""
    shared = [lc.np_mlp(xs["shared"], w, f"{prefix}shared/expert_{i}", 2) for i in range(2)]
    own = {t: [lc.np_mlp(xs[t], w, f"{prefix}{t}/expert_0", 2)] for t in tasks}
    out = {t: lc.np_gate(xs[t], np.stack(own[t] + shared, 1), w, f"{prefix}{t}/gate", T)
           for t in tasks}
    if shared_gate:
        every = [h for t in tasks for h in own[t]] + shared
        out["shared"] = lc.np_gate(xs["shared"], np.stack(every, 1), w, f"{prefix}shared/gate", T)
    return out


def test_defaults_follow_man_section_4_2():
    ple = PLE(["ctr", "cvr"])
    assert (ple.num_levels, ple.num_shared_experts, ple.num_task_experts, ple.expert_units,
            ple.gate_temperature) == (2, 4, 4, [256, 128], 1.0)
    cgc = CGC(["ctr", "cvr"])
    assert (cgc.num_shared_experts, cgc.num_task_experts, cgc.shared_gate) == (4, 4, False)


@pytest.mark.parametrize("make", [small_cgc(), small_cgc(shared_gate=True), small_ple()],
                         ids=["cgc", "cgc_shared_gate", "ple"])
def test_config_round_trip(make):
    lc.check_config_round_trip(make, lc.features())


@pytest.mark.parametrize("shared_gate", [False, True])
def test_cgc_golden_three_tasks(shared_gate):
    layer = small_cgc(lc.TASKS3, shared_gate=shared_gate)()
    x = lc.features()
    layer(x)
    w = lc.set_golden_weights(layer)
    xs = {k: x for k in lc.TASKS3 + ("shared",)}
    lc.assert_close(layer(x), np_cgc(xs, w, "", lc.TASKS3, shared_gate))


def test_ple_golden_three_levels_three_tasks():
    layer = small_ple(lc.TASKS3, num_levels=3)()
    x = lc.features()
    layer(x)
    w = lc.set_golden_weights(layer)
    assert "level_2/shared/gate/logits/kernel" not in w  # no shared gate on the last level
    xs = {k: x for k in lc.TASKS3 + ("shared",)}
    for j in range(3):
        xs = np_cgc(xs, w, f"level_{j}/", lc.TASKS3, shared_gate=j < 2)
    lc.assert_close(layer(x), xs)


def test_ple_with_one_level_is_a_cgc():
    x = lc.features()
    ple, cgc = small_ple(num_levels=1)(), small_cgc()()
    ple(x), cgc(x)
    strip = lambda layer, prefix: [(v.name[len(prefix):], tuple(v.shape)) for v in layer.weights]
    assert strip(ple, "ple/level_0/") == strip(cgc, "cgc/")
    cgc.set_weights(ple.get_weights())
    lc.assert_close(cgc(x), ple(x))


@pytest.mark.parametrize("cls,name,value", [
    (CGC, "tasks", ["ctr", "shared"]), (PLE, "tasks", ["shared"]), (CGC, "tasks", "ctr"),
    (CGC, "num_shared_experts", 0), (CGC, "num_task_experts", 1.5),
    (PLE, "num_levels", 0), (PLE, "expert_units", [8, -1]), (PLE, "gate_temperature", 0),
    (PLE, "expert_dropout", 2)])
def test_invalid_args(cls, name, value):
    lc.check_rejects(cls, {"tasks": ["ctr", "cvr"]}, name, value)


def test_cgc_dict_input_must_have_every_key():
    with pytest.raises(ValueError, match=r"lacks \['shared'\]"):
        small_cgc()()({"ctr": lc.features(), "cvr": lc.features()})


def test_fit_one_step_three_tasks():
    lc.check_backbone_fit_one_step(small_ple(lc.TASKS3), lc.TASKS3)


def test_mirrored_step_then_save_load(two_cpu_strategy, tmp_path):
    make = lambda: PLE(lc.TASKS2, num_levels=2, num_shared_experts=1, num_task_experts=1,
                       expert_units=[4])  # the smallest 2-level PLE: SavedModel tracing dominates
    lc.check_backbone_mirrored_and_saved(two_cpu_strategy, make, lc.TASKS2, tmp_path / "m")
