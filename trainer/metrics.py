"""Offline ranking metrics in NumPy: exact AUC (ties averaged), LogLoss and GAUC.

These are the numbers ``funnelrank train`` reports and the benchmarks compare; the streaming
Keras/TFMA AUCs (bucketed) are only progress indicators.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their mean rank."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    mean_rank = (starts + ends + 1) / 2.0  # mean of 1-based ranks start+1..end
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auc(labels, scores) -> float:
    """ROC AUC by the Mann-Whitney statistic; ties count 1/2. NaN if one class is absent."""
    labels = np.asarray(labels).reshape(-1) > 0.5
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"auc: labels and scores differ in length: {labels.shape} vs "
                         f"{scores.shape}")
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels, probs, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy; probabilities clipped to [eps, 1 - eps]."""
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    probs = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1), eps, 1 - eps)
    if labels.size == 0:
        return float("nan")
    return float(-np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs)))


def gauc(user_ids, labels, scores, weighted: bool = False) -> float:
    """Group AUC: mean of per-user AUCs over users having both classes.

    Args:
      user_ids: ``[N]`` user key of each sample.
      labels: ``[N]`` 0/1 labels.
      scores: ``[N]`` predicted scores.
      weighted: Weight each user's AUC by its number of samples (the variant of the DIN
        paper) instead of the plain mean (AdaFTR's GAUC).

    Returns:
      The GAUC, or NaN if no user has both a positive and a negative sample.
    """
    user_ids = np.asarray(user_ids).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not len(user_ids) == len(labels) == len(scores):
        raise ValueError(f"gauc: lengths differ: users {len(user_ids)}, labels {len(labels)}, "
                         f"scores {len(scores)}")
    order = np.argsort(user_ids, kind="mergesort")
    users_sorted = user_ids[order]
    cuts = np.flatnonzero(users_sorted[1:] != users_sorted[:-1]) + 1
    total, weight = 0.0, 0.0
    for idx in np.split(order, cuts):
        y = labels[idx]
        positives = int((y > 0.5).sum())
        if positives == 0 or positives == len(y):
            continue
        w = float(len(y)) if weighted else 1.0
        total += w * auc(y, scores[idx])
        weight += w
    return total / weight if weight else float("nan")


def masked(values: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
    """``values[mask > 0.5]`` (or ``values`` when mask is None)."""
    values = np.asarray(values).reshape(-1)
    return values if mask is None else values[np.asarray(mask).reshape(-1) > 0.5]


def rela_impr(auc_model: float, auc_baseline: float) -> float:
    """Relative AUC improvement over a baseline, KAML eq. 14 (after Yan et al., DCN):
    ``(AUC(model) - 0.5) / (AUC(baseline) - 0.5) - 1``; NaN when the baseline is at 0.5."""
    if auc_baseline == 0.5:
        return float("nan")
    return (auc_model - 0.5) / (auc_baseline - 0.5) - 1.0
