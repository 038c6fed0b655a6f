"""Fused experts (ExpertBank, batched gates) and their equality with the per-expert form."""
import numpy as np
import pytest
import tensorflow as tf

from tests import layer_checks as lc
from trainer.layers.experts import ExpertBank, copy_expert_weights
from trainer.layers.gates import SoftmaxGate, batched_gate_weights, mix_expert_major
from trainer.layers.man import MAN
from trainer.layers.mmoe import MMoE
from trainer.layers.omoe import OMoE
from trainer.layers.ple import CGC, PLE

SMALL = {"expert_units": [5, 4], "gate_temperature": 0.8}
# name -> factory(fused) of a small backbone with 3 tasks, each named "backbone" so that the
# two forms' variables have the same names (copy_expert_weights maps by name).
BACKBONES = {
    "mmoe": lambda fused: MMoE(lc.TASKS3, num_experts=3, fused_experts=fused, **SMALL,
                               name="backbone"),
    "omoe": lambda fused: OMoE(lc.TASKS3, num_experts=3, fused_experts=fused, **SMALL,
                               name="backbone"),
    "cgc": lambda fused: CGC(lc.TASKS3, num_shared_experts=2, num_task_experts=3,
                             shared_gate=True, fused_experts=fused, **SMALL, name="backbone"),
    "ple": lambda fused: PLE(lc.TASKS3, num_levels=3, num_shared_experts=2, num_task_experts=1,
                             fused_experts=fused, **SMALL, name="backbone"),
    "man": lambda fused: MAN(lc.TASKS3, num_shared_experts=2, num_task_experts=2,
                             fused_experts=fused, **SMALL, name="backbone"),
}


def built(make, x):
    layer = make()
    layer(x)
    return layer


def np_bank(x, kernels, biases):
    """E independent ReLU MLPs; ``x`` is [B, F] (shared) or [E, B, F]."""
    h = np.broadcast_to(x, (len(kernels[0]),) + x.shape[-2:]) if x.ndim == 2 else x
    for k, b in zip(kernels, biases):
        h = lc.np_relu(np.einsum("ebi,eio->ebo", h, k) + b[:, None, :])
    return h


@pytest.mark.parametrize("per_expert_input", [False, True])
def test_bank_golden(per_expert_input):
    bank = ExpertBank(3, [5, 4], name="bank")
    x = lc.features()
    if per_expert_input:
        x = np.stack([x, 2 * x, -x])
    out = bank(x)
    assert out.shape == (3, lc.BATCH, 4)
    w = lc.set_golden_weights(bank)
    assert sorted(w) == ["dense_0/bias", "dense_0/kernel", "dense_1/bias", "dense_1/kernel"]
    assert w["dense_0/kernel"].shape == (3, lc.DIM, 5) and w["dense_1/bias"].shape == (3, 4)
    expected = np_bank(x, [w["dense_0/kernel"], w["dense_1/kernel"]],
                       [w["dense_0/bias"], w["dense_1/bias"]])
    lc.assert_close(bank(x), expected, atol=1e-6)
    assert bank.compute_output_shape(x.shape).as_list() == [3, lc.BATCH, 4]


def test_bank_initialises_each_expert_like_a_dense_kernel():
    # Glorot over the stacked [E, in, out] shape would shrink the scale by sqrt(E) (Keras counts
    # the leading axis as a receptive field) and an unseeded shared instance would make every
    # expert identical: each expert must look like Dense(out)'s kernel, and differ.
    tf.keras.utils.set_random_seed(0)
    bank = ExpertBank(8, [64], name="bank")
    bank.build((None, 64))
    kernel = bank.kernels[0].numpy()
    limit = np.sqrt(6.0 / (64 + 64))
    assert np.abs(kernel).max() <= limit
    np.testing.assert_allclose(kernel.std(axis=(1, 2)), limit / np.sqrt(3), rtol=0.1)
    assert not np.allclose(kernel[0], kernel[1])


def test_bank_dropout_only_in_training():
    bank = ExpertBank(2, [16], dropout=0.5, name="bank")
    x = np.abs(lc.features()) + 1.0
    inference = bank(x, training=False).numpy()
    np.testing.assert_array_equal(bank(x, training=False), inference)
    trained = bank(x, training=True).numpy()
    dropped = (trained == 0) & (inference != 0)
    assert 0.2 < dropped.mean() / (inference != 0).mean() < 0.8
    kept = trained != 0
    np.testing.assert_allclose(trained[kept], 2.0 * inference[kept], rtol=1e-5)


@pytest.mark.parametrize("name,value", [("num_experts", 0), ("units", [4, 0]),
                                        ("dropout", 1.0)])
def test_bank_invalid_args(name, value):
    lc.check_rejects(ExpertBank, {"num_experts": 2, "units": [4]}, name, value)


def test_bank_rejects_a_per_expert_input_of_the_wrong_count():
    with pytest.raises(ValueError, match=r"expected input \[B, F\] or \[3, B, F\]"):
        ExpertBank(3, [4])(np.zeros((2, 4, 5), np.float32))


def test_bank_config_round_trip():
    lc.check_config_round_trip(lambda: ExpertBank(3, [5, 4], dropout=0.1, name="bank"),
                               lc.features())


def test_batched_gate_weights_and_expert_major_mix_equal_the_plain_gate():
    x = lc.features()
    rng = np.random.default_rng(5)
    gates = [SoftmaxGate(3, 0.5, name="a"), SoftmaxGate(5, 2.0, name="b")]
    for gate in gates:
        gate((x, rng.normal(size=(lc.BATCH, gate.num_experts, 4)).astype(np.float32)))
        lc.set_golden_weights(gate, scale=1.0 + gate.num_experts)
    batched = batched_gate_weights(gates, x)
    for gate, weights in zip(gates, batched):
        lc.assert_close(weights, gate.gate_weights(x), atol=1e-6)
    experts = rng.normal(size=(lc.BATCH, 5, 4)).astype(np.float32)
    groups = [np.transpose(experts[:, :2], (1, 0, 2)), np.transpose(experts[:, 2:], (1, 0, 2))]
    lc.assert_close(mix_expert_major(batched[1], groups), gates[1]((x, experts)), atol=1e-6)


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_fused_equals_per_expert_with_copied_weights(kind):
    x = lc.features()
    per_expert = built(lambda: BACKBONES[kind](False), x)
    lc.set_golden_weights(per_expert)
    fused = built(lambda: BACKBONES[kind](True), x)
    assert any("/experts/dense_0/kernel" in v.name for v in fused.weights)
    assert not any("/expert_0/" in v.name for v in fused.weights)
    assert len(fused.weights) < len(per_expert.weights)
    copy_expert_weights(per_expert, fused)
    assert sum(int(np.prod(v.shape)) for v in fused.weights) == sum(
        int(np.prod(v.shape)) for v in per_expert.weights)
    lc.assert_close(fused(x, training=False), per_expert(x, training=False), atol=1e-6)
    # And back: fused -> a fresh per-expert layer gives the same outputs again.
    again = built(lambda: BACKBONES[kind](False), x)
    copy_expert_weights(fused, again)
    lc.assert_close(again(x, training=False), per_expert(x, training=False), atol=1e-6)


def test_copy_between_different_structures_names_the_variable():
    x = lc.features()
    source = built(lambda: MMoE(lc.TASKS2, num_experts=2, expert_units=[4], name="backbone"), x)
    target = built(lambda: MMoE(lc.TASKS2, num_experts=3, expert_units=[4], fused_experts=True,
                                name="backbone"), x)
    with pytest.raises(ValueError, match="backbone/shared/experts/dense_0/kernel"):
        copy_expert_weights(source, target)


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_fused_config_round_trip(kind):
    lc.check_config_round_trip(lambda: BACKBONES[kind](True), lc.features())


@pytest.mark.parametrize("cls,base", [
    (MMoE, {"tasks": ["ctr", "cvr"]}), (OMoE, {"tasks": ["ctr", "cvr"]}),
    (CGC, {"tasks": ["ctr", "cvr"]}), (PLE, {"tasks": ["ctr", "cvr"]}),
    (MAN, {"tasks": ["ctr", "cvr"]})])
def test_fused_experts_must_be_a_bool(cls, base):
    lc.check_rejects(cls, base, "fused_experts", 1)


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_fused_fit_one_step_moves_every_variable(kind):
    # The towers read the task outputs only: a CGC's shared gate is trained through the next
    # level (the PLE case), so the CGC here has none.
    make = (lambda: CGC(lc.TASKS3, num_shared_experts=2, num_task_experts=3,
                        fused_experts=True, **SMALL, name="backbone")) if kind == "cgc" else (
        lambda: BACKBONES[kind](True))
    lc.check_backbone_fit_one_step(make, lc.TASKS3)


@pytest.mark.parametrize("kind", ["mmoe", "ple"])
def test_fused_mirrored_step_then_save_load(two_cpu_strategy, tmp_path, kind):
    lc.check_backbone_mirrored_and_saved(two_cpu_strategy, lambda: BACKBONES[kind](True),
                                         lc.TASKS3, tmp_path / "m")


@pytest.mark.parametrize("backbone,args,banks", [
    ("mmoe", {"num_experts": 3, "expert_units": [8]}, ["shared"]),
    ("ple", {"num_levels": 2, "num_shared_experts": 2, "num_task_experts": 1,
             "expert_units": [8]}, ["level_0/shared", "level_0/ctr", "level_1/cvr"])])
def test_network_with_fused_experts_holds_only_stacked_expert_variables(backbone, args, banks):
    from tests import fixtures
    from schemas import config as config_lib
    from trainer.model import build_network

    _, _, info = fixtures.tiny_arrays(200)
    cfg = config_lib.from_dict({"model": {"backbone": backbone, "embedding_dim": 4,
                                          "backbone_args": {**args, "fused_experts": True}}})
    names = [v.name for v in build_network(cfg.model, info).weights]
    for bank in banks:
        assert f"backbone/{bank}/experts/dense_0/kernel:0" in names, names
    assert not [n for n in names if "/expert_" in n]
