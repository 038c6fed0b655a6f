"""Inter-task InfoNCE with a per-row (adaptive) temperature (AdaFTR eq. 6 and 13).

Paper: "AdaFTR: adaptive fine-grained task relatedness for joint CTR-CVR estimation"
(/work/shared/papers/adaftr_adaptive_task_relatedness.md, section 2.3); DESIGN.md "Losses".
"""
from __future__ import annotations

import tensorflow as tf

from trainer.losses._checks import compute_dtype


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
