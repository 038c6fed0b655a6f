import numpy as np
import pytest

from trainer import metrics


def _auc_pairs(y, s):
    """O(n^2) reference: P(s_pos > s_neg) + 0.5 P(tie)."""
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pairwise_reference_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300), 1)  # heavy ties
    assert metrics.auc(y, s) == pytest.approx(_auc_pairs(y, s), abs=1e-12)


def test_auc_single_class_is_nan_and_length_mismatch_raises():
    assert np.isnan(metrics.auc([1, 1], [0.2, 0.3]))
    with pytest.raises(ValueError, match="differ in length"):
        metrics.auc([1, 0], [0.1])


def test_logloss_reference():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.2, 0.4, 0.0])
    eps = 1e-7
    pc = np.clip(p, eps, 1 - eps)
    expected = -np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))
    assert metrics.logloss(y, p) == pytest.approx(expected, rel=1e-12)


def test_gauc_skips_one_class_users_and_handles_ties():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 30, 2000)
    y = (rng.random(2000) < 0.3).astype(int)
    s = np.round(rng.random(2000), 2)
    y[users == 0] = 1  # one-class user: skipped
    y[users == 1] = 0
    expected, weights = [], []
    for u in np.unique(users):
        m = users == u
        if 0 < y[m].sum() < m.sum():
            expected.append(_auc_pairs(y[m], s[m]))
            weights.append(m.sum())
    assert metrics.gauc(users, y, s) == pytest.approx(np.mean(expected), abs=1e-12)
    assert metrics.gauc(users, y, s, weighted=True) == pytest.approx(
        np.average(expected, weights=weights), abs=1e-12)
    assert np.isnan(metrics.gauc([1, 1, 2], [1, 1, 0], [0.1, 0.2, 0.3]))


def test_rela_impr_is_kaml_eq_14():
    assert metrics.rela_impr(0.9133, 0.9116) == pytest.approx((0.4133 / 0.4116) - 1.0)
    assert metrics.rela_impr(0.6, 0.6) == 0.0
    assert np.isnan(metrics.rela_impr(0.7, 0.5))


def test_ctr_head_scores_conversions_with_or_without_a_ctcvr_head():
    """``auc_conversion`` (pCTR against converted impressions) for a funnel model and for a
    single-task ctr model on the same labels; none when the data has no conversion label."""
    from sklearn.metrics import roc_auc_score

    from schemas import tasks as tasks_lib
    from trainer.evaluation import score_heads

    rng = np.random.default_rng(0)
    click = (rng.random(400) < 0.3).astype(np.float64)
    conversion = click * (rng.random(400) < 0.4)
    p_ctr = np.clip(0.1 + 0.1 * click + 0.2 * conversion + 0.6 * rng.random(400), 0, 1)
    labels = {"ctr": click, "cvr": conversion}
    want = roc_auc_score(click * conversion, p_ctr)
    funnel = score_heads({"ctr": p_ctr, "cvr": np.full(400, 0.3), "ctcvr": p_ctr * 0.3},
                         labels, tasks_lib.heads(("ctr", "cvr"), True))
    single = score_heads({"ctr": p_ctr}, labels, tasks_lib.heads(("ctr",), True))
    assert funnel["ctr"]["auc_conversion"] == pytest.approx(want, abs=1e-12)
    assert single["ctr"]["auc_conversion"] == pytest.approx(want, abs=1e-12)
    assert want != pytest.approx(roc_auc_score(click, p_ctr), abs=1e-3)  # not the click AUC
    only_clicks = score_heads({"ctr": p_ctr}, {"ctr": click}, tasks_lib.heads(("ctr",), True))
    assert "auc_conversion" not in only_clicks["ctr"]
