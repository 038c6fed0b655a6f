"""KAML losses (trainer/losses/kaml.py) against NumPy loop references: MaskedBCE (eq. 12),
RLURanking (eq. 11) and KamlLoss (eq. 13, both Type-A readings)."""
import numpy as np
import pytest
import tensorflow as tf

from trainer.losses.kaml import KamlLoss, MaskedBCE, RLURanking

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
    return total / b if b else 0.0


def _ref_kaml(y, logits, mask, beta, gamma, ranking_positives="masked"):
    """Eq. 13: D = rows with a non-zero mask; Type A = y * mask ("masked") or y ("submitted")."""
    in_d = mask.max(axis=1) > 0
    ranked = y * mask if ranking_positives == "masked" else y
    return (gamma * _ref_masked_bce(y, _sigmoid(logits), mask)
            + (1 - gamma) * _ref_rlu(ranked[in_d], logits[in_d], beta))


def _data(rng, b=48, n=4):
    """Task 0 random, task 1 no valid sample, task 2 no positives, task 3 all positives; a few
    rows with an all-zero mask (not in D) and positives outside the mask."""
    y = (rng.random((b, n)) < 0.3).astype(np.float64)
    mask = (rng.random((b, n)) < 0.7).astype(np.float64)
    y[:, 2] = 0
    y[:, 3] = 1
    mask[:, 1] = 0
    mask[:3] = 0
    logits = rng.normal(scale=2.0, size=(b, n))
    return y, logits, mask


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _packed(y, mask):
    return np.concatenate([y, mask], axis=1)


@pytest.mark.parametrize("seed", range(3))
def test_masked_bce_matches_reference_from_logits_and_probabilities(seed):
    rng = np.random.default_rng(seed)
    y, logits, mask = _data(rng)
    want = _ref_masked_bce(y, _sigmoid(logits), mask)
    got = MaskedBCE()(_packed(y, mask), tf.constant(logits))
    assert got.dtype == tf.float64
    assert float(got) == pytest.approx(want, abs=1e-6, rel=1e-9)
    p = _sigmoid(logits)
    p[3, 0], p[4, 0] = 0.0, 1.0  # clipping path
    got = MaskedBCE(from_logits=False)(_packed(y, mask), tf.constant(p))
    assert float(got) == pytest.approx(_ref_masked_bce(y, p, mask), abs=1e-6, rel=1e-9)


def test_masked_bce_task_without_valid_sample_adds_zero():
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    p = np.array([[0.8, 0.3], [0.4, 0.9]])
    mask = np.array([[1.0, 0.0], [1.0, 0.0]])
    loss = MaskedBCE(from_logits=False)
    assert float(loss(_packed(y, mask), p)) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2,
                                                             abs=1e-12)
    assert float(loss(_packed(y, np.zeros_like(mask)), p)) == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_rlu_matches_reference(seed):
    rng = np.random.default_rng(10 + seed)
    y, logits, mask = _data(rng)
    beta = [1.0, 0.5, 2.0, 0.3]  # a list: 0.3 must not pass through float32
    got = RLURanking(beta)(y * mask, tf.constant(logits))
    assert float(got) == pytest.approx(_ref_rlu(y * mask, logits, beta), abs=1e-6, rel=1e-9)
    one = RLURanking(0.7)(y, tf.constant(logits))
    assert float(one) == pytest.approx(_ref_rlu(y, logits, [0.7] * 4), abs=1e-6, rel=1e-9)


def test_rlu_no_positive_all_positive_or_no_rows_adds_zero():
    s = np.array([[0.3], [-1.0], [2.0]])
    assert float(RLURanking()(np.zeros((3, 1)), s)) == 0.0
    assert float(RLURanking()(np.ones((3, 1)), s)) == 0.0
    assert float(RLURanking()(np.zeros((0, 1)), np.zeros((0, 1)))) == 0.0


@pytest.mark.parametrize("ranking_positives", ["masked", "submitted"])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
def test_kaml_loss_matches_reference(gamma, ranking_positives):
    rng = np.random.default_rng(20)
    y, logits, mask = _data(rng)
    beta = [1.0, 1.0, 0.5, 0.5]
    loss = KamlLoss(gamma, beta, ranking_positives)
    want = _ref_kaml(y, logits, mask, beta, gamma, ranking_positives)
    assert float(loss(_packed(y, mask), tf.constant(logits))) == pytest.approx(
        want, abs=1e-6, rel=1e-9)
    terms = loss.terms(_packed(y, mask), tf.constant(logits))
    assert sorted(terms) == (["bce"] if gamma == 1.0 else ["bce", "ranking"])
    assert float(terms["bce"]) == pytest.approx(
        gamma * _ref_masked_bce(y, _sigmoid(logits), mask), abs=1e-6, rel=1e-9)


def test_type_a_readings_differ_exactly_on_positives_outside_the_mask():
    # Row 0: a positive outside the mask (submitted, but not trusted); row 1: a trusted 0.
    y = np.array([[1.0], [0.0], [0.0]])
    mask = np.array([[0.0], [1.0], [1.0]])  # row 0 still in D? no: its mask is all zero
    logits = np.array([[0.5], [1.0], [-1.0]])
    mask2 = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 1.0]])  # a second task keeps row 0 in D
    y2 = np.concatenate([y, np.zeros((3, 1))], 1)
    logits2 = np.concatenate([logits, np.zeros((3, 1))], 1)
    masked = float(KamlLoss(0.0, 1.0, "masked")(_packed(y2, mask2), logits2))
    submitted = float(KamlLoss(0.0, 1.0, "submitted")(_packed(y2, mask2), logits2))
    assert masked == 0.0  # y * mask has no positive
    want = (np.log1p(np.exp(-(0.5 - 1.0))) + np.log1p(np.exp(-(0.5 + 1.0)))) / 3
    assert submitted == pytest.approx(want, rel=1e-12)
    # With an all-zero mask row 0 leaves D: no pairs, and |D| = 2.
    assert float(KamlLoss(0.0, 1.0, "submitted")(_packed(y, mask), logits)) == 0.0


def test_gradients_finite_including_empty_tasks_and_saturated_logits():
    rng = np.random.default_rng(30)
    y, logits, mask = _data(rng, b=32)
    logits[5, 0], logits[6, 0] = 60.0, -60.0
    var = tf.Variable(logits.astype(np.float32))
    for fn in (lambda v: MaskedBCE(from_logits=False)(_packed(y, mask), tf.sigmoid(v)),
               lambda v: RLURanking([1.0, 1.0, 1.0, 1.0])(y * mask, v),
               lambda v: KamlLoss(0.5, [1.0, 2.0, 1.0, 1.0])(_packed(y, mask), v)):
        with tf.GradientTape() as tape:
            loss = fn(var)
        grad = tape.gradient(loss, var).numpy()
        assert np.isfinite(float(loss)) and np.all(np.isfinite(grad))
        assert np.all(grad[:, 1] == 0.0)  # task with no valid sample: no signal
    # from logits the loss does not saturate: a confidently wrong sample still has a gradient
    v = tf.Variable([[40.0]])
    with tf.GradientTape() as tape:
        loss = KamlLoss(1.0, 1.0)(np.array([[0.0, 1.0]]), v)
    assert float(loss) == pytest.approx(40.0, rel=1e-6)
    assert float(tape.gradient(loss, v)[0, 0]) == pytest.approx(1.0, rel=1e-6)


def test_works_in_tf_function_with_dynamic_batch():
    rng = np.random.default_rng(40)
    loss = KamlLoss(0.7, [1.0, 0.5, 1.0, 1.0])
    fn = tf.function(lambda t, s: loss(t, s),
                     input_signature=[tf.TensorSpec([None, 8], tf.float64),
                                      tf.TensorSpec([None, 4], tf.float64)])
    for b in (5, 40):
        y, logits, mask = _data(rng, b=b)
        want = _ref_kaml(y, logits, mask, [1.0, 0.5, 1.0, 1.0], 0.7)
        assert float(fn(_packed(y, mask), logits)) == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("make", [
    lambda: MaskedBCE(from_logits=False, epsilon=1e-5, name="m"),
    lambda: RLURanking([1.0, 0.5], name="r"), lambda: RLURanking(0.3),
    lambda: KamlLoss(0.4, [2.0, 1.0], "submitted", reduction="sum_over_batch_size")],
    ids=["masked_bce", "rlu_list", "rlu_scalar", "kaml"])
def test_config_round_trip_and_registration(make):
    loss = make()
    config = loss.get_config()
    assert type(loss).from_config(config).get_config() == config
    restored = tf.keras.losses.deserialize(tf.keras.losses.serialize(loss))
    assert type(restored) is type(loss) and restored.get_config() == config
    assert tf.keras.utils.get_registered_name(type(loss)) == f"funnelrank>{type(loss).__name__}"


@pytest.mark.parametrize("make, message", [
    (lambda: KamlLoss(gamma=1.5), r"`gamma` must be a number in \[0, 1\], received: gamma=1.5"),
    (lambda: KamlLoss(gamma=True), r"received: gamma=True"),
    (lambda: KamlLoss(gamma="0.5"), r"received: gamma='0.5'"),
    (lambda: KamlLoss(gamma=float("nan")), r"received: gamma=nan"),
    (lambda: KamlLoss(ranking_positives="all"),
     r"`ranking_positives` must be one of \['masked', 'submitted'\], received: "
     r"ranking_positives='all'"),
    (lambda: RLURanking(beta=-1.0), r"`beta` must be a finite number >= 0 or a non-empty list "
                                    r"of them \(one per task\), received: beta=-1.0"),
    (lambda: RLURanking(beta=[]), r"received: beta=\[\]"),
    (lambda: KamlLoss(beta=[1.0, float("inf")]), r"received: beta=\[1.0, inf\]"),
    (lambda: MaskedBCE(from_logits="yes"), r"`from_logits` must be true or false"),
    (lambda: MaskedBCE(epsilon=0.5), r"`epsilon` must be a number in \(0, 0.5\), received: "
                                     r"epsilon=0.5"),
    (lambda: MaskedBCE(reduction="sum"), r"`reduction` must be one of \['auto', "
                                         r"'sum_over_batch_size'\] for the batch-level loss "
                                         r"MaskedBCE .* received: reduction='sum'")])
def test_invalid_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("call, message", [
    (lambda: RLURanking([1.0, 1.0, 1.0])(np.zeros((2, 2)), np.zeros((2, 2))),
     r"`beta` must have one value per task \(2\), received: beta=\[1.0, 1.0, 1.0\]"),
    (lambda: KamlLoss()(np.zeros((2, 3)), np.zeros((2, 2))),
     r"KamlLoss expects y_true \[B, 2N\] = labels \| mask with N = 2 .* "
     r"received: y_true.shape=\(2, 3\)"),
    (lambda: MaskedBCE()(np.zeros((2, 2)), np.zeros(2)), r"y_pred.shape=\(2,\)"),
    (lambda: RLURanking()(np.zeros((2, 1)), np.zeros((2, 2))), r"y_true.shape=\(2, 1\)"),
    (lambda: MaskedBCE()(np.zeros((2, 2)), np.zeros((2, 1)), sample_weight=np.ones(2)),
     r"MaskedBCE is a batch-level loss and takes no sample_weight")])
def test_invalid_inputs_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
