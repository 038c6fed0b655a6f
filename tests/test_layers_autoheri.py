"""AutoHERI and HierarchicalIntegration (Wei et al., CIKM'21; AdaFTR Table 4)."""
import numpy as np
import pytest

from tests import layer_checks as lc
from trainer.layers.autoheri import AutoHERI, HierarchicalIntegration


def small(tasks=lc.TASKS2, units=(5, 4, 3), projection=True):
    return lambda: AutoHERI(tasks, units=list(units), projection=projection, name="heri")


def np_autoheri(x, w, tasks, num_layers, projection=True):
    """Task 0 a plain MLP; task k's layer l adds softmax(alpha)-weighted projections of every
    layer of task k-1 (the last softmax weight, "none", adds nothing)."""
    layers_of, out = {}, {}
    for k, t in enumerate(tasks):
        h, outs = x, []
        for l in range(num_layers):
            h = lc.np_dense(h, w, f"{t}/layer_{l}/dense_0", "relu")
            if k > 0:
                c = f"{t}/connection_{l}"
                a = lc.np_softmax(w[f"{c}/alpha"])
                for j, s in enumerate(layers_of[tasks[k - 1]]):
                    h = h + a[j] * (s @ w[f"{c}/from_{j}/kernel"] if projection else s)
            outs.append(h)
        layers_of[t], out[t] = outs, h
    return out


def test_defaults_follow_adaftr_table_3():
    layer = AutoHERI(["ctr", "cvr"])
    assert (layer.units, layer.activation, layer.dropout, layer.projection) == (
        [128, 64, 32], "relu", 0.0, True)


@pytest.mark.parametrize("make", [
    small(), small(units=(4, 4), projection=False),
    lambda: HierarchicalIntegration(6, 2, name="integration")], ids=["autoheri", "identity",
                                                                     "integration"])
def test_config_round_trip(make):
    x = lc.features()
    if isinstance(make(), HierarchicalIntegration):
        x = (x, [lc.features(seed=1), lc.features(seed=2, dim=3)])
    lc.check_config_round_trip(make, x)


@pytest.mark.parametrize("units,projection", [((5, 4, 3), True), ((4, 4, 4), False)],
                         ids=["projected", "identity"])
def test_golden_three_tasks(units, projection):
    layer = small(lc.TASKS3, units, projection)()
    x = lc.features()
    layer(x)
    w = lc.set_golden_weights(layer)
    assert "click/connection_0/alpha" not in w  # the first task integrates nothing
    lc.assert_close(layer(x), np_autoheri(x, w, lc.TASKS3, len(units), projection))


def test_connections_start_uniform_and_report_per_target_layer():
    layer = small(lc.TASKS3)()
    layer(lc.features())
    weights = lc.to_numpy(layer.connection_weights())
    assert sorted(weights) == ["conversion", "view"]
    for value in weights.values():
        np.testing.assert_allclose(value, np.full((3, 4), 0.25), rtol=1e-6)  # 3 sources + none


def test_none_candidate_switches_the_integration_off():
    unit = HierarchicalIntegration(3, 2, name="integration")
    h, sources = lc.features(dim=3), [lc.features(seed=1), lc.features(seed=2, dim=3)]
    unit((h, sources))
    unit.alpha.assign([-30.0, -30.0, 30.0])
    lc.assert_close(unit((h, sources)), h)


@pytest.mark.parametrize("cls,base,name,value", [
    (AutoHERI, {"tasks": ["ctr", "cvr"]}, "tasks", []),
    (AutoHERI, {"tasks": ["ctr", "cvr"]}, "units", [8, 0]),
    (AutoHERI, {"tasks": ["ctr", "cvr"]}, "dropout", -0.1),
    (AutoHERI, {"tasks": ["ctr", "cvr"], "projection": False}, "units", [8, 4]),
    (HierarchicalIntegration, {"units": 4, "num_sources": 2}, "units", 0),
    (HierarchicalIntegration, {"units": 4, "num_sources": 2}, "num_sources", 0)])
def test_invalid_args(cls, base, name, value):
    lc.check_rejects(cls, base, name, value)


def test_identity_connections_need_the_target_width():
    unit = HierarchicalIntegration(3, 2, projection=False)
    with pytest.raises(ValueError, match=r"projection=False needs every source of the target "
                                         r"width 3, received widths \[6, 3\]"):
        unit((lc.features(dim=3), [lc.features(), lc.features(dim=3)]))
    with pytest.raises(ValueError, match="expects 2 source layers, received 1"):
        HierarchicalIntegration(3, 2)((lc.features(dim=3), [lc.features()]))


def test_fit_one_step_three_tasks():
    lc.check_backbone_fit_one_step(small(lc.TASKS3), lc.TASKS3)


def test_mirrored_step_then_save_load(two_cpu_strategy, tmp_path):
    lc.check_backbone_mirrored_and_saved(two_cpu_strategy, small(units=(4, 2)), lc.TASKS2,
                                         tmp_path / "m")
