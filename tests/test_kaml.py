"""KAML losses (trainer/losses/kaml.py) against NumPy loop references (eq. 11, 12, 13)."""
import numpy as np
import pytest
import tensorflow as tf

from trainer.losses.kaml import (
    kaml_loss,
    masked_bce,
    masked_bce_with_logits,
    rlu_ranking,
)

EPS = 1e-7


def _ref_masked_bce(y, p, mask):
    total = 0.0
    for j in range(y.shape[1]):
        valid = [i for i in range(y.shape[0]) if mask[i, j] > 0]
        if not valid:
            continue
        s = 0.0
        for i in valid:
            q = min(max(p[i, j], EPS), 1 - EPS)
            s -= mask[i, j] * (y[i, j] * np.log(q) + (1 - y[i, j]) * np.log(1 - q))
        total += s / sum(mask[i, j] for i in valid)
    return total


def _ref_rlu(y, s, beta):
    b, n = y.shape
    total = 0.0
    for i in range(b):
        for j in range(b):
            if i == j:
                continue
            for k in range(n):
                if y[i, k] > y[j, k]:
                    total += beta[k] * np.log1p(np.exp(-(s[i, k] - s[j, k])))
    return total / b


def _data(rng, b=48, n=4):
    """Task 0 random, task 1 no valid sample, task 2 no positives, task 3 all positives."""
    y = (rng.random((b, n)) < 0.3).astype(np.float64)
    mask = (rng.random((b, n)) < 0.7).astype(np.float64)
    y[:, 2] = 0
    y[:, 3] = 1
    mask[:, 1] = 0
    logits = rng.normal(scale=2.0, size=(b, n))
    return y, logits, mask


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("seed", range(3))
def test_masked_bce_matches_reference(seed):
    rng = np.random.default_rng(seed)
    y, logits, mask = _data(rng)
    p = _sigmoid(logits)
    p[0, 0], p[1, 0] = 0.0, 1.0  # clipping path
    got = masked_bce(y, tf.constant(p), mask)
    assert got.dtype == tf.float64
    assert float(got) == pytest.approx(_ref_masked_bce(y, p, mask), abs=1e-6, rel=1e-9)
    # logits form equals the probability form away from saturation
    want = _ref_masked_bce(y, _sigmoid(logits), mask)
    assert float(masked_bce_with_logits(y, tf.constant(logits), mask)) == pytest.approx(
        want, abs=1e-6, rel=1e-9)


def test_masked_bce_task_without_valid_sample_adds_zero():
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    p = np.array([[0.8, 0.3], [0.4, 0.9]])
    mask = np.array([[1.0, 0.0], [1.0, 0.0]])
    want = -(np.log(0.8) + np.log(0.6)) / 2
    assert float(masked_bce(y, p, mask)) == pytest.approx(want, abs=1e-12)
    assert float(masked_bce(y, p, np.zeros_like(mask))) == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_rlu_matches_reference(seed):
    rng = np.random.default_rng(10 + seed)
    y, logits, mask = _data(rng)
    beta = [1.0, 0.5, 2.0, 0.3]  # a list: 0.3 must not pass through float32
    labels = y * mask
    got = rlu_ranking(labels, tf.constant(logits), beta)
    assert float(got) == pytest.approx(_ref_rlu(labels, logits, beta), abs=1e-6, rel=1e-9)


def test_rlu_no_positive_or_all_positive_task_adds_zero():
    s = np.array([[0.3], [-1.0], [2.0]])
    assert float(rlu_ranking(np.zeros((3, 1)), s, [1.0])) == 0.0
    assert float(rlu_ranking(np.ones((3, 1)), s, [1.0])) == 0.0


@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
def test_kaml_loss_matches_reference(gamma):
    rng = np.random.default_rng(20)
    y, logits, mask = _data(rng)
    beta = np.array([1.0, 1.0, 0.5, 0.5])
    want = (gamma * _ref_masked_bce(y, _sigmoid(logits), mask)
            + (1 - gamma) * _ref_rlu(y * mask, logits, beta))
    got = kaml_loss(y, tf.constant(logits), mask, beta, gamma)
    assert float(got) == pytest.approx(want, abs=1e-6, rel=1e-9)


def test_gradients_finite_including_empty_tasks_and_saturated_logits():
    rng = np.random.default_rng(30)
    y, logits, mask = _data(rng, b=32)
    logits[0, 0], logits[1, 0] = 60.0, -60.0
    var = tf.Variable(logits.astype(np.float32))
    for fn in (lambda v: masked_bce(y, tf.sigmoid(v), mask),
               lambda v: rlu_ranking(y * mask, v, [1.0, 1.0, 1.0, 1.0]),
               lambda v: kaml_loss(y, v, mask, [1.0, 2.0, 1.0, 1.0], 0.5)):
        with tf.GradientTape() as tape:
            loss = fn(var)
        grad = tape.gradient(loss, var).numpy()
        assert np.isfinite(float(loss)) and np.all(np.isfinite(grad))
        assert np.all(grad[:, 1] == 0.0)  # task with no valid sample: no signal
    # kaml_loss does not saturate: a confidently wrong sample still has a gradient
    y2, m2 = np.array([[0.0]]), np.array([[1.0]])
    v = tf.Variable([[40.0]])
    with tf.GradientTape() as tape:
        loss = kaml_loss(y2, v, m2, [1.0], 1.0)
    assert float(loss) == pytest.approx(40.0, rel=1e-6)
    assert float(tape.gradient(loss, v)[0, 0]) == pytest.approx(1.0, rel=1e-6)


def test_works_in_tf_function_with_dynamic_batch():
    rng = np.random.default_rng(40)
    fn = tf.function(lambda y, s, m: kaml_loss(y, s, m, [1.0, 0.5, 1.0, 1.0], 0.7),
                     input_signature=[tf.TensorSpec([None, 4], tf.float64)] * 3)
    for b in (5, 40):
        y, logits, mask = _data(rng, b=b)
        want = (0.7 * _ref_masked_bce(y, _sigmoid(logits), mask)
                + 0.3 * _ref_rlu(y * mask, logits, [1.0, 0.5, 1.0, 1.0]))
        assert float(fn(y, logits, mask)) == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("gamma", [-0.1, 1.5, True, "0.5", float("nan")])
def test_invalid_gamma_shows_received_value(gamma):
    with pytest.raises(ValueError, match=f"received: gamma={gamma!r}"):
        kaml_loss(np.zeros((2, 1)), np.zeros((2, 1)), np.ones((2, 1)), [1.0], gamma)


def test_invalid_beta_shape_rejected():
    with pytest.raises(ValueError, match=r"beta.shape=\(3,\)"):
        rlu_ranking(np.zeros((2, 2)), np.zeros((2, 2)), [1.0, 1.0, 1.0])
