"""Adaptive-temperature InfoNCE (trainer/losses/contrastive.py) against a NumPy loop."""
import numpy as np
import pytest
import tensorflow as tf

from trainer.losses.contrastive import (
    adaptive_info_nce,
    representation_mse,
    single_negative_contrast,
)


def _reference(anchor, positive, tau):
    b = anchor.shape[0]
    total = 0.0
    for r in range(b):
        z = np.array([anchor[r] @ positive[q] for q in range(b)]) / tau[r]
        zmax = z.max()
        log_norm = zmax + np.log(np.sum(np.exp(z - zmax)))
        total += -(z[r] - log_norm)
    return total / b


@pytest.mark.parametrize("b, d", [(1, 4), (7, 16), (64, 128), (1024, 32)])
def test_matches_reference_float64(b, d):
    rng = np.random.default_rng(b + d)
    anchor = rng.normal(size=(b, d))
    positive = anchor * 0.5 + rng.normal(size=(b, d))
    tau = rng.uniform(0.05, 1.0, size=b)
    tau[0] = 0.05
    got = adaptive_info_nce(tf.constant(anchor), tf.constant(positive), tf.constant(tau))
    assert got.dtype == tf.float64
    assert float(got) == pytest.approx(_reference(anchor, positive, tau), abs=1e-6, rel=1e-9)


def test_stable_for_large_logits_and_column_or_scalar_tau():
    rng = np.random.default_rng(0)
    anchor = rng.normal(scale=30.0, size=(16, 8))
    positive = rng.normal(scale=30.0, size=(16, 8))
    tau = np.full(16, 0.05)  # logits ~ 1e4 / 0.05
    want = _reference(anchor, positive, tau)
    got = adaptive_info_nce(anchor, positive, tau.reshape(-1, 1))
    assert np.isfinite(float(got))
    assert float(got) == pytest.approx(want, rel=1e-9)
    assert float(adaptive_info_nce(anchor, positive, 0.05)) == pytest.approx(want, rel=1e-9)


def test_float32_close_and_gradients_finite():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(128, 32))
    p = rng.normal(size=(128, 32))
    t = rng.uniform(0.05, 1.0, size=128)
    va, vp = tf.Variable(a.astype(np.float32)), tf.Variable(p.astype(np.float32))
    vt = tf.Variable(t.astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        loss = adaptive_info_nce(va, vp, vt)
        loss_tau = adaptive_info_nce(va, vp, vt, stop_tau_gradient=False)
    assert loss.dtype == tf.float32
    assert float(loss) == pytest.approx(_reference(a, p, t), rel=1e-4)
    for g in tape.gradient(loss, [va, vp]):
        assert np.all(np.isfinite(g.numpy()))
    assert tape.gradient(loss, vt) is None  # Algorithm 1: tau is stop-gradient by default
    g_tau = tape.gradient(loss_tau, vt).numpy()
    assert np.all(np.isfinite(g_tau)) and np.any(g_tau != 0)


def test_perfect_alignment_with_low_temperature_gives_small_loss():
    eye = np.eye(8)
    assert float(adaptive_info_nce(eye, eye, np.full(8, 0.05))) < 1e-6


def _np_single_negative(a, p, shift=1):
    b = a.shape[0]
    total = 0.0
    for r in range(b):
        margin = a[r] @ p[r] - a[r] @ p[(r + shift) % b]
        total += np.log1p(np.exp(-margin))  # -log sigmoid(margin)
    return total / b


@pytest.mark.parametrize("b, shift", [(1, 1), (5, 1), (64, 3)])
def test_single_negative_matches_bpr_reference(b, shift):
    rng = np.random.default_rng(b)
    a, p = rng.normal(size=(b, 16)), rng.normal(size=(b, 16))
    got = single_negative_contrast(a, p, shift=shift)
    assert float(got) == pytest.approx(_np_single_negative(a, p, shift), rel=1e-9)


def test_single_negative_is_finite_where_eq_7_is_undefined():
    # Eq. 7 takes log(pos - neg): negative here. The safe form is finite with finite gradients.
    a = tf.Variable([[1.0, 0.0], [0.0, 1.0]])
    p = tf.constant([[-50.0, 0.0], [0.0, -50.0]])
    with tf.GradientTape() as tape:
        loss = single_negative_contrast(a, p)
    assert float(loss) == pytest.approx(50.0, rel=1e-6)
    assert np.all(np.isfinite(tape.gradient(loss, a).numpy()))


def test_representation_mse_reference():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(9, 4)), rng.normal(size=(9, 4))
    assert float(representation_mse(a, b)) == pytest.approx(np.mean((a - b) ** 2), rel=1e-12)
