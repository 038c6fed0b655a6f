"""Losses under 2 logical CPU replicas (trainer/losses/global_batch.py):

* batch-level losses (PWiseR, RLU, MaskedBCE, KAML eq. 13, InfoNCE) mean the same with 1 and 2
  replicas: same loss and same update for the same global batch;
* mean-reduced losses (BCE, class-weighted BCE, InfoNCE, single-negative, representation MSE)
  give 0 with zero gradient, not NaN, on a replica that gets no rows of a final global batch
  smaller than the replica count.
"""
import numpy as np
import pytest
import tensorflow as tf

from tests import fixtures
from tests.test_contrastive import _reference_rows as np_info_nce_rows
from tests.test_kaml import _ref_kaml, _ref_masked_bce, _ref_rlu, _sigmoid
from tests.test_pwiser import _reference as np_pwiser
from schemas import config as config_lib
from trainer.data import from_arrays
from trainer.session import fit_model
from trainer.losses._tensors import safe_mean
from trainer.losses.contrastive import (AdaptiveInfoNCE, representation_mse,
                                        single_negative_contrast)
from trainer.losses.kaml import KamlLoss, MaskedBCE, RLURanking
from trainer.losses.pwiser import PWiseR
from trainer.objectives import bce

N_ROWS, WIDTH = 24, 3  # global batch (12 rows per replica), feature width


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N_ROWS, WIDTH)).astype(np.float32)
    click = (rng.random(N_ROWS) < 0.5).astype(np.float32)
    conv = click * (rng.random(N_ROWS) < 0.5).astype(np.float32)
    labels = (rng.random((N_ROWS, 2)) < 0.4).astype(np.float32)
    mask = (rng.random((N_ROWS, 2)) < 0.7).astype(np.float32)
    return x, click, conv, labels, mask


def _w0():
    return np.array([[0.5, -0.3, 0.2, 0.1], [0.1, 0.4, -0.2, 0.3], [-0.6, 0.2, 0.3, -0.1]],
                    np.float32)


# Each case: (make the loss's inputs from x @ w and the labels, numpy reference of the global
# batch from the same predictions). Predictions: z = x @ w, [B, 4].
def _pwiser(z, t):
    return PWiseR()(tf.stack([t["click"], t["conv"]], 1), tf.sigmoid(z[:, 0]))


def _rlu(z, t):
    return RLURanking([1.0, 0.5])(t["labels"], z[:, :2])


def _masked_bce(z, t):
    return MaskedBCE()(tf.concat([t["labels"], t["mask"]], 1), z[:, :2])


def _kaml(z, t):
    return KamlLoss(0.6, [1.0, 2.0], "submitted")(tf.concat([t["labels"], t["mask"]], 1),
                                                   z[:, :2])


def _info_nce_mean(z, t):  # the recipe's reduction: mean of the row terms of this replica
    pair = {"anchor": z[:, :2], "positive": z[:, 2:], "tau": tf.sigmoid(z[:, 0]) + 0.1}
    return safe_mean(AdaptiveInfoNCE(reduction="none")(None, pair))


def _np_cases(z, x, click, conv, labels, mask):
    s = _sigmoid(z.astype(np.float64))
    tau = s[:, 0] + 0.1
    return {
        "pwiser": np_pwiser(click, conv, s[:, 0]),
        "rlu": _ref_rlu(labels, z[:, :2].astype(np.float64), [1.0, 0.5]),
        "masked_bce": _ref_masked_bce(labels, s[:, :2], mask),
        "kaml": _ref_kaml(labels, z[:, :2].astype(np.float64), mask, [1.0, 2.0], 0.6,
                          "submitted"),
        "info_nce": float(np.mean(np_info_nce_rows(z[:, :2].astype(np.float64),
                                                   z[:, 2:].astype(np.float64), tau)))}


CASES = {"pwiser": _pwiser, "rlu": _rlu, "masked_bce": _masked_bce, "kaml": _kaml,
         "info_nce": _info_nce_mean}


def _run(strategy, fn, x, targets):
    """Per-replica loss values and the summed gradient of loss / replicas w.r.t. w."""
    with strategy.scope():
        w = tf.Variable(_w0())
    ds = tf.data.Dataset.from_tensor_slices((x, targets)).batch(len(x))
    dist = strategy.experimental_distribute_dataset(ds)

    @tf.function
    def step(batch):
        def replica_fn(xb, tb):
            with tf.GradientTape() as tape:
                loss = fn(tf.matmul(xb, w), tb)
                scaled = loss / tf.distribute.get_replica_context().num_replicas_in_sync
            return loss, tape.gradient(scaled, w)
        return strategy.run(replica_fn, args=batch)

    losses, grads = step(next(iter(dist)))
    values = [float(v) for v in strategy.experimental_local_results(losses)]
    grad = sum(g.numpy() for g in strategy.experimental_local_results(grads))
    return values, grad


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_and_two_replicas_give_the_same_loss_and_update(name, two_cpu_strategy):
    x, click, conv, labels, mask = _data()
    targets = {"click": click, "conv": conv, "labels": labels, "mask": mask}
    one, grad_one = _run(tf.distribute.OneDeviceStrategy("/cpu:0"), CASES[name], x, targets)
    two, grad_two = _run(two_cpu_strategy, CASES[name], x, targets)
    want = _np_cases(x @ _w0(), x, click, conv, labels, mask)[name]
    assert one[0] == pytest.approx(want, rel=1e-4, abs=1e-6)  # golden value, global batch
    assert np.mean(two) == pytest.approx(want, rel=1e-4, abs=1e-6)
    if name != "info_nce":  # batch-level: every replica reports the global batch's value
        np.testing.assert_allclose(two, [want, want], rtol=1e-4, atol=1e-6)
    assert np.any(grad_one != 0)
    np.testing.assert_allclose(grad_two, grad_one, rtol=1e-4, atol=1e-6)


def test_info_nce_negatives_come_from_every_replica(two_cpu_strategy):
    """Per-replica row terms equal the global batch's rows (not a half-batch softmax)."""
    x, *_ = _data(1)

    def rows(z, t):
        return AdaptiveInfoNCE(temperature=0.3, reduction="none")(
            None, {"anchor": z[:, :2], "positive": z[:, 2:]})

    with two_cpu_strategy.scope():
        w = tf.Variable(_w0())
    dist = two_cpu_strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(x).batch(N_ROWS))
    out = two_cpu_strategy.run(tf.function(lambda xb: rows(tf.matmul(xb, w), None)),
                               args=(next(iter(dist)),))
    got = np.concatenate([v.numpy() for v in two_cpu_strategy.experimental_local_results(out)])
    z = (x @ _w0()).astype(np.float64)
    np.testing.assert_allclose(got, np_info_nce_rows(z[:, :2], z[:, 2:], np.full(N_ROWS, 0.3)),
                               rtol=1e-4)


MEAN_LOSSES = {
    "bce": lambda z, t: bce(t["click"], tf.sigmoid(z[:, 0])),
    "weighted_bce": lambda z, t: bce(t["click"], tf.sigmoid(z[:, 0]), 3.0, 0.5),
    "bce_clicked_rows": lambda z, t: bce(t["conv"], tf.sigmoid(z[:, 0]), rows=t["click"]),
    "info_nce": _info_nce_mean,
    "single_negative": lambda z, t: single_negative_contrast(z[:, :2], z[:, 2:]),
    "representation_mse": lambda z, t: representation_mse(z[:, :2], z[:, 2:])}


@pytest.mark.parametrize("name", sorted(MEAN_LOSSES))
def test_replica_without_rows_gives_zero_and_zero_gradient(name, two_cpu_strategy):
    x, click, conv, labels, mask = _data(2)
    targets = {"click": click[:1], "conv": np.ones(1, np.float32), "labels": labels[:1],
               "mask": mask[:1]}
    with two_cpu_strategy.scope():
        w = tf.Variable(_w0())
    # A global batch of ONE row: replica 0 gets it, replica 1 gets none.
    dist = two_cpu_strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x[:1], targets)).batch(1))

    @tf.function
    def step(batch):
        def replica_fn(xb, tb):
            with tf.GradientTape() as tape:
                loss = MEAN_LOSSES[name](tf.matmul(xb, w), tb)
            return tf.shape(xb)[0], loss, tape.gradient(loss, w)
        return two_cpu_strategy.run(replica_fn, args=batch)

    rows, losses, grads = (two_cpu_strategy.experimental_local_results(t)
                           for t in step(next(iter(dist))))
    assert [int(r) for r in rows] == [1, 0]
    assert np.isfinite(float(losses[0])) and np.all(np.isfinite(grads[0].numpy()))
    assert float(losses[1]) == 0.0
    assert grads[1] is not None and np.all(grads[1].numpy() == 0.0)


def test_final_batch_smaller_than_the_replica_count_trains_without_nan(two_cpu_strategy):
    """fit under 2 replicas where the last global batch has 1 row: every term stays finite."""
    _, arrays, info = fixtures.tiny_arrays(257)
    cfg = config_lib.from_dict({**config_lib.to_dict(fixtures.tiny_config(epochs=1)),
                                "loss": {"name": "adaftr", "args": {"beta": 0.1}}})
    ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 256)
    assert [int(y["ctr"].shape[0]) for _, y in ds] == [256, 1]
    model, _ = fit_model(cfg, info, ds, None, two_cpu_strategy)  # DivergenceGuard: no NaN
    history = model.history.history
    for term in ("bce_ctr", "bce_ctcvr", "rel", "cl"):
        assert np.all(np.isfinite(history[term])), term
    assert all(np.all(np.isfinite(v.numpy())) for v in model.step_variables)


def test_replica_local_keeps_each_replicas_rows_to_itself(two_cpu_strategy):
    """MAML's replicas train on partitions of their own (trainer/meta.py): nothing gathered."""
    from trainer.losses.global_batch import replica_local

    x, click, conv, _, _ = _data(4)
    targets = {"click": click, "conv": conv}

    def local(z, t):
        with replica_local():
            return _pwiser(z, t)

    values, _ = _run(two_cpu_strategy, local, x, targets)
    s = _sigmoid((x @ _w0())[:, 0].astype(np.float64))
    half = N_ROWS // 2
    want = [np_pwiser(click[:half], conv[:half], s[:half]),
            np_pwiser(click[half:], conv[half:], s[half:])]
    assert want[0] != pytest.approx(want[1])
    np.testing.assert_allclose(values, want, rtol=1e-4, atol=1e-6)
