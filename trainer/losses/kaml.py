"""KAML losses: masked BCE (eq. 12), RLU pairwise ranking (eq. 11) and their mix (eq. 13).

Paper: "KAML: incomplete and skewed multi-label learning for conversion rate prediction"
(/work/shared/papers/kaml_incomplete_skewed_multilabel.md, Sec. 3.4-3.5); DESIGN.md "Losses".

Three Keras losses, all batch-level (one scalar of the global batch, gathered over replicas by
:class:`trainer.losses.global_batch.BatchLevelLoss`, so they mean the same with 1 or N
replicas):

* :class:`MaskedBCE` (eq. 12): per action, BCE averaged over the action's trusted samples,
  summed over actions. ``y_true`` ``[B, 2N]`` = labels | mask, ``y_pred`` ``[B, N]``.
* :class:`RLURanking` (eq. 11): logistic pairwise loss for every in-batch pair with
  ``y_k^i > y_k^j``, weight ``beta_k``, divided by the batch size ``|D|``. ``y_true`` ``[B, N]``
  labels (unlabeled samples as 0), ``y_pred`` ``[B, N]`` logits.
* :class:`KamlLoss` (eq. 13): ``gamma * MaskedBCE + (1 - gamma) * RLURanking`` on one packed
  ``y_true`` ``[B, 2N]`` = labels | mask. ``ranking_positives`` says which samples are the upper
  side of the ranking pairs (the paper's Type A, Sec. 3.4): ``"masked"`` (default) ranks
  ``y * mask``, i.e. only positives inside the ADM mask; ``"submitted"`` ranks every submitted
  positive (``y = 1``, whatever the mask) above every other sample, as Sec. 3.4 defines Type A
  ("y = 1, confirmed labels uploaded by the advertisers"). Rows whose mask is all zero (e.g.
  non-clicked impressions when the mask is ``ADM mask * click``) are not samples of ``D``:
  they enter neither term.

Labels are binary {0, 1}; ``mask`` is the ADM mask (1 = the sample's label for that action is
trusted). float64 inputs compute in float64, everything else in float32.

Complexity: masked BCE is O(B N). The ranking term gathers, per task, the positives and the
non-positives and materialises only their pairs: O(|pos_k| (B - |pos_k|)) <= B^2 / 4 elements
per task (tasks are processed one after the other, so that is also the peak), typically far less
as conversions are rare; every replica computes it on the global batch. Dynamic gathered shapes:
fine in ``tf.function``/``MirroredStrategy``, not under ``jit_compile=True``.
"""
from __future__ import annotations

from typing import Dict, Sequence, Union

import tensorflow as tf

from schemas.checks import check_bool, check_choice, check_unit_number, is_number, short_repr
from trainer.layers.common import register
from trainer.losses._tensors import compute_dtype
from trainer.losses.global_batch import BatchLevelLoss, gather_rows

EPSILON = 1e-7
RANKING_POSITIVES = ("masked", "submitted")
Beta = Union[float, Sequence[float]]


def _check_beta(beta: Beta) -> Union[float, tuple]:
    values = list(beta) if isinstance(beta, (list, tuple)) else [beta]
    if not values or any(not is_number(b) or not b >= 0 or b == float("inf") for b in values):
        raise ValueError("`beta` must be a finite number >= 0 or a non-empty list of them (one "
                         f"per task), received: beta={short_repr(beta)}")
    return tuple(float(b) for b in values) if isinstance(beta, (list, tuple)) else float(beta)


def _cast(values, *others):
    values = tf.convert_to_tensor(values)
    dtype = compute_dtype(values)
    return (tf.cast(values, dtype),) + tuple(
        tf.cast(tf.convert_to_tensor(o, dtype_hint=dtype), dtype) for o in others)


def _num_tasks(y_pred: tf.Tensor, loss: str) -> int:
    if y_pred.shape.rank != 2 or y_pred.shape[-1] is None:
        raise ValueError(f"{loss} expects y_pred [B, N] with a static number of tasks N, "
                         f"received: y_pred.shape={y_pred.shape}")
    return y_pred.shape[-1]


def _split_packed(y_true: tf.Tensor, num_tasks: int, loss: str):
    """``(labels, mask)`` from ``y_true`` ``[B, 2N]`` = labels | mask."""
    if y_true.shape.rank != 2 or y_true.shape[-1] != 2 * num_tasks:
        raise ValueError(f"{loss} expects y_true [B, 2N] = labels | mask with N = {num_tasks} "
                         f"(the width of y_pred), received: y_true.shape={y_true.shape}")
    return y_true[:, :num_tasks], y_true[:, num_tasks:]


def masked_bce(labels, values, mask, from_logits: bool = True,
               epsilon: float = EPSILON) -> tf.Tensor:
    """KAML eq. 12 on the rows given (the core of :class:`MaskedBCE`).

    ``L = -sum_j 1/|sum_i Mask_ij| sum_i Mask_ij [y_ij log p_ij + (1 - y_ij) log(1 - p_ij)]``.
    From logits no clipping is needed (saturated logits keep their exact loss and gradient);
    probabilities are clipped to ``[epsilon, 1 - epsilon]``. A task with no valid sample adds 0
    (value and gradient).
    """
    values, labels, mask = _cast(values, labels, mask)
    if from_logits:
        nll = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=values)
    else:
        probs = tf.clip_by_value(values, epsilon, 1.0 - epsilon)
        nll = -(labels * tf.math.log(probs) + (1.0 - labels) * tf.math.log(1.0 - probs))
    total = tf.reduce_sum(mask * nll, axis=0)
    count = tf.reduce_sum(mask, axis=0)
    return tf.reduce_sum(tf.math.divide_no_nan(total, count))


def rlu_ranking(labels, logits, beta: Beta) -> tf.Tensor:
    """KAML eq. 11 on the rows given, ``D`` (the core of :class:`RLURanking`).

    ``L = 1/|D| sum_k beta_k sum_{i, j: y_k^i > y_k^j} softplus(-(s_k^i - s_k^j))``, where
    ``softplus(-x) = -log sigmoid(x)``. Tasks without a positive or without a non-positive add
    0; an empty ``D`` gives 0.

    Args:
      labels: ``[B, N]`` binary labels (unlabeled = 0).
      logits: ``[B, N]`` logits ``s``.
      beta: One weight for every task, or one per task.
    """
    logits, labels = _cast(logits, labels)
    num_tasks = _num_tasks(logits, "rlu_ranking")
    beta = _check_beta(beta)
    betas = beta if isinstance(beta, tuple) else (beta,) * num_tasks
    if len(betas) != num_tasks:
        raise ValueError(f"`beta` must have one value per task ({num_tasks}), received: "
                         f"beta={list(betas)}")
    total = tf.zeros([], logits.dtype)
    for k in range(num_tasks):  # tasks, not rows: N is small and static
        positive = labels[:, k] > 0.5
        s_pos = tf.boolean_mask(logits[:, k], positive)
        s_neg = tf.boolean_mask(logits[:, k], tf.logical_not(positive))
        pair_loss = tf.nn.softplus(-(s_pos[:, tf.newaxis] - s_neg[tf.newaxis, :]))
        total += betas[k] * tf.reduce_sum(pair_loss)
    rows = tf.cast(tf.shape(logits)[0], logits.dtype)
    return tf.math.divide_no_nan(total, rows)


@register
class MaskedBCE(BatchLevelLoss):
    """KAML's masked BCE, averaged per task over its valid samples (eq. 12).

    ``L = -sum_j 1/|sum_i Mask_ij| sum_i Mask_ij [y_ij log y_hat_ij + (1 - y_ij)
    log(1 - y_hat_ij)]`` over the global batch. Call with ``y_true`` ``[B, 2N]`` = labels | ADM
    mask and ``y_pred`` ``[B, N]`` logits (or probabilities with ``from_logits=False``).

    Args:
      from_logits: ``y_pred`` holds logits (default) rather than probabilities.
      epsilon: Clipping of probabilities (``from_logits=False`` only), in (0, 0.5).
      reduction: ``"auto"`` or ``"sum_over_batch_size"`` (batch-level loss).
      name: Loss name.
    """

    def __init__(self, from_logits: bool = True, epsilon: float = EPSILON,
                 reduction=tf.keras.losses.Reduction.AUTO, name: str = "masked_bce"):
        super().__init__(reduction=reduction, name=name)
        self.from_logits = check_bool("from_logits", from_logits)
        if not is_number(epsilon) or not 0.0 < epsilon < 0.5:
            raise ValueError(f"`epsilon` must be a number in (0, 0.5), received: "
                             f"epsilon={short_repr(epsilon)}")
        self.epsilon = float(epsilon)

    def call(self, y_true, y_pred):
        labels, mask = _split_packed(y_true, _num_tasks(y_pred, "MaskedBCE"), "MaskedBCE")
        return masked_bce(labels, y_pred, mask, self.from_logits, self.epsilon)

    def get_config(self):
        config = super().get_config()
        config.update({"from_logits": self.from_logits, "epsilon": self.epsilon})
        return config


@register
class RLURanking(BatchLevelLoss):
    """KAML's Ranking-based Label Utilization loss (eq. 11), over the global batch.

    ``L = -1/|D| sum_{i != j} sum_k beta_k 1(y_k^i > y_k^j) log sigmoid(s_k^i - s_k^j)``.
    Call with ``y_true`` ``[B, N]`` binary labels (pass unlabeled samples as 0: they are then
    only ever the lower side of a pair, the paper's Type C) and ``y_pred`` ``[B, N]`` logits.

    Args:
      beta: Weight of every task's ranking term (>= 0), or one per task.
      reduction: ``"auto"`` or ``"sum_over_batch_size"`` (batch-level loss).
      name: Loss name.
    """

    def __init__(self, beta: Beta = 1.0, reduction=tf.keras.losses.Reduction.AUTO,
                 name: str = "rlu_ranking"):
        super().__init__(reduction=reduction, name=name)
        self.beta = _check_beta(beta)

    def call(self, y_true, y_pred):
        num_tasks = _num_tasks(tf.convert_to_tensor(y_pred), "RLURanking")
        y_true = tf.convert_to_tensor(y_true)
        if y_true.shape.rank != 2 or y_true.shape[-1] != num_tasks:
            raise ValueError(f"RLURanking expects y_true [B, N] labels with N = {num_tasks}, "
                             f"received: y_true.shape={y_true.shape}")
        return rlu_ranking(y_true, y_pred, self.beta)

    def get_config(self):
        config = super().get_config()
        config["beta"] = list(self.beta) if isinstance(self.beta, tuple) else self.beta
        return config


@register
class KamlLoss(BatchLevelLoss):
    """KAML's total loss ``gamma * L_BCE + (1 - gamma) * L_Ranking`` (eq. 13).

    ``L_BCE`` is :class:`MaskedBCE` (eq. 12) and ``L_Ranking`` :class:`RLURanking` (eq. 11),
    both on the global batch. Call with ``y_true`` ``[B, 2N]`` = labels | ADM mask and
    ``y_pred`` ``[B, N]`` logits. The ranking pairs' upper side is chosen by
    ``ranking_positives`` (module docstring); ``D`` is the rows with a non-zero mask.
    :meth:`terms` gives the two weighted terms separately (their sum is the loss).

    Args:
      gamma: Balance in [0, 1]; 1 leaves the ranking term out.
      beta: Ranking weight of every task (>= 0), or one per task.
      ranking_positives: ``"masked"`` (``y * mask``) or ``"submitted"`` (every ``y = 1``,
        eq. 11's Type A as Sec. 3.4 defines it).
      reduction: ``"auto"`` or ``"sum_over_batch_size"`` (batch-level loss).
      name: Loss name.
    """

    def __init__(self, gamma: float = 0.9, beta: Beta = 1.0,
                 ranking_positives: str = "masked", reduction=tf.keras.losses.Reduction.AUTO,
                 name: str = "kaml_loss"):
        super().__init__(reduction=reduction, name=name)
        self.gamma = check_unit_number("gamma", gamma)
        self.beta = _check_beta(beta)
        self.ranking_positives = check_choice("ranking_positives", ranking_positives,
                                              RANKING_POSITIVES)

    def terms(self, y_true, y_pred) -> Dict[str, tf.Tensor]:
        """``{"bce": gamma * L_BCE, "ranking": (1 - gamma) * L_Ranking}`` of the global batch
        (no ``"ranking"`` when ``gamma == 1``)."""
        with tf.name_scope(self._name_scope):
            return self._terms(*gather_rows(y_true, y_pred))

    def _terms(self, y_true, y_pred) -> Dict[str, tf.Tensor]:
        y_pred = tf.convert_to_tensor(y_pred)
        labels, mask = _split_packed(tf.convert_to_tensor(y_true),
                                     _num_tasks(y_pred, "KamlLoss"), "KamlLoss")
        terms = {"bce": self.gamma * masked_bce(labels, y_pred, mask)}
        if self.gamma < 1.0:
            in_d = tf.reduce_any(tf.cast(mask, tf.float32) > 0, axis=1)  # rows of D
            ranked = labels * tf.cast(mask, labels.dtype) if \
                self.ranking_positives == "masked" else labels
            terms["ranking"] = (1.0 - self.gamma) * rlu_ranking(
                tf.boolean_mask(ranked, in_d), tf.boolean_mask(y_pred, in_d), self.beta)
        return terms

    def call(self, y_true, y_pred):
        return tf.add_n(list(self._terms(y_true, y_pred).values()))

    def get_config(self):
        config = super().get_config()
        config.update({"gamma": self.gamma, "ranking_positives": self.ranking_positives,
                       "beta": list(self.beta) if isinstance(self.beta, tuple) else self.beta})
        return config
