"""Inter-task contrastive losses of AdaFTR: adaptive-temperature InfoNCE (eq. 6 and 13) and the
two alignment losses of its Table 5 ablation (eq. 5 with MSE, eq. 7 made safe).

Paper: Lin et al., "Modeling Adaptive Fine-grained Task Relatedness for Joint CTR-CVR
Estimation", KDD'23 (/work/shared/papers/adaftr_adaptive_task_relatedness.md, Sec. 2.2-2.3);
DESIGN.md "Losses".

:class:`AdaptiveInfoNCE` is a Keras loss returning one term per anchor row; its in-batch
negatives are the rows of the GLOBAL batch (every replica's, :mod:`trainer.losses.global_batch`),
so the loss does not change meaning with the number of replicas. The two ablation losses are
plain batch means with one negative (or none) per row; they stay per replica. Every mean here is
0 (value and gradient) on a replica that gets no rows.
"""
from __future__ import annotations

from typing import Mapping, Optional

import tensorflow as tf

from schemas.checks import check_bool, check_positive_number
from trainer.layers.common import register
from trainer.losses._tensors import compute_dtype, safe_mean
from trainer.losses.global_batch import gather_rows


def info_nce_rows(anchor, positive, tau, stop_tau_gradient: bool = True) -> tf.Tensor:
    """Per-anchor-row InfoNCE term with a temperature per row (AdaFTR eq. 13), the core of
    :class:`AdaptiveInfoNCE`.

    ``l_r = -log softmax_{r'}(anchor_r . positive_{r'} / tau_r)[r]``: the positive of anchor
    ``h_r^ctr`` is ``h_r^cvr``, its negatives are the other rows' ``h_{r'}^cvr`` of the global
    batch (gathered from every replica under a distribution strategy).

    Computed as ``logsumexp_{r'}(a~_r . positive_{r'}) - a~_r . positive_r`` with
    ``a~_r = anchor_r / tau_r``: dividing the ``[b, d]`` anchors instead of the ``[b, B]``
    logits, taking the positive's logit as a row-wise dot product and never materialising the
    ``[b, B]`` log-probabilities (nor the gradient of a gather from them) leaves the three
    ``b x B x d`` matmuls and one exp as the ``O(b B)`` work (AdaFTR's extra time per MMoE step
    at b = B = 1,024 on two CPU cores: 4.0-4.3 ms, was 5.6-7.0 ms; docs/benchmarks.md). The
    logsumexp is :func:`logsumexp_rows`, whose gradient is one pass over the forward's exp.

    Args:
      anchor: ``[b, d]`` anchor representations of this replica (``h^ctr``).
      positive: ``[b, d]`` the other task's representations (``h^cvr``), row-aligned.
      tau: ``[b]``, ``[b, 1]`` or a scalar: positive temperatures.
      stop_tau_gradient: Feed tau through ``tf.stop_gradient`` (Algorithm 1).

    Returns:
      ``[b]`` terms (float64 for float64 anchors, else float32).
    """
    anchor = tf.convert_to_tensor(anchor)
    dtype = compute_dtype(anchor)
    anchor = tf.cast(anchor, dtype)
    positive = tf.cast(tf.convert_to_tensor(positive), dtype)
    tau = tf.cast(tf.convert_to_tensor(tau, dtype_hint=dtype), dtype)
    if stop_tau_gradient:
        tau = tf.stop_gradient(tau)
    if tau.shape.rank != 0:
        tau = tf.reshape(tau, [-1, 1])
    scaled = anchor / tau                                               # [b, d], row r / tau_r
    every_positive, = gather_rows(positive)                             # [B, d], global
    logits = tf.matmul(scaled, every_positive, transpose_b=True)        # [b, B]
    own = tf.reduce_sum(scaled * positive, axis=-1)                     # logit of r's positive
    return logsumexp_rows(logits) - own


@tf.custom_gradient
def logsumexp_rows(logits):
    """``log sum_j exp(logits[r, j])`` of each row of a ``[b, B]`` matrix, stable (the row
    maximum is subtracted), with a gradient that costs one pass over ``[b, B]``.

    Same value and gradient as ``tf.reduce_logsumexp(logits, axis=-1)`` (the gradient is the
    row softmax times the upstream gradient); autodiff of that op broadcasts the upstream
    gradient to ``[b, B]`` and multiplies it by the exp in two passes. Here the gradient reuses
    the forward's ``exp(logits - max)`` and scales it by ``upstream / sum`` per row, a
    ``[b]``-sized factor. AdaFTR's InfoNCE at b = B = 1,024, d = 64, forward and backward:
    4.93 -> 4.64 ms on one thread, of which the matmuls are 3.33 (``benchmarks/info_nce.py``,
    docs/benchmarks.md, issue 18). Differentiable again (second-order gradients, MAML's outer
    step) through the ops of its gradient.

    Args:
      logits: ``[b, B]`` finite values.

    Returns:
      ``[b]``.
    """
    top = tf.stop_gradient(tf.reduce_max(logits, axis=-1, keepdims=True))
    scaled = tf.exp(logits - top)                                     # [b, B]
    total = tf.reduce_sum(scaled, axis=-1, keepdims=True)             # [b, 1]

    def grad(upstream):
        return scaled * (tf.expand_dims(upstream, -1) / total)

    return tf.squeeze(tf.math.log(total) + top, axis=-1), grad


@register
class AdaptiveInfoNCE(tf.keras.losses.Loss):
    """Inter-task InfoNCE with in-batch negatives and a per-row temperature (AdaFTR eq. 13).

    ``L_cl = -sum_{r in R} log [exp(h_r^ctr . h_r^cvr / tau_r)
    / sum_{r' in B} exp(h_r^ctr . h_{r'}^cvr / tau_r)]`` (eq. 13; with one ``temperature`` for
    every row it is eq. 6). ``tau_r`` comes from AdaFTR's relatedness net,
    ``tau_r = (tauU - tauL)(1 - y_rel_hat_r) + tauL`` (eq. 12, ``RelatednessNet.temperature``).

    ``call`` returns the term of each anchor row, so the reduction is Keras': ``"sum"`` is the
    paper's sum over rows (eq. 6/13 as printed, which grows with the batch, i.e. ``beta``
    scaled by the batch size), ``"auto"`` / ``"sum_over_batch_size"`` the batch mean (the
    default, which keeps ``beta`` independent of the batch size). The negatives of every row
    are the rows of the global batch: under a distribution strategy the ``h^cvr`` of every
    replica are gathered, so 1 and N replicas give the same loss for the same global batch.
    A replica without rows adds 0.

    Inputs: ``y_true`` is ignored (contrastive, no labels; under ``model.fit`` pass zeros for
    it, Keras skips a loss whose target is None). ``y_pred`` is either

    * a packed tensor ``[B, 2d + 1]`` = ``h^ctr`` | ``h^cvr`` | ``tau`` (``[B, 2d]`` without the
      tau column when ``temperature`` is set), what a model output gives ``model.compile``;
    * or a dict ``{"anchor": [B, d], "positive": [B, d], "tau": [B]}`` (no ``"tau"`` when
      ``temperature`` is set), for custom training steps and loss recipes.

    Why a loss with a packed ``y_pred`` and not a layer calling ``add_loss``: ``compile`` takes
    one tensor per output and would split a dict output into separate outputs, so the three
    inputs travel as one tensor; and as a loss, the term gets compile's ``loss_weights`` (beta),
    its loss metric and its reduction (mean or eq. 6's sum), while the network itself stays
    free of training-only graph: an ``add_loss`` layer sits inside the model's forward pass and
    pulls the relatedness net into every exported inference graph.

    Args:
      temperature: A fixed temperature (> 0) for every row (eq. 6; AdaFTR's "w/o learnable
        tau" ablation uses 0.05); ``None`` (default) reads ``tau`` per row from ``y_pred``.
      stop_tau_gradient: Feed tau through ``tf.stop_gradient`` (default, Algorithm 1 as read
        in DESIGN.md: the relatedness net learns from L_rel only). False for a temperature
        that this loss itself trains (the single learnable-tau ablation).
      reduction: Keras reduction of the per-row terms (see above).
      name: Loss name.
    """

    def __init__(self, temperature: Optional[float] = None, stop_tau_gradient: bool = True,
                 reduction=tf.keras.losses.Reduction.AUTO, name: str = "adaptive_info_nce"):
        super().__init__(reduction=reduction, name=name)
        self.temperature = (None if temperature is None
                            else check_positive_number("temperature", temperature))
        self.stop_tau_gradient = check_bool("stop_tau_gradient", stop_tau_gradient)

    def unpack(self, y_pred):
        """``(anchor, positive, tau)`` from a packed tensor or a dict (see the class doc)."""
        if isinstance(y_pred, Mapping):
            unknown = sorted(set(y_pred) - {"anchor", "positive", "tau"})
            if unknown or "anchor" not in y_pred or "positive" not in y_pred:
                raise ValueError("AdaptiveInfoNCE expects y_pred with keys 'anchor', "
                                 "'positive' (and 'tau' unless `temperature` is set), "
                                 f"received: keys={sorted(y_pred)}")
            tau = y_pred.get("tau")
            if (tau is None) == (self.temperature is None):
                raise ValueError("AdaptiveInfoNCE takes the temperature either from y_pred['tau'] "
                                 "or from `temperature`, exactly one of them, received: "
                                 f"temperature={self.temperature!r}, "
                                 f"tau {'given' if tau is not None else 'missing'}")
            return y_pred["anchor"], y_pred["positive"], (
                self.temperature if tau is None else tau)
        y_pred = tf.convert_to_tensor(y_pred)
        width = y_pred.shape[-1] if y_pred.shape.rank == 2 else None
        extra = 0 if self.temperature is not None else 1
        if width is None or width < 2 + extra or (width - extra) % 2:
            layout = "h^ctr | h^cvr" + ("" if extra == 0 else " | tau")
            raise ValueError(f"AdaptiveInfoNCE expects a packed y_pred [B, 2d{' + 1' * extra}] "
                             f"= {layout}, received: y_pred.shape={y_pred.shape}")
        d = (width - extra) // 2
        tau = self.temperature if extra == 0 else y_pred[:, 2 * d]
        return y_pred[:, :d], y_pred[:, d:2 * d], tau

    def call(self, y_true, y_pred):
        anchor, positive, tau = self.unpack(y_pred)
        return info_nce_rows(anchor, positive, tau, stop_tau_gradient=self.stop_tau_gradient)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature,
                       "stop_tau_gradient": self.stop_tau_gradient})
        return config


def single_negative_contrast(anchor, positive, shift: int = 1) -> tf.Tensor:
    """AdaFTR eq. 7 (``L_scl``, "w/o negative" in Table 5), made numerically safe.

    Eq. 7 as printed, ``-log(a_r . p_r - a_r . p_r')``, is undefined whenever the positive
    score does not exceed the negative one. Following the BPR loss the paper cites for it,
    this computes ``-log sigmoid(a_r . p_r - a_r . p_r') = softplus(a_r . p_r' - a_r . p_r)``,
    finite everywhere, with ONE negative per row: ``r' = (r + shift) mod b`` within the
    replica's rows (the batch is shuffled, so this is a random other row without drawing random
    numbers). Batch mean; 0 on a replica without rows.

    Args:
      anchor: ``[b, d]`` anchor representations (``h^ctr``).
      positive: ``[b, d]`` the other task's representations (``h^cvr``), row-aligned.
      shift: Offset of the negative row; with ``b == 1`` the negative is the row itself.

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
        return safe_mean(tf.nn.softplus(neg_score - pos_score))


def representation_mse(a, b) -> tf.Tensor:
    """AdaFTR eq. 5 with ``l = MSE`` (``L_reg``, "w/o contrastive" in Table 5).

    ``mean_r mean_k (a_rk - b_rk)^2`` over a ``[b, d]`` pair of task representations; 0 on a
    replica without rows.
    """
    with tf.name_scope("representation_mse"):
        a = tf.convert_to_tensor(a)
        dtype = compute_dtype(a)
        return safe_mean(tf.square(tf.cast(a, dtype) - tf.cast(b, dtype)))
