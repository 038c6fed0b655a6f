"""Inter-task InfoNCE with a per-row (adaptive) temperature (AdaFTR eq. 6 and 13).

Paper: "AdaFTR: adaptive fine-grained task relatedness for joint CTR-CVR estimation"
(/work/shared/papers/adaftr_adaptive_task_relatedness.md, section 2.3); DESIGN.md "Losses".
"""
from __future__ import annotations

import tensorflow as tf

from trainer.losses._tensors import compute_dtype


def adaptive_info_nce(anchor, positive, tau, stop_tau_gradient: bool = True) -> tf.Tensor:
    """InfoNCE with in-batch negatives and a temperature per anchor row (AdaFTR eq. 13).

    ``L = -1/B sum_r log softmax_{r'}(anchor_r . positive_{r'} / tau_r)[r]``: the positive of
    anchor ``h_r^ctr`` is ``h_r^cvr`` and its negatives are the other rows' ``h_{r'}^cvr``
    (eq. 6 with ``tau -> tau_r``). The paper sums over rows; this is the batch mean, so it does
    not scale with the batch size. Computed with ``log_softmax`` (stable for tau down to 0.05
    and large dot products).

    Args:
      anchor: ``[B, d]`` anchor representations (``h^ctr``, the first task tower layer).
      positive: ``[B, d]`` representations of the other task (``h^cvr``), row-aligned.
      tau: ``[B]`` (or ``[B, 1]``, or a scalar for the fixed/learnable-tau ablations) positive
        temperatures, e.g. ``tau_r = (tauU - tauL)(1 - y_rel_hat_r) + tauL`` (eq. 12).
      stop_tau_gradient: If True (default, Algorithm 1 as read in DESIGN.md) tau enters through
        ``tf.stop_gradient`` so the relatedness net learns from L_rel only. Set False for the
        single learnable-tau ablation, where tau is trained by this loss.

    Returns:
      Scalar loss (float64 for float64 inputs, else float32).
    """
    with tf.name_scope("adaptive_info_nce"):
        anchor = tf.convert_to_tensor(anchor)
        dtype = compute_dtype(anchor)
        anchor = tf.cast(anchor, dtype)
        positive = tf.cast(tf.convert_to_tensor(positive), dtype)
        tau = tf.cast(tf.convert_to_tensor(tau, dtype_hint=dtype), dtype)
        if stop_tau_gradient:
            tau = tf.stop_gradient(tau)
        if tau.shape.rank == 0:
            tau = tf.fill(tf.shape(anchor)[:1], tau)
        tau = tf.reshape(tau, [-1, 1])
        logits = tf.matmul(anchor, positive, transpose_b=True) / tau  # [B, B], row r / tau_r
        log_prob = tf.nn.log_softmax(logits, axis=-1)
        return -tf.reduce_mean(tf.linalg.diag_part(log_prob))


def single_negative_contrast(anchor, positive, shift: int = 1) -> tf.Tensor:
    """AdaFTR eq. 7 (``L_scl``, "w/o negative" in Table 5), made numerically safe.

    Eq. 7 as printed, ``-log(a_r . p_r - a_r . p_r')``, is undefined whenever the positive
    score does not exceed the negative one. Following the BPR loss the paper cites for it,
    this computes ``-log sigmoid(a_r . p_r - a_r . p_r') = softplus(a_r . p_r' - a_r . p_r)``,
    finite everywhere, with ONE negative per row: ``r' = (r + shift) mod B`` (the batch is
    shuffled, so this is a random other row without drawing random numbers). Batch mean.

    Args:
      anchor: ``[B, d]`` anchor representations (``h^ctr``).
      positive: ``[B, d]`` the other task's representations (``h^cvr``), row-aligned.
      shift: Offset of the negative row; with ``B == 1`` the negative is the row itself.

    Returns:
      Scalar loss (float64 for float64 inputs, else float32).
    """
    with tf.name_scope("single_negative_contrast"):
        anchor = tf.convert_to_tensor(anchor)
        dtype = compute_dtype(anchor)
        anchor = tf.cast(anchor, dtype)
        positive = tf.cast(tf.convert_to_tensor(positive), dtype)
        negative = tf.roll(positive, shift=-shift, axis=0)  # row r holds positive[r + shift]
        pos_score = tf.reduce_sum(anchor * positive, axis=-1)
        neg_score = tf.reduce_sum(anchor * negative, axis=-1)
        return tf.reduce_mean(tf.nn.softplus(neg_score - pos_score))


def representation_mse(a, b) -> tf.Tensor:
    """AdaFTR eq. 5 with ``l = MSE`` (``L_reg``, "w/o contrastive" in Table 5).

    ``mean_r mean_k (a_rk - b_rk)^2`` over a ``[B, d]`` pair of task representations.
    """
    with tf.name_scope("representation_mse"):
        a = tf.convert_to_tensor(a)
        dtype = compute_dtype(a)
        return tf.reduce_mean(tf.square(tf.cast(a, dtype) - tf.cast(b, dtype)))
