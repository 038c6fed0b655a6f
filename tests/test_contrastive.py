"""Adaptive-temperature InfoNCE (trainer/losses/contrastive.py) against a NumPy loop."""
import numpy as np
import pytest
import tensorflow as tf

from trainer.losses.contrastive import adaptive_info_nce


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
