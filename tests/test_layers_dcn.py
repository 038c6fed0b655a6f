"""DCN-v2 (tfrs cross layers): the cross network, the DCN backbone and the cross bottom."""
import numpy as np
import pytest
import tensorflow as tf

from schemas import config as config_lib
from tests import fixtures
from tests import layer_checks as lc
from trainer.layers.dcn import DCN, Cross, CrossNetwork
from trainer.model import build_network


def np_cross_network(x, w, prefix, num_layers, low_rank=False, diag_scale=0.0):
    """DCN-v2 eq. 1 (eq. 2 when ``low_rank``): x_{l+1} = x_0 * (W_l x_l + b_l) + x_l."""
    h = x
    for i in range(num_layers):
        p = f"{prefix}/cross_{i}" if prefix else f"cross_{i}"
        if low_rank:
            prod = h @ w[f"{p}/u/kernel"] @ w[f"{p}/v/kernel"] + w[f"{p}/v/bias"]
        else:
            prod = h @ w[f"{p}/w/kernel"] + w[f"{p}/w/bias"]
        h = x * (prod + diag_scale * h) + h
    return h


def dcn(tasks=lc.TASKS2, **kwargs):
    args = {"num_cross_layers": 2, "deep_units": [5, 3], "name": "dcn", **kwargs}
    return lambda: DCN(tasks, **args)


def test_defaults():
    layer = DCN(["ctr", "cvr"])
    assert (layer.num_cross_layers, layer.projection_dim, layer.deep_units, layer.structure,
            layer.per_task) == (3, None, [64, 32], "stacked", False)


@pytest.mark.parametrize("make", [
    dcn(), dcn(projection_dim=2, structure="parallel", per_task=True, diag_scale=0.5),
    lambda: CrossNetwork(2, projection_dim=3, name="cn")], ids=["dcn", "dcn-lowrank", "cross"])
def test_config_round_trip(make):
    lc.check_config_round_trip(make, lc.features())


def test_cross_layer_is_tfrs_and_registered():
    import tensorflow_recommenders as tfrs

    assert issubclass(Cross, tfrs.layers.dcn.Cross)
    assert tf.keras.utils.get_registered_name(Cross) == "funnelrank>Cross"
    layer = Cross(projection_dim=2, name="c")
    layer(lc.features(), lc.features(seed=1))
    assert [v.name for v in layer.weights] == ["c/u/kernel:0", "c/v/kernel:0", "c/v/bias:0"]


@pytest.mark.parametrize("low_rank, diag_scale", [(False, 0.0), (True, 0.3)])
def test_golden_cross_network(low_rank, diag_scale):
    layer = CrossNetwork(3, projection_dim=2 if low_rank else None, diag_scale=diag_scale,
                         name="cn")
    x = lc.features()
    layer(x)
    w = lc.set_golden_weights(layer, scale=0.3)
    lc.assert_close(layer(x), np_cross_network(x, w, "", 3, low_rank, diag_scale))


@pytest.mark.parametrize("structure", ["stacked", "parallel"])
def test_golden_shared_dcn(structure):
    layer = dcn(lc.TASKS3, structure=structure)()
    x = lc.features()
    layer(x)
    w = lc.set_golden_weights(layer, scale=0.3)
    crossed = np_cross_network(x, w, "shared/cross", 2)
    if structure == "stacked":
        expected = lc.np_mlp(crossed, w, "shared/deep", 2)
    else:
        expected = np.concatenate([crossed, lc.np_mlp(x, w, "shared/deep", 2)], axis=-1)
    lc.assert_close(layer(x), {t: expected for t in lc.TASKS3})


def test_golden_per_task_low_rank_cross_only():
    layer = dcn(per_task=True, projection_dim=2, deep_units=[])()
    x = lc.features()
    layer(x)
    w = lc.set_golden_weights(layer, scale=0.3)
    expected = {t: np_cross_network(x, w, f"{t}/cross", 2, low_rank=True) for t in lc.TASKS2}
    lc.assert_close(layer(x), expected)
    assert not np.allclose(expected["ctr"], expected["cvr"])  # each task its own network


@pytest.mark.parametrize("name, value", [
    ("tasks", []), ("tasks", ["shared", "cvr"]), ("num_cross_layers", 0),
    ("projection_dim", 0), ("diag_scale", -1.0), ("deep_units", [4, 0]),
    ("structure", "nested"), ("per_task", 1), ("dropout", 1.0)])
def test_invalid_args(name, value):
    lc.check_rejects(DCN, {"tasks": ["ctr", "cvr"]}, name, value)


def test_invalid_cross_network_args():
    lc.check_rejects(CrossNetwork, {}, "num_layers", 0)
    lc.check_rejects(CrossNetwork, {}, "projection_dim", 2.5)


@pytest.mark.parametrize("make", [dcn(lc.TASKS3), dcn(lc.TASKS3, per_task=True,
                                                       structure="parallel", projection_dim=2)],
                         ids=["shared", "per-task"])
def test_fit_one_step_three_tasks(make):
    lc.check_backbone_fit_one_step(make, lc.TASKS3)


def test_mirrored_step_then_save_load(two_cpu_strategy, tmp_path):
    lc.check_backbone_mirrored_and_saved(two_cpu_strategy, dcn(per_task=True, projection_dim=2),
                                         lc.TASKS2, tmp_path / "m")


def test_cross_layers_bottom_under_a_multi_task_backbone(tmp_path):
    """``model.cross_layers``: DCN-v2 cross layers between the embeddings and any backbone."""
    cfg = config_lib.load("configs/ple.yaml", {"model.cross_layers": 2,
                                               "model.cross_projection_dim": 4})
    _, arrays, info = fixtures.tiny_arrays(300)
    network = build_network(cfg.model, info, funnel=cfg.funnel)
    cross = network.get_layer("cross")
    assert isinstance(cross, CrossNetwork) and cross.num_layers == 2
    assert cross.projection_dim == 4
    width = network.get_layer("embedding").output.shape[-1]
    assert cross.output.shape[-1] == width and network.get_layer("backbone").input is cross.output
    plain = build_network(config_lib.load("configs/ple.yaml").model, info, funnel=cfg.funnel)
    with pytest.raises(ValueError):
        plain.get_layer("cross")
    path = tmp_path / "net"
    network.save(str(path), save_format="tf")
    from funnelrank import layers

    reloaded = tf.keras.models.load_model(str(path), custom_objects=layers.custom_objects())
    feed = {k: v[:8] for k, v in arrays.items() if k in network.input_names}
    lc.assert_close(reloaded(feed), network(feed))


@pytest.mark.parametrize("value, message", [
    (-1, r"`model.cross_layers` must be an integer >= 0"),
    (True, r"model.cross_layers: expected an integer, got True")])
def test_cross_layers_config_is_checked(value, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.from_dict({"model": {"cross_layers": value}})
    with pytest.raises(config_lib.ConfigError, match=r"`model.cross_projection_dim` must be a "
                                                     r"positive integer"):
        config_lib.from_dict({"model": {"cross_layers": 1, "cross_projection_dim": 0}})


def test_shipped_config_passes_null_arguments_to_the_layer():
    cfg = config_lib.load("configs/dcn.yaml")
    assert cfg.model.backbone == "dcn" and cfg.model.backbone_args["projection_dim"] is None
    assert "num_experts" not in cfg.model.backbone_args  # the base's MMoE args are replaced
