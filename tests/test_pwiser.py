"""PWiseR (trainer/losses/pwiser.py) against a brute-force NumPy double loop."""
import numpy as np
import pytest
import tensorflow as tf

from trainer.losses.pwiser import PWiseR, pwiser


def _reference(click, conversion, scores, m1=0.3, m2=0.3, margin_mode="standard"):
    """Eq. (2) of the PWiseR paper, literally, with explicit loops."""
    click = np.asarray(click).reshape(-1) > 0.5
    conv = np.asarray(conversion).reshape(-1) > 0.5
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    P = [j for j in range(len(s)) if conv[j]]
    A = [i for i in range(len(s)) if click[i] and not conv[i]]
    B = [k for k in range(len(s)) if not click[k] and not conv[k]]

    def gate(s_neg, s_pos, m):
        if margin_mode == "standard":
            return s_pos < s_neg + m
        return s_pos < s_neg - m

    def part(neg, m):
        total = 0.0
        for i in neg:
            for j in P:
                if i != j and gate(s[i], s[j], m):
                    total += (s[i] - s[j] + m) ** 2
        return total / len(neg) if neg else 0.0

    return part(A, m1) + part(B, m2)


def _batch(rng, n, kind="random"):
    click = (rng.random(n) < 0.4).astype(np.float32)
    conv = click * (rng.random(n) < 0.4)
    if kind == "no_conversion":
        conv[:] = 0
    elif kind == "no_click":
        click[:] = 0
        conv[:] = 0
    elif kind == "all_converted":
        click[:] = 1
        conv[:] = 1
    elif kind == "all_clicked_no_conversion":
        click[:] = 1
        conv[:] = 0
    elif kind == "single_each":
        click[:] = 0
        conv[:] = 0
        click[:2] = 1
        conv[0] = 1
    scores = rng.random(n)
    if kind == "ties":
        scores = np.round(scores * 4) / 4  # heavy ties, incl. across groups and at the margin
    return click, conv.astype(np.float32), scores


KINDS = ["random", "no_conversion", "no_click", "all_converted", "all_clicked_no_conversion",
         "single_each", "ties"]


@pytest.mark.parametrize("margin_mode", ["standard", "paper_literal"])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_double_loop_float64(kind, margin_mode):
    rng = np.random.default_rng(KINDS.index(kind))
    for n, m1, m2 in [(57, 0.3, 0.3), (120, 0.1, 0.5), (33, 0.0, 0.2)]:
        click, conv, s = _batch(rng, n, kind)
        got = pwiser(click, conv, tf.constant(s, tf.float64), m1, m2, margin_mode)
        assert got.dtype == tf.float64
        want = _reference(click, conv, s, m1, m2, margin_mode)
        assert float(got) == pytest.approx(want, abs=1e-6, rel=1e-9)


def test_ties_at_the_gate_are_strict():
    # s_j == s_i + m (standard: zero penalty anyway), s_j == s_i - m (literal: gate is closed).
    click = np.array([1, 1, 0], np.float32)
    conv = np.array([1, 0, 0], np.float32)
    s = np.array([0.5, 0.25, 0.75])
    for mode in ("standard", "paper_literal"):
        want = _reference(click, conv, s, 0.25, 0.25, mode)
        got = float(pwiser(click, conv, tf.constant(s), 0.25, 0.25, mode))
        assert got == pytest.approx(want, abs=1e-12)
    # literal: 0.5 < 0.25 - 0.25 and 0.5 < 0.75 - 0.25 are both false -> 0.
    assert float(pwiser(click, conv, tf.constant(s), 0.25, 0.25, "paper_literal")) == 0.0
    # standard: A pair sits exactly on the hinge (0); B pair: (0.75 - 0.5 + 0.25)^2 = 0.25.
    assert float(pwiser(click, conv, tf.constant(s), 0.25, 0.25)) == 0.25


def test_float32_int_and_bool_labels_and_column_scores():
    rng = np.random.default_rng(3)
    click, conv, s = _batch(rng, 200)
    want = _reference(click, conv, s)
    for c, v in [(click.astype(np.int64), conv.astype(np.int32)), (click > 0, conv > 0),
                 (click.astype(np.float64), conv.astype(np.float16))]:
        got = pwiser(c, v, tf.constant(s.reshape(-1, 1), tf.float32))
        assert got.dtype == tf.float32
        assert float(got) == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_inconsistent_conversion_without_click_counts_as_positive_only():
    click = np.array([0, 1, 0], np.float32)
    conv = np.array([1, 0, 0], np.float32)
    s = np.array([0.2, 0.4, 0.9])
    want = (0.4 - 0.2 + 0.3) ** 2 + (0.9 - 0.2 + 0.3) ** 2
    assert float(pwiser(click, conv, tf.constant(s))) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("margin_mode", ["standard", "paper_literal"])
@pytest.mark.parametrize("kind", KINDS)
def test_gradients_are_finite_in_every_edge_case(kind, margin_mode):
    rng = np.random.default_rng(7)
    click, conv, s = _batch(rng, 40, kind)
    logits = tf.Variable(np.log(s / (1 - s + 1e-9) + 1e-9), dtype=tf.float32)
    with tf.GradientTape() as tape:
        loss = pwiser(click, conv, tf.sigmoid(logits), margin_mode=margin_mode)
    grad = tape.gradient(loss, logits)
    assert np.isfinite(float(loss))
    assert grad is not None and np.all(np.isfinite(grad.numpy()))
    if kind in ("no_conversion", "no_click", "all_converted", "all_clicked_no_conversion"):
        assert float(loss) == 0.0
        assert np.all(grad.numpy() == 0.0)


def test_gradient_matches_analytic_pair():
    # One positive j, one clicked negative i: L = (s_i - s_j + m)^2, dL/ds_i = -dL/ds_j = 2(...)
    s = tf.Variable([0.3, 0.5], dtype=tf.float64)
    with tf.GradientTape() as tape:
        loss = pwiser([1, 1], [1, 0], s, m1=0.3)
    g = tape.gradient(loss, s).numpy()
    np.testing.assert_allclose(g, [-2 * 0.5, 2 * 0.5], atol=1e-12)


def test_batch_8192_runs_in_tf_function():
    rng = np.random.default_rng(0)
    click, conv, s = _batch(rng, 8192)
    logits = tf.Variable(rng.normal(size=8192).astype(np.float32))
    click, conv = tf.constant(click), tf.constant(conv)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = pwiser(click, conv, tf.sigmoid(logits))
        return loss, tape.gradient(loss, logits)

    loss, grad = step()
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert np.all(np.isfinite(grad.numpy()))


def test_tf_function_with_dynamic_batch_matches_reference():
    rng = np.random.default_rng(1)
    fn = tf.function(lambda c, v, s: pwiser(c, v, s, margin_mode="paper_literal"),
                     input_signature=[tf.TensorSpec([None], tf.float32)] * 2
                     + [tf.TensorSpec([None], tf.float64)])
    for kind in KINDS:
        click, conv, s = _batch(rng, 64, kind)
        want = _reference(click, conv, s, margin_mode="paper_literal")
        assert float(fn(click, conv, s)) == pytest.approx(want, abs=1e-6)


def test_keras_loss_class_matches_functional_and_refuses_per_replica_reductions():
    rng = np.random.default_rng(2)
    click, conv, s = _batch(rng, 100)
    y_true = np.stack([click, conv], axis=1)
    want = float(pwiser(click, conv, s.astype(np.float32), 0.2, 0.4))
    for reduction in ("auto", "sum_over_batch_size"):
        loss = PWiseR(m1=0.2, m2=0.4, reduction=reduction)
        assert float(loss(y_true, s.reshape(-1, 1).astype(np.float32))) == pytest.approx(want)
        assert float(loss(y_true, s.astype(np.float32))) == pytest.approx(want)
    for reduction in ("sum", "none"):
        with pytest.raises(ValueError, match=f"batch-level loss PWiseR .* received: "
                                             f"reduction='{reduction}'"):
            PWiseR(reduction=reduction)
    with pytest.raises(ValueError, match="sample_weight"):
        PWiseR()(y_true, s, sample_weight=np.ones(100))
    with pytest.raises(ValueError, match=r"y_true.shape=\(100, 3\)"):
        PWiseR()(np.zeros((100, 3)), s)


def test_config_round_trip_and_registration():
    loss = PWiseR(m1=0.1, m2=0.25, margin_mode="paper_literal", name="pw")
    config = loss.get_config()
    assert config["m1"] == 0.1 and config["m2"] == 0.25 and config["margin_mode"] == "paper_literal"
    clone = PWiseR.from_config(config)
    assert clone.get_config() == config
    restored = tf.keras.losses.deserialize(tf.keras.losses.serialize(loss))
    assert isinstance(restored, PWiseR) and restored.get_config() == config
    assert tf.keras.utils.get_registered_name(PWiseR) == "funnelrank>PWiseR"


@pytest.mark.parametrize("kwargs, shown", [
    ({"m1": -0.1}, "m1=-0.1"), ({"m2": "0.3"}, "m2='0.3'"), ({"m1": True}, "m1=True"),
    ({"m2": float("nan")}, "m2=nan"), ({"margin_mode": "literal"}, "margin_mode='literal'"),
    ({"margin_mode": None}, "margin_mode=None"),
])
def test_invalid_arguments_show_received_value(kwargs, shown):
    with pytest.raises(ValueError, match=f"received: {shown}"):
        PWiseR(**kwargs)
    with pytest.raises(ValueError, match=f"received: {shown}"):
        pwiser([1.0], [1.0], [0.5], **kwargs)


def test_global_batch_under_two_cpu_mirrored_strategy(two_cpu_strategy):
    """Each replica returns the GLOBAL batch's loss (every replica's rows gathered), and the
    summed replica gradients of loss / replicas equal the single-device gradient."""
    strategy = two_cpu_strategy
    assert strategy.num_replicas_in_sync == 2
    rng = np.random.default_rng(5)
    n = 64  # global batch: 32 per replica
    click, conv, _ = _batch(rng, n)
    x = rng.normal(size=n).astype(np.float32)
    with strategy.scope():
        w = tf.Variable(1.5)
    loss_obj = PWiseR()
    ds = tf.data.Dataset.from_tensor_slices((click, conv, x)).batch(n)
    dist = strategy.experimental_distribute_dataset(ds)

    @tf.function
    def step(batch):
        def replica_fn(c, v, feat):
            with tf.GradientTape() as tape:
                probs = tf.sigmoid(w * feat)
                loss = loss_obj(tf.stack([c, v], axis=1), probs)
                scaled = loss / strategy.num_replicas_in_sync
            return loss, tape.gradient(scaled, w)
        return strategy.run(replica_fn, args=batch)

    losses, grads = step(next(iter(dist)))
    want = _reference(click, conv, 1 / (1 + np.exp(-1.5 * x)))
    per_replica = [float(t) for t in strategy.experimental_local_results(losses)]
    np.testing.assert_allclose(per_replica, [want, want], rtol=1e-5, atol=1e-6)
    v = tf.Variable(1.5)
    with tf.GradientTape() as tape:
        single = pwiser(click, conv, tf.sigmoid(v * x))
    total = sum(float(g) for g in strategy.experimental_local_results(grads))
    assert total == pytest.approx(float(tape.gradient(single, v)), rel=1e-4)
