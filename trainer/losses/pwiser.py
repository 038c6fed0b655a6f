"""PWiseR: pairwise ranking loss between converted and non-converted impressions.

Paper: Durmus et al., "Pairwise ranking loss for multi-task learning in recommender systems"
(/work/shared/papers/pwiser_pairwise_ranking_loss.md), eq. (1) and (2); DESIGN.md "Losses".

Groups (labels are read as ``x > 0.5``):
  * P: conversion == 1 (the reliable positives, scenario 3 of Table 1);
  * A: click == 1 and conversion == 0 (clicked, not converted; ``ctNocvr`` in eq. 2);
  * B: click == 0 and conversion == 0 (not clicked; ``zeros`` in eq. 2).

P, A and B partition the batch, so eq. (2)'s ``i != j`` / ``k != j`` holds by construction. An
inconsistent row (conversion without click, absent from Ali-CCP) counts as P only.

Loss, with the paper's normalisation by the size of the *negative* group (eq. 2):

    L = 1/|A| sum_{i in A, j in P} g(s_i, s_j, m1) + 1/|B| sum_{k in B, j in P} g(s_k, s_j, m2)

``margin_mode="standard"`` (default, DESIGN.md): ``g = [s_j < s_i + m] (s_i - s_j + m)^2``, i.e.
the continuous squared hinge ``relu(s_i - s_j + m)^2``.
``margin_mode="paper_literal"``: the gate printed in eq. (2),
``g = [s_j < s_i - m] (s_i - s_j + m)^2`` (discontinuous: the penalty jumps from 0 to (2m)^2
at the gate).

An empty P, A or B makes its part 0 (value and gradient), never NaN. The paper composes
``BCE + lambda * PWiseR`` (eq. 1, lambda = 0.1); that composition is left to the objective.

Complexity: positives and the two negative groups are gathered (``tf.boolean_mask``), so only
real pairs are materialised: time and memory O(|P| (|A| + |B|)) <= B^2 / 4 elements (a few
temporaries of that size for forward + backward), typically far less because conversions are
rare. B = 8192 costs at most ~16.8M pair elements per temporary. The gathered shapes are dynamic:
fine in ``tf.function`` and ``MirroredStrategy`` (tested with 2 CPU replicas), but not under
``jit_compile=True``. :class:`PWiseR` computes it on the global batch (every replica's rows),
so each replica pays for the global batch's pairs.

:func:`pwiser` is the equation on the rows it is given; :class:`PWiseR` is the Keras loss (and
what the ``pwiser`` loss recipe uses).
"""
from __future__ import annotations

import tensorflow as tf

from schemas.checks import check_choice, check_nonneg_number
from trainer.layers.common import register
from trainer.losses._tensors import as_binary, compute_dtype
from trainer.losses.global_batch import BatchLevelLoss

MARGIN_MODES = ("standard", "paper_literal")


def _group_term(neg_scores: tf.Tensor, pos_scores: tf.Tensor, margin: float,
                literal: bool) -> tf.Tensor:
    """``1/|N| sum_{i in N, j in P} g(s_i, s_j, m)`` for one negative group N (eq. 2).

    0 (value and gradient) when N or P is empty."""
    margin = tf.constant(margin, neg_scores.dtype)
    s_i = neg_scores[tf.newaxis, :]   # [1, |N|]
    s_j = pos_scores[:, tf.newaxis]   # [|P|, 1]
    diff = s_i - s_j + margin         # [|P|, |N|]
    if literal:
        gate = tf.cast(s_j < s_i - margin, diff.dtype)
        penalty = gate * tf.square(diff)
    else:
        penalty = tf.square(tf.nn.relu(diff))  # == [s_j < s_i + m] (s_i - s_j + m)^2
    count = tf.cast(tf.size(neg_scores), diff.dtype)
    return tf.reduce_sum(penalty) / tf.maximum(count, 1.0)


def pwiser(click, conversion, scores, m1: float = 0.3, m2: float = 0.3,
           margin_mode: str = "standard") -> tf.Tensor:
    """PWiseR loss of the rows given (eq. 2 of the PWiseR paper), the core of :class:`PWiseR`.

    Args:
      click: ``[B]`` (or ``[B, 1]``) click labels in {0, 1}, any numeric or bool dtype.
      conversion: ``[B]`` conversion labels in {0, 1}, any numeric or bool dtype.
      scores: ``[B]`` or ``[B, 1]`` predicted probabilities of the chosen head (pCTR by default,
        or pCTCVR). float64 is computed in float64, every other dtype in float32.
      m1: Margin between converted samples and clicked-not-converted samples (>= 0).
      m2: Margin between converted samples and non-clicked samples (>= 0).
      margin_mode: ``"standard"`` (continuous ``relu(s_i - s_j + m)^2``) or ``"paper_literal"``
        (the printed gate ``[s_j < s_i - m]``); see the module docstring.

    Returns:
      Scalar loss tensor (dtype float32, or float64 for float64 scores). Batch-level: it is not
      a mean of per-sample terms, so it cannot take per-sample weights.

    Raises:
      ValueError: On an invalid ``m1``, ``m2`` or ``margin_mode``.
    """
    m1 = check_nonneg_number("m1", m1)
    m2 = check_nonneg_number("m2", m2)
    literal = check_choice("margin_mode", margin_mode, MARGIN_MODES) == "paper_literal"
    with tf.name_scope("pwiser"):
        scores = tf.convert_to_tensor(scores)
        scores = tf.reshape(tf.cast(scores, compute_dtype(scores)), [-1])
        click = as_binary(click)
        converted = as_binary(conversion)
        not_converted = tf.logical_not(converted)
        pos = tf.boolean_mask(scores, converted)                                     # P
        clicked_only = tf.boolean_mask(scores, tf.logical_and(click, not_converted))  # A
        no_click = tf.boolean_mask(scores, tf.logical_and(tf.logical_not(click),
                                                          not_converted))             # B
        return (_group_term(clicked_only, pos, m1, literal)
                + _group_term(no_click, pos, m2, literal))


@register
class PWiseR(BatchLevelLoss):
    """PWiseR as a Keras loss (PWiseR paper, eq. 2), over the global batch.

    This is a *batch-level* loss: pairs are formed inside the batch and the result is a scalar,
    so ``sample_weight`` is refused. Under a distribution strategy the rows of every replica are
    gathered first (:class:`trainer.losses.global_batch.BatchLevelLoss`): each positive is
    ranked against the negatives of the whole global batch, and 1 and N replicas give the same
    loss and update for the same global batch (``model.fit`` divides a compiled loss by the
    replica count, as the loss recipes' train step does). Compose the paper's total (eq. 1)
    outside: ``BCE + lambda * PWiseR`` (e.g. ``compile(loss=..., loss_weights=...)``).

    Call with ``y_true`` ``[B, 2]`` = (click, conversion) and ``y_pred`` ``[B]`` or ``[B, 1]``
    probabilities of the chosen head: pCTR (default in the paper), or pCTCVR, from an ESMM
    product head or a direct CTCVR tower alike.

    Args:
      m1: Margin against clicked-not-converted samples (>= 0).
      m2: Margin against non-clicked samples (>= 0).
      margin_mode: ``"standard"`` or ``"paper_literal"`` (see :func:`pwiser`).
      reduction: ``"auto"`` or ``"sum_over_batch_size"`` (no effect on the value).
      name: Loss name.
    """

    def __init__(self, m1: float = 0.3, m2: float = 0.3, margin_mode: str = "standard",
                 reduction=tf.keras.losses.Reduction.AUTO, name: str = "pwiser"):
        super().__init__(reduction=reduction, name=name)
        self.m1 = check_nonneg_number("m1", m1)
        self.m2 = check_nonneg_number("m2", m2)
        self.margin_mode = check_choice("margin_mode", margin_mode, MARGIN_MODES)

    def call(self, y_true, y_pred):
        y_true = tf.convert_to_tensor(y_true)
        if y_true.shape.rank is not None and (y_true.shape.rank != 2 or
                                              y_true.shape[-1] not in (None, 2)):
            raise ValueError("PWiseR expects y_true of shape [B, 2] = (click, conversion), "
                             f"received: y_true.shape={y_true.shape}")
        return pwiser(y_true[:, 0], y_true[:, 1], y_pred, m1=self.m1, m2=self.m2,
                      margin_mode=self.margin_mode)

    def get_config(self):
        config = super().get_config()
        config.update({"m1": self.m1, "m2": self.m2, "margin_mode": self.margin_mode})
        return config
