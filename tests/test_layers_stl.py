"""Single-task backbones: DNN and MaskNet (Wang et al., 2021)."""
import numpy as np
import pytest

from tests import layer_checks as lc
from trainer.layers.stl import DNN, MaskBlock, MaskNet


def small_dnn(tasks=("ctr",)):
    return lambda: DNN(tasks, units=[5, 3], name="dnn")


def small_masknet(tasks=("ctr",), mode="serial", hidden_units=None):
    return lambda: MaskNet(tasks, num_blocks=2, block_units=4, reduction_ratio=1.5, mode=mode,
                           hidden_units=hidden_units, name="masknet")


def np_mask_block(emb, v_in, w, prefix):
    """MaskNet eq. 3-4 (instance-guided mask) and 9-11 (LN on the hidden layer, ReLU)."""
    mask = lc.np_dense(lc.np_dense(emb, w, f"{prefix}/mask_aggregation", "relu"), w,
                       f"{prefix}/mask_projection")
    hidden = lc.np_dense(mask * v_in, w, f"{prefix}/hidden", bias=False)
    return lc.np_relu(lc.np_layer_norm(hidden, w, f"{prefix}/layer_norm"))


def test_defaults_follow_fuxictr():
    assert DNN(["ctr"]).units == [64, 64, 64]
    m = MaskNet(["ctr"])
    assert (m.num_blocks, m.block_units, m.reduction_ratio, m.mode, m.hidden_units) == (
        3, 64, 1.0, "serial", None)


@pytest.mark.parametrize("make", [
    small_dnn(), small_masknet(), small_masknet(mode="parallel", hidden_units=[3]),
    lambda: MaskBlock(4, 2.0, name="block")], ids=["dnn", "serial", "parallel", "block"])
def test_config_round_trip(make):
    x = lc.features() if make().name != "block" else (lc.features(seed=1), lc.features(seed=2))
    lc.check_config_round_trip(make, x)


def test_dnn_golden_one_network_per_task():
    layer = small_dnn(lc.TASKS3)()
    x = lc.features()
    layer(x)
    w = lc.set_golden_weights(layer)
    lc.assert_close(layer(x), {t: lc.np_mlp(x, w, f"{t}/dnn", 2) for t in lc.TASKS3})


@pytest.mark.parametrize("mode", ["serial", "parallel"])
def test_masknet_golden(mode):
    layer = small_masknet(("ctr", "cvr"), mode=mode, hidden_units=[3])()
    x = lc.features()
    layer(x)
    w = lc.set_golden_weights(layer)
    assert w["ctr/block_0/mask_aggregation/kernel"].shape == (6, 9)  # round(1.5 * 6)
    expected = {}
    for t in ("ctr", "cvr"):
        ln = lc.np_layer_norm(x, w, f"{t}/embedding_norm")
        if mode == "serial":
            h = np_mask_block(x, ln, w, f"{t}/block_0")
            h = np_mask_block(x, h, w, f"{t}/block_1")
        else:
            h = np.concatenate([np_mask_block(x, ln, w, f"{t}/block_{i}") for i in range(2)], -1)
        expected[t] = lc.np_mlp(h, w, f"{t}/mlp", 1)
    lc.assert_close(layer(x), expected)


@pytest.mark.parametrize("mode,hidden,width", [("serial", None, 4), ("parallel", None, 8),
                                               ("parallel", [7], 7)])
def test_masknet_output_width(mode, hidden, width):
    lc.check_output_shapes(small_masknet(mode=mode, hidden_units=hidden), ("ctr",), width)


@pytest.mark.parametrize("cls,name,value", [
    (DNN, "units", []), (DNN, "dropout", 1.0), (MaskNet, "num_blocks", 0),
    (MaskNet, "block_units", -4), (MaskNet, "reduction_ratio", 0.0), (MaskNet, "mode", "mixed"),
    (MaskNet, "hidden_units", [0]), (MaskNet, "tasks", [])])
def test_invalid_args(cls, name, value):
    lc.check_rejects(cls, {"tasks": ["ctr"]}, name, value)


@pytest.mark.parametrize("make,tasks", [
    (small_dnn(lc.TASKS3), lc.TASKS3), (small_masknet(("ctr", "cvr")), ("ctr", "cvr")),
    (small_masknet(mode="parallel", hidden_units=[3]), ("ctr",))],
    ids=["dnn3", "masknet_serial2", "masknet_parallel"])
def test_fit_one_step(make, tasks):
    lc.check_backbone_fit_one_step(make, tasks)


def test_mirrored_step_then_save_load(two_cpu_strategy, tmp_path):
    # MaskNet only: DNN is an MLP per task, the path SharedBottom's save test already covers.
    make = small_masknet(mode="parallel", hidden_units=[3])
    lc.check_backbone_mirrored_and_saved(two_cpu_strategy, make, ("ctr",), tmp_path / "m")
