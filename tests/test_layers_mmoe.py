"""MMoE (Ma et al., KDD'18) and its parts: SoftmaxGate, MLP (towers/experts), funnel heads."""
import numpy as np
import pytest
import tensorflow as tf

from schemas import config as config_lib
from tests import fixtures
from tests import layer_checks as lc
from trainer.layers.gates import SoftmaxGate
from trainer.layers.heads import ProductHead, RatioHead
from trainer.layers.mlp import MLP
from trainer.layers.mmoe import MMoE
from trainer.model import build_network

T = 0.7  # gate temperature used in the golden tests


def small(tasks=lc.TASKS2):
    return lambda: MMoE(tasks, num_experts=3, expert_units=[5, 4], gate_temperature=T,
                        name="mmoe")


def test_defaults_follow_man_section_4_2():
    mmoe = MMoE(["ctr", "cvr"])
    assert (mmoe.num_experts, mmoe.expert_units, mmoe.gate_temperature) == (8, [256, 128], 1.0)


@pytest.mark.parametrize("make", [
    small(), lambda: SoftmaxGate(3, 2.0, name="gate"),
    lambda: MLP([4, 3], dropout=0.2, use_batch_norm=True, name="mlp")],
    ids=["mmoe", "gate", "mlp"])
def test_config_round_trip(make):
    x = lc.features()
    if isinstance(make(), SoftmaxGate):
        x = (x, np.random.default_rng(2).normal(size=(lc.BATCH, 3, 4)).astype(np.float32))
    lc.check_config_round_trip(make, x)


def test_golden_one_gate_per_task():
    layer = small(lc.TASKS3)()
    x = lc.features()
    layer(x)
    w = lc.set_golden_weights(layer)
    assert sorted(k for k in w if "gate" in k) == [f"{t}/gate/logits/kernel"
                                                  for t in sorted(lc.TASKS3)]
    experts = np.stack([lc.np_mlp(x, w, f"shared/expert_{i}", 2) for i in range(3)], axis=1)
    expected = {t: lc.np_gate(x, experts, w, f"{t}/gate", temperature=T) for t in lc.TASKS3}
    out = layer(x)
    lc.assert_close(out, expected)
    # Distinct gates really give distinct mixtures (a shared gate would hide a wiring bug).
    assert not np.allclose(out["click"], out["view"])


def _gate_with_kernel(num_experts, temperature, width, seed):
    """A built SoftmaxGate with a random logits kernel; returns (gate, x, experts, kernel)."""
    gate = SoftmaxGate(num_experts, temperature=temperature)
    x = lc.features()
    experts = np.random.default_rng(seed).normal(
        size=(lc.BATCH, num_experts, width)).astype(np.float32)
    gate((x, experts))
    kernel = np.random.default_rng(seed + 1).normal(
        size=(lc.DIM, num_experts)).astype(np.float32)
    gate.set_weights([kernel])
    return gate, x, experts, kernel


def test_gate_weights_are_a_tempered_softmax():
    gate, x, experts, kernel = _gate_with_kernel(4, 0.5, 2, seed=3)
    weights = gate.gate_weights(x).numpy()
    np.testing.assert_allclose(weights, lc.np_softmax(x @ kernel / 0.5), atol=1e-6)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(gate((x, experts)), np.einsum("be,bed->bd", weights, experts),
                               atol=1e-6)


def test_gate_mixes_a_list_of_experts_as_the_stacked_tensor_and_numpy():
    """The sequence form (what the backbones pass, nothing stacked) and the ``[B, E, d]`` form
    give the same mixture, ``sum_e g_e(x) * expert_e``."""
    gate, x, experts, kernel = _gate_with_kernel(3, 2.0, 4, seed=5)
    want = np.einsum("be,bed->bd", lc.np_softmax(x @ kernel / 2.0), experts)
    as_list = gate((x, [tf.constant(experts[:, e]) for e in range(3)]))
    np.testing.assert_allclose(as_list, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gate((x, experts)), want, rtol=1e-5, atol=1e-6)
    one = SoftmaxGate(1)
    np.testing.assert_allclose(one((x, [tf.constant(experts[:, 0])])), experts[:, 0], rtol=1e-6)


@pytest.mark.parametrize("experts, shapes", [
    (lambda e: [e[:, 0], e[:, 1]], r"\[\(4, 4\), \(4, 4\)\]"),
    (lambda e: e[:, :2], r"\(4, 2, 4\)"), (lambda e: e[:, 0], r"\(4, 4\)")],
    ids=["short_list", "short_tensor", "rank_2"])
def test_gate_names_the_expert_count_it_expected(experts, shapes):
    gate = SoftmaxGate(3, name="ctr/gate")
    stacked = np.zeros((4, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"SoftmaxGate\('ctr/gate'\) mixes num_experts=3 .*"
                                         r"received: experts shape\(s\) " + shapes):
        gate((np.zeros((4, lc.DIM), np.float32), experts(tf.constant(stacked))))


def test_mlp_with_batch_norm_golden_at_inference():
    mlp = MLP([4, 3], use_batch_norm=True, name="mlp")
    x = lc.features()
    mlp(x)
    w = lc.set_golden_weights(mlp)
    for layer in mlp._norms:  # a variance must be positive
        layer.moving_variance.assign(np.abs(layer.moving_variance.numpy()) + 0.5)
        w[f"{layer.name}/moving_variance"] = layer.moving_variance.numpy()
    h = x
    for i in range(2):
        h = h @ w[f"dense_{i}/kernel"] + w[f"dense_{i}/bias"]
        h = (h - w[f"bn_{i}/moving_mean"]) / np.sqrt(w[f"bn_{i}/moving_variance"] + 1e-3)
        h = lc.np_relu(h * w[f"bn_{i}/gamma"] + w[f"bn_{i}/beta"])
    lc.assert_close(mlp(x, training=False), h)
    assert mlp.compute_output_shape((None, lc.DIM)).as_list() == [None, 3]


def test_heads_product_and_clipped_ratio():
    ctr = tf.constant([0.5, 0.2, 0.0, 0.1])
    cvr = tf.constant([0.4, 1.0, 0.3, 0.5])
    np.testing.assert_allclose(ProductHead()((ctr, cvr)), [0.2, 0.2, 0.0, 0.05], atol=1e-7)
    ctcvr = tf.constant([0.25, 0.3, 0.1, 0.05])
    # 0.3 / 0.2 > 1 is clipped; 0.1 / 0 (no click mass) gives 0, never inf/NaN.
    np.testing.assert_allclose(RatioHead()((ctcvr, ctr)), [0.5, 1.0, 0.0, 0.5], atol=1e-6)


@pytest.mark.parametrize("cls,base,name,value", [
    (MMoE, {"tasks": ["ctr", "cvr"]}, "num_experts", 0),
    (MMoE, {"tasks": ["ctr", "cvr"]}, "expert_units", [8, -1]),
    (MMoE, {"tasks": ["ctr", "cvr"]}, "gate_temperature", 0.0),
    (MMoE, {"tasks": ["ctr", "cvr"]}, "expert_dropout", 1.5),
    (MMoE, {"tasks": ["ctr", "cvr"]}, "tasks", ["ctr", ""]),
    (SoftmaxGate, {"num_experts": 2}, "temperature", -2.0),
    (SoftmaxGate, {"num_experts": 2}, "num_experts", 2.5),
    (MLP, {"units": [3]}, "units", "wide"),
    (MLP, {"units": [3]}, "dropout", -0.5)])
def test_invalid_args(cls, base, name, value):
    lc.check_rejects(cls, base, name, value)


def test_fit_one_step_three_tasks():
    lc.check_backbone_fit_one_step(small(lc.TASKS3), lc.TASKS3)


def test_mirrored_step_then_save_load(two_cpu_strategy, tmp_path):
    lc.check_backbone_mirrored_and_saved(two_cpu_strategy, small(), lc.TASKS2, tmp_path / "m")


def test_tower_batch_norm_option_reaches_the_towers():
    _, _, info = fixtures.tiny_arrays(200)
    cfg = config_lib.from_dict({"model": {"tower_units": [8, 4], "tower_batch_norm": True}})
    network = build_network(cfg.model, info)
    names = [v.name for v in network.weights]
    for task in ("ctr", "cvr"):
        assert any(f"{task}/tower/bn_1/moving_variance" in n for n in names), names
    plain = build_network(fixtures.tiny_config().model, info)
    assert not any("bn_" in v.name for v in plain.weights)
