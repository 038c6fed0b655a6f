"""KAML losses: masked BCE (eq. 12), RLU pairwise ranking loss (eq. 11) and their mix (eq. 13).

Paper: "KAML: incomplete and skewed multi-label learning for conversion rate prediction"
(/work/shared/papers/kaml_incomplete_skewed_multilabel.md, section 3.4-3.5); DESIGN.md "Losses".

Shapes: ``labels``, ``logits``/``probs`` and ``mask`` are ``[B, N]`` (N conversion actions,
static), ``beta`` is ``[N]``. Labels are binary {0, 1}; ``mask`` is the ADM mask (1 = the
sample's label for that action is trusted). float64 inputs compute in float64, everything else
in float32.

Complexity: ``masked_bce`` is O(B N). ``rlu_ranking`` gathers, per task, the positives and the
non-positives and materialises only their pairs: O(|pos_k| (B - |pos_k|)) <= B^2 / 4 elements
per task (tasks are processed one after the other, so that is also the peak), typically far less
as conversions are rare. Dynamic gathered shapes: fine in ``tf.function``/``MirroredStrategy``,
not under ``jit_compile=True``.
"""
from __future__ import annotations

import tensorflow as tf

from schemas.checks import check_unit_number
from trainer.losses._tensors import compute_dtype

EPSILON = 1e-7


def _prepare(labels, values, mask=None):
    values = tf.convert_to_tensor(values)
    dtype = compute_dtype(values)
    values = tf.cast(values, dtype)
    labels = tf.cast(tf.convert_to_tensor(labels, dtype_hint=dtype), dtype)
    if values.shape.rank != 2:
        raise ValueError(f"expected [B, N] inputs, received: shape={values.shape}")
    if mask is None:
        return labels, values
    return labels, values, tf.cast(tf.convert_to_tensor(mask, dtype_hint=dtype), dtype)


def _per_task_masked_mean(per_sample: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """sum_j (1/|Mask_j|) sum_i Mask_ij x_ij; a task with no valid sample adds 0."""
    total = tf.reduce_sum(mask * per_sample, axis=0)
    count = tf.reduce_sum(mask, axis=0)
    return tf.reduce_sum(tf.math.divide_no_nan(total, count))


def masked_bce(labels, probs, mask, epsilon: float = EPSILON) -> tf.Tensor:
    """Masked BCE averaged per task over its valid samples, summed over tasks (KAML eq. 12).

    ``L = -sum_j 1/|sum_i Mask_ij| sum_i Mask_ij [y_ij log p_ij + (1 - y_ij) log(1 - p_ij)]``.

    Args:
      labels: ``[B, N]`` binary labels.
      probs: ``[B, N]`` predicted probabilities, clipped to ``[epsilon, 1 - epsilon]``.
      mask: ``[B, N]`` ADM mask in {0, 1} (float weights also work).
      epsilon: Clipping constant for the logs.

    Returns:
      Scalar loss; a task with no valid sample in the batch contributes 0 (and no gradient).
    """
    labels, probs, mask = _prepare(labels, probs, mask)
    probs = tf.clip_by_value(probs, epsilon, 1.0 - epsilon)
    nll = -(labels * tf.math.log(probs) + (1.0 - labels) * tf.math.log(1.0 - probs))
    return _per_task_masked_mean(nll, mask)


def masked_bce_with_logits(labels, logits, mask) -> tf.Tensor:
    """:func:`masked_bce` of ``sigmoid(logits)`` (eq. 12) computed from logits: no clipping, so
    saturated logits keep their exact loss and gradient."""
    labels, logits, mask = _prepare(labels, logits, mask)
    nll = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    return _per_task_masked_mean(nll, mask)


def rlu_ranking(labels, logits, beta) -> tf.Tensor:
    """RLU pairwise logistic ranking loss (KAML eq. 11).

    ``L = 1/B sum_k beta_k sum_{i, j: y_k^i > y_k^j} softplus(-(s_k^i - s_k^j))``, where
    ``softplus(-x) = -log sigmoid(x)``. Pass unlabeled samples with label 0 (``labels * mask``):
    they are then only ever the lower side of a pair, as in the paper's Type C samples.

    Args:
      labels: ``[B, N]`` binary labels (unlabeled = 0).
      logits: ``[B, N]`` logits ``s``.
      beta: ``[N]`` per-task weights (list, array or tensor).

    Returns:
      Scalar loss, normalised by the batch size |D| = B. Tasks without a positive or without a
      non-positive add 0.
    """
    labels, logits = _prepare(labels, logits)
    num_tasks = logits.shape[-1]
    if num_tasks is None:
        raise ValueError(f"rlu_ranking needs a static number of tasks, received: "
                         f"logits.shape={logits.shape}")
    beta = tf.cast(tf.convert_to_tensor(beta, dtype_hint=logits.dtype), logits.dtype)
    if beta.shape.rank != 1 or beta.shape[0] not in (None, num_tasks):
        raise ValueError(f"`beta` must have shape [{num_tasks}], received: beta.shape={beta.shape}")
    total = tf.zeros([], logits.dtype)
    for k in range(num_tasks):
        positive = labels[:, k] > 0.5
        s_pos = tf.boolean_mask(logits[:, k], positive)
        s_neg = tf.boolean_mask(logits[:, k], tf.logical_not(positive))
        pair_loss = tf.nn.softplus(-(s_pos[:, tf.newaxis] - s_neg[tf.newaxis, :]))
        total += beta[k] * tf.reduce_sum(pair_loss)
    batch = tf.cast(tf.shape(logits)[0], logits.dtype)
    return total / tf.maximum(batch, 1.0)


def kaml_loss(labels, logits, mask, beta, gamma: float) -> tf.Tensor:
    """KAML total loss ``gamma * L_BCE + (1 - gamma) * L_Ranking`` (eq. 13).

    ``L_BCE`` is eq. 12 on ``sigmoid(logits)`` (computed from logits, see
    :func:`masked_bce_with_logits`); ``L_Ranking`` is eq. 11 on ``labels * mask``, so unlabeled
    (masked-out) samples count as 0.

    Args:
      labels: ``[B, N]`` binary labels.
      logits: ``[B, N]`` logits.
      mask: ``[B, N]`` ADM mask.
      beta: ``[N]`` ranking weights per task.
      gamma: Balance in [0, 1].

    Returns:
      Scalar loss.
    """
    gamma = check_unit_number("gamma", gamma)
    labels, logits, mask = _prepare(labels, logits, mask)
    return (gamma * masked_bce_with_logits(labels, logits, mask)
            + (1.0 - gamma) * rlu_ranking(labels * mask, logits, beta))
