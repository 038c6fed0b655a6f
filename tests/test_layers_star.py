"""STAR, StarFC and PartitionedNormalization (Sheng et al., CIKM'21; KAML Table 2)."""
import numpy as np
import pytest

from tests import layer_checks as lc
from trainer.layers.star import STAR, PartitionedNormalization, StarFC

EPS = 1e-3  # PartitionedNormalization's default epsilon


def small(tasks=lc.TASKS2, **kw):
    args = {"units": [5, 4], "aux_units": [3], "domain_embedding_dim": 2, **kw}
    return lambda: STAR(tasks, name="star", **args)


def np_star(x, w, tasks, num_hidden, training, norm=True, aux=True):
    """STAR for the golden weights: PN, star FCN (relu hidden, linear output), auxiliary net."""
    if norm:
        if training:
            mean, var = x.mean(0), x.var(0)
        else:
            mean, var = w["norm/norm/moving_mean"], w["norm/norm/moving_variance"]
        z = (x - mean) / np.sqrt(var + EPS)
    out = {}
    for i, t in enumerate(tasks):
        h = x
        if norm:
            h = z * (w["norm/shared/gamma"] * w[f"norm/{t}/gamma"]) + (
                w["norm/shared/beta"] + w[f"norm/{t}/beta"])
        for name in [f"star_{l}" for l in range(num_hidden)] + ["star_out"]:
            h = h @ (w[f"{name}/shared/kernel"] * w[f"{name}/{t}/kernel"]) + (
                w[f"{name}/shared/bias"] + w[f"{name}/{t}/bias"])
            if name != "star_out":
                h = lc.np_relu(h)
        if aux:
            a = np.concatenate([x, np.tile(w["auxiliary/domain_embedding"][i], (len(x), 1))], 1)
            a = lc.np_mlp(a, w, "auxiliary/mlp", 1)
            h = h + lc.np_dense(a, w, "auxiliary/logit")
        out[t] = h
    return out


def test_defaults():
    layer = STAR(["ctr", "cvr"])
    assert (layer.units, layer.activation, layer.partitioned_norm, layer.aux_units,
            layer.domain_embedding_dim, layer.dropout, layer.norm_momentum,
            layer.domain_kernel_stddev) == ([64, 32], "relu", True, [32], 4, 0.0, 0.9, 0.5)
    layer(lc.features())
    assert layer.norm.momentum == 0.9


@pytest.mark.parametrize("make", [
    small(), small(partitioned_norm=False, aux_units=[]),
    lambda: StarFC(["a", "b"], 3, "relu", domain_kernel_stddev=0.2, name="fc"),
    lambda: PartitionedNormalization(["a", "b"], momentum=0.9, epsilon=0.01, name="pn")],
    ids=["star", "star_plain", "star_fc", "pn"])
def test_config_round_trip(make):
    lc.check_config_round_trip(make, lc.features())


@pytest.mark.parametrize("training", [True, False], ids=["batch_moments", "moving_moments"])
def test_golden_three_tasks(training):
    layer = small(lc.TASKS3)()
    x = lc.features()
    layer(x)
    w = lc.set_golden_weights(layer)
    w["norm/norm/moving_variance"] = np.abs(w["norm/norm/moving_variance"]) + 0.5
    layer.norm.norm.moving_variance.assign(w["norm/norm/moving_variance"])
    lc.assert_close(layer(x, training=training), np_star(x, w, lc.TASKS3, 2, training))


def test_golden_without_norm_and_auxiliary_network():
    layer = small(lc.TASKS3, partitioned_norm=False, aux_units=[])()
    x = lc.features()
    layer(x)
    w = lc.set_golden_weights(layer)
    assert not [k for k in w if k.startswith(("norm/", "auxiliary/"))]
    lc.assert_close(layer(x), np_star(x, w, lc.TASKS3, 2, False, norm=False, aux=False))


def test_auxiliary_network_without_domain_embedding_reads_features_only():
    layer = small(lc.TASKS2, domain_embedding_dim=0)()
    x = lc.features()
    layer(x)
    aux = lc.to_numpy(layer.auxiliary_logits(x))
    np.testing.assert_allclose(aux["ctr"], aux["cvr"])  # nothing tells the tasks apart
    assert layer.auxiliary.weights[0].shape[0] == x.shape[1]


def test_domains_start_around_the_shared_layer_and_identical_with_zero_spread():
    """Domain kernels start at 1 + N(0, s^2) and biases at 0; s = 0: W * W_p = W."""
    fc = StarFC(lc.TASKS3, 4, "relu", domain_kernel_stddev=0.0, name="fc")
    x = lc.features()
    out = lc.to_numpy(fc(x))
    expected = lc.np_relu(x @ fc.kernels["shared"].numpy() + fc.biases["shared"].numpy())
    for t in lc.TASKS3:
        np.testing.assert_allclose(out[t], expected, atol=1e-6)
    spread = StarFC(lc.TASKS3, 64, name="fc")
    spread(x)
    kernels = [spread.kernels[t].numpy() for t in lc.TASKS3]
    for k in kernels:
        assert abs(k.mean() - 1.0) < 0.15 and 0.35 < k.std() < 0.65
        np.testing.assert_array_equal(spread.biases[lc.TASKS3[0]].numpy(), 0.0)
    assert not np.allclose(kernels[0], kernels[1])


def test_partitioned_norm_tracks_moving_moments_in_training_only():
    pn = PartitionedNormalization(["a"], momentum=0.5, name="pn")
    x = lc.features() * 3.0 + 1.0
    pn(x, training=False)
    np.testing.assert_allclose(pn.norm.moving_mean.numpy(), 0.0)
    pn(x, training=True)
    np.testing.assert_allclose(pn.norm.moving_mean.numpy(), 0.5 * x.mean(0), rtol=1e-5)


@pytest.mark.parametrize("cls,name,value", [
    (STAR, "tasks", ["ctr", "auxiliary"]), (STAR, "tasks", ["shared"]), (STAR, "units", []),
    (STAR, "dropout", 1.0), (STAR, "aux_units", [4, 0]), (STAR, "domain_embedding_dim", -1),
    (STAR, "norm_momentum", 1.5), (STAR, "domain_kernel_stddev", -0.5),
    (StarFC, "domain_kernel_stddev", -1.0),
    (StarFC, "units", 0), (StarFC, "partitions", []),
    (PartitionedNormalization, "momentum", 1.5), (PartitionedNormalization, "epsilon", 0)])
def test_invalid_args(cls, name, value):
    base = {STAR: {"tasks": ["ctr", "cvr"]}, StarFC: {"partitions": ["a"], "units": 2},
            PartitionedNormalization: {"partitions": ["a"]}}[cls]
    lc.check_rejects(cls, base, name, value)


def test_fit_one_step_three_tasks():
    lc.check_backbone_fit_one_step(small(lc.TASKS3), lc.TASKS3)


def test_mirrored_step_then_save_load(two_cpu_strategy, tmp_path):
    make = lambda: STAR(lc.TASKS2, units=[4], aux_units=[2], domain_embedding_dim=2)
    lc.check_backbone_mirrored_and_saved(two_cpu_strategy, make, lc.TASKS2, tmp_path / "m")
