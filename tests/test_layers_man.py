"""MAN backbone (experts + gates + task attention) and its TaskAttention layer."""
import numpy as np
import pytest

from tests import layer_checks as lc
from tests.test_layers_ple import np_cgc
from trainer.layers.man import MAN, TaskAttention, adjacent
from trainer.layers.ple import CGC

T = 1.5  # gate temperature of the golden tests (as np_cgc expects)


def small(tasks=lc.TASKS2, **kw):
    return lambda: MAN(tasks, num_shared_experts=2, num_task_experts=1, expert_units=[5, 4],
                       gate_temperature=T, attention_units=3, name="man", **kw)


def reps(tasks, width=4, seed=0):
    rng = np.random.default_rng(seed)
    return {t: rng.normal(size=(lc.BATCH, width)).astype(np.float32) for t in tasks}


def np_attention(x, w, prefix, tasks, units):
    out = {}
    for t in tasks:
        members = np.stack([x[u] for u in adjacent(tasks, t)], axis=1)  # [B, n, d]
        q = lc.np_dense(x[t], w, f"{prefix}query")
        k = lc.np_dense(members, w, f"{prefix}key")
        v = lc.np_dense(members, w, f"{prefix}value")
        weights = lc.np_softmax(np.einsum("bd,bnd->bn", q, k) / np.sqrt(units), axis=1)
        out[t] = np.einsum("bn,bnd->bd", weights, v)
    return out


def test_defaults_follow_man_section_4_2():
    man = MAN(["ctr", "cvr"])
    assert (man.num_shared_experts, man.num_task_experts, man.expert_units,
            man.attention_units, man.use_attention) == (4, 4, [256, 128], 128, True)


def test_adjacent_tasks_are_the_neighbours_in_funnel_order():
    assert adjacent(["click", "view", "conversion"], "click") == ["click", "view"]
    assert adjacent(["click", "view", "conversion"], "view") == ["view", "click", "conversion"]
    assert adjacent(["ctr"], "ctr") == ["ctr"]


@pytest.mark.parametrize("make,x", [
    (small(), lc.features()), (small(use_attention=False), lc.features()),
    (lambda: TaskAttention(lc.TASKS3, 4, residual=True, name="att"), reps(lc.TASKS3))],
    ids=["man", "man-no-attention", "attention"])
def test_config_round_trip(make, x):
    lc.check_config_round_trip(make, x)


def test_task_attention_golden_three_tasks():
    layer = TaskAttention(lc.TASKS3, units=3, name="att")
    x = reps(lc.TASKS3)
    layer(x)
    w = lc.set_golden_weights(layer)
    expected = np_attention(x, w, "", lc.TASKS3, 3)
    lc.assert_close(layer(x), expected)
    weights = layer.attention_weights(x)
    assert weights["view"].shape == (lc.BATCH, 3) and weights["click"].shape == (lc.BATCH, 2)
    np.testing.assert_allclose(weights["view"].numpy().sum(axis=1), 1.0, atol=1e-6)


def test_residual_adds_the_task_input():
    plain = TaskAttention(lc.TASKS2, units=4, name="att")
    residual = TaskAttention(lc.TASKS2, units=4, residual=True, name="att")
    x = reps(lc.TASKS2)
    plain(x)
    residual(x)
    residual.set_weights(plain.get_weights())
    for t in lc.TASKS2:
        np.testing.assert_allclose(residual(x)[t], x[t] + plain(x)[t].numpy(), atol=1e-6)


@pytest.mark.parametrize("use_attention", [True, False])
def test_man_golden(use_attention):
    layer = small(lc.TASKS3, use_attention=use_attention)()
    x = lc.features()
    layer(x)
    w = lc.set_golden_weights(layer)
    mixed = np_cgc({k: x for k in list(lc.TASKS3) + ["shared"]}, w, "extraction/", lc.TASKS3,
                   shared_gate=False)
    expected = np_attention(mixed, w, "attention/", lc.TASKS3, 3) if use_attention else mixed
    lc.assert_close(layer(x), expected)
    assert [l.name for l in layer.fusion_layers()] == (["attention"] if use_attention else [])


def test_without_attention_is_a_cgc():
    x = lc.features()
    man = small(use_attention=False)()
    cgc = CGC(lc.TASKS2, 2, 1, [5, 4], gate_temperature=T, name="cgc")
    man(x)
    cgc(x)
    cgc.set_weights(man.get_weights())
    lc.assert_close(man(x), cgc(x))


@pytest.mark.parametrize("cls,base,name,value", [
    (MAN, {"tasks": ["ctr", "cvr"]}, "num_shared_experts", 0),
    (MAN, {"tasks": ["ctr", "cvr"]}, "attention_units", -3),
    (MAN, {"tasks": ["ctr", "cvr"], "residual": True}, "attention_units", 7),
    (MAN, {"tasks": ["ctr", "cvr"]}, "tasks", ["ctr", "shared"]),
    (TaskAttention, {"tasks": ["ctr", "cvr"]}, "units", 0)])
def test_invalid_args(cls, base, name, value):
    lc.check_rejects(cls, base, name, value)


def test_attention_rejects_inputs_of_different_widths():
    layer = TaskAttention(lc.TASKS2, units=4)
    with pytest.raises(ValueError, match="same width, received \\[3, 4\\]"):
        layer({"ctr": np.zeros((2, 4), np.float32), "cvr": np.zeros((2, 3), np.float32)})


def test_fit_one_step_three_tasks():
    lc.check_backbone_fit_one_step(small(lc.TASKS3), lc.TASKS3)


def test_mirrored_step_then_save_load(two_cpu_strategy, tmp_path):
    lc.check_backbone_mirrored_and_saved(two_cpu_strategy, small(), lc.TASKS2, tmp_path / "m")
