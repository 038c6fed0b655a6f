"""AdaFTR's contrastive losses (trainer/losses/contrastive.py) against NumPy loops: the Keras
loss AdaptiveInfoNCE (eq. 6/13) and the two ablation losses (eq. 5, eq. 7 made safe)."""
import numpy as np
import pytest
import tensorflow as tf

from trainer.losses.contrastive import (AdaptiveInfoNCE, info_nce_rows, logsumexp_rows,
                                        representation_mse, single_negative_contrast)

NONE = tf.keras.losses.Reduction.NONE


def _reference_rows(anchor, positive, tau):
    """-log softmax_{r'}(a_r . p_r' / tau_r)[r] for every row r, with explicit loops."""
    b = anchor.shape[0]
    rows = np.zeros(b)
    for r in range(b):
        z = np.array([anchor[r] @ positive[q] for q in range(b)]) / tau[r]
        zmax = z.max()
        rows[r] = -(z[r] - (zmax + np.log(np.sum(np.exp(z - zmax)))))
    return rows


def _reference(anchor, positive, tau):
    """Batch mean of eq. 13's row terms (the default reduction)."""
    return float(np.mean(_reference_rows(anchor, positive, tau)))


def _pair(b, d, seed):
    rng = np.random.default_rng(seed)
    anchor = rng.normal(size=(b, d))
    positive = anchor * 0.5 + rng.normal(size=(b, d))
    tau = rng.uniform(0.05, 1.0, size=b)
    tau[0] = 0.05
    return anchor, positive, tau


@pytest.mark.parametrize("b, d", [(1, 4), (7, 16), (64, 128), (1024, 32)])
def test_rows_match_reference_float64(b, d):
    anchor, positive, tau = _pair(b, d, b + d)
    got = info_nce_rows(tf.constant(anchor), tf.constant(positive), tf.constant(tau))
    assert got.dtype == tf.float64 and got.shape == (b,)
    np.testing.assert_allclose(got.numpy(), _reference_rows(anchor, positive, tau),
                               rtol=1e-9, atol=1e-6)


def _reference_gradients(anchor, positive, tau):
    """Analytic gradients of the batch mean of eq. 13 (tau held fixed): with
    ``s_rq = softmax_q(a_r . p_q / tau_r)``, ``dl_r/da_r = (sum_q s_rq p_q - p_r) / tau_r`` and
    ``dl_r/dp_q = (s_rq - [q == r]) a_r / tau_r``."""
    b = anchor.shape[0]
    z = anchor @ positive.T / tau[:, None]
    s = np.exp(z - z.max(axis=1, keepdims=True))
    s /= s.sum(axis=1, keepdims=True)
    coef = (s - np.eye(b)) / tau[:, None] / b
    return coef @ positive, coef.T @ anchor


@pytest.mark.parametrize("b, d", [(1, 3), (9, 5), (256, 64)])
def test_gradients_match_analytic_reference_float64(b, d):
    anchor, positive, tau = _pair(b, d, 3 * b + d)
    va, vp = tf.Variable(anchor), tf.Variable(positive)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(info_nce_rows(va, vp, tf.constant(tau)))
    got_a, got_p = tape.gradient(loss, [va, vp])
    want_a, want_p = _reference_gradients(anchor, positive, tau)
    np.testing.assert_allclose(got_a.numpy(), want_a, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got_p.numpy(), want_p, rtol=1e-9, atol=1e-12)


def _logsumexp_and_derivatives(fn, logits, upstream, direction):
    """fn's value, its gradient under ``upstream`` and the derivative of that gradient along
    ``direction`` (a Hessian-vector product: the second order MAML's outer step takes)."""
    x = tf.Variable(logits)
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            value = fn(x)
            weighted = tf.reduce_sum(value * upstream)
        grad = inner.gradient(weighted, x)
        along = tf.reduce_sum(grad * direction)
    return value.numpy(), grad.numpy(), outer.gradient(along, x).numpy()


@pytest.mark.parametrize("b, cols, scale", [(1, 1, 1.0), (5, 7, 1.0), (64, 300, 400.0)])
def test_logsumexp_rows_value_and_two_orders_of_gradient_match_tf(b, cols, scale):
    rng = np.random.default_rng(b + cols)
    logits = rng.normal(size=(b, cols)) * scale  # 400: exp overflows without the max shift
    upstream, direction = rng.normal(size=b), rng.normal(size=(b, cols))
    got = _logsumexp_and_derivatives(logsumexp_rows, logits, upstream, direction)
    want = _logsumexp_and_derivatives(lambda x: tf.reduce_logsumexp(x, axis=-1), logits,
                                      upstream, direction)
    z = logits - logits.max(axis=1, keepdims=True)
    softmax = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got[0], logits.max(axis=1) + np.log(np.exp(z).sum(axis=1)),
                               rtol=1e-12)
    np.testing.assert_allclose(got[1], softmax * upstream[:, None], rtol=1e-9, atol=1e-15)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)
    assert np.all(np.isfinite(got[0]))


@pytest.mark.parametrize("reduction, reduce", [("auto", np.mean), ("sum_over_batch_size", np.mean),
                                               ("sum", np.sum), ("none", lambda x: x)])
def test_keras_loss_reductions_are_mean_or_the_papers_sum(reduction, reduce):
    anchor, positive, tau = _pair(9, 5, 0)
    packed = np.concatenate([anchor, positive, tau[:, None]], axis=1)
    loss = AdaptiveInfoNCE(reduction=reduction)
    want = reduce(_reference_rows(anchor, positive, tau))
    np.testing.assert_allclose(loss(None, tf.constant(packed)).numpy(), want, rtol=1e-9)
    as_dict = loss(None, {"anchor": anchor, "positive": positive, "tau": tau})
    np.testing.assert_allclose(as_dict.numpy(), want, rtol=1e-9)


def test_fixed_temperature_is_eq_6_and_packs_without_a_tau_column():
    anchor, positive, _ = _pair(6, 3, 1)
    loss = AdaptiveInfoNCE(temperature=0.2)
    want = _reference(anchor, positive, np.full(6, 0.2))
    assert float(loss(None, np.concatenate([anchor, positive], axis=1))) == pytest.approx(
        want, rel=1e-9)
    assert float(loss(None, {"anchor": anchor, "positive": positive})) == pytest.approx(
        want, rel=1e-9)


def test_stable_for_large_logits_and_column_or_scalar_tau():
    rng = np.random.default_rng(0)
    anchor = rng.normal(scale=30.0, size=(16, 8))
    positive = rng.normal(scale=30.0, size=(16, 8))
    tau = np.full(16, 0.05)  # logits ~ 1e4 / 0.05
    want = _reference(anchor, positive, tau)
    loss = AdaptiveInfoNCE()
    got = loss(None, {"anchor": anchor, "positive": positive, "tau": tau.reshape(-1, 1)})
    assert np.isfinite(float(got))
    assert float(got) == pytest.approx(want, rel=1e-9)
    scalar = loss(None, {"anchor": anchor, "positive": positive, "tau": 0.05})
    assert float(scalar) == pytest.approx(want, rel=1e-9)


def test_float32_close_and_tau_gradient_follows_stop_tau_gradient():
    rng = np.random.default_rng(1)
    a, p, t = (rng.normal(size=(128, 32)), rng.normal(size=(128, 32)),
               rng.uniform(0.05, 1.0, size=128))
    va, vp = tf.Variable(a.astype(np.float32)), tf.Variable(p.astype(np.float32))
    vt = tf.Variable(t.astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        loss = AdaptiveInfoNCE()(None, {"anchor": va, "positive": vp, "tau": vt})
        loss_tau = AdaptiveInfoNCE(stop_tau_gradient=False)(
            None, {"anchor": va, "positive": vp, "tau": vt})
    assert loss.dtype == tf.float32
    assert float(loss) == pytest.approx(_reference(a, p, t), rel=1e-4)
    for g in tape.gradient(loss, [va, vp]):
        assert np.all(np.isfinite(g.numpy()))
    assert tape.gradient(loss, vt) is None  # Algorithm 1: tau is stop-gradient by default
    g_tau = tape.gradient(loss_tau, vt).numpy()
    assert np.all(np.isfinite(g_tau)) and np.any(g_tau != 0)


def test_perfect_alignment_with_low_temperature_gives_small_loss():
    eye = np.eye(8)
    assert float(AdaptiveInfoNCE(temperature=0.05)(None, np.concatenate([eye, eye], 1))) < 1e-6


def test_config_round_trip_and_registration():
    loss = AdaptiveInfoNCE(temperature=0.3, stop_tau_gradient=False, reduction="sum", name="cl")
    config = loss.get_config()
    assert config == {"reduction": "sum", "name": "cl", "temperature": 0.3,
                      "stop_tau_gradient": False}
    assert AdaptiveInfoNCE.from_config(config).get_config() == config
    restored = tf.keras.losses.deserialize(tf.keras.losses.serialize(loss))
    assert isinstance(restored, AdaptiveInfoNCE) and restored.get_config() == config
    assert tf.keras.utils.get_registered_name(AdaptiveInfoNCE) == "funnelrank>AdaptiveInfoNCE"


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": 0}, r"`temperature` must be a positive number, received: temperature=0"),
    ({"temperature": "0.1"}, r"received: temperature='0.1'"),
    ({"stop_tau_gradient": 1}, r"`stop_tau_gradient` must be true or false, received: "
                               r"stop_tau_gradient=1")])
def test_invalid_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveInfoNCE(**kwargs)


@pytest.mark.parametrize("loss, y_pred, message", [
    (AdaptiveInfoNCE(), np.zeros((4, 6)), r"packed y_pred \[B, 2d \+ 1\] = h\^ctr \| h\^cvr \| "
                                          r"tau, received: y_pred.shape=\(4, 6\)"),
    (AdaptiveInfoNCE(temperature=0.1), np.zeros((4, 5)), r"\[B, 2d\] = h\^ctr \| h\^cvr, "
                                                         r"received: y_pred.shape=\(4, 5\)"),
    (AdaptiveInfoNCE(), np.zeros(4), r"received: y_pred.shape=\(4,\)"),
    (AdaptiveInfoNCE(), {"anchor": np.zeros((2, 2))}, r"keys=\['anchor'\]"),
    (AdaptiveInfoNCE(), {"anchor": np.zeros((2, 2)), "positive": np.zeros((2, 2))},
     r"exactly one of them, received: temperature=None, tau missing"),
    (AdaptiveInfoNCE(temperature=0.1), {"anchor": np.zeros((2, 2)), "positive": np.zeros((2, 2)),
                                        "tau": np.ones(2)}, r"temperature=0.1, tau given")])
def test_invalid_inputs_are_named(loss, y_pred, message):
    with pytest.raises(ValueError, match=message):
        loss(None, y_pred)


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


@pytest.mark.parametrize("fn", [
    lambda a, p: AdaptiveInfoNCE()(None, {"anchor": a, "positive": p, "tau": tf.ones([0])}),
    lambda a, p: AdaptiveInfoNCE(temperature=0.1, reduction="sum")(None, {"anchor": a,
                                                                          "positive": p}),
    single_negative_contrast, representation_mse], ids=["info_nce", "info_nce_sum",
                                                        "single_negative", "mse"])
def test_no_rows_give_zero_and_zero_gradient(fn):
    a = tf.Variable(np.zeros((0, 3), np.float32))
    p = tf.Variable(np.zeros((0, 3), np.float32))
    with tf.GradientTape() as tape:
        loss = fn(a, p)
    assert float(loss) == 0.0
    for g in tape.gradient(loss, [a, p]):
        assert g is None or g.shape == (0, 3)
