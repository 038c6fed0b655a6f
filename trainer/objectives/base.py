"""What every loss recipe shares: the interface, BCE on probabilities, head labels, arg checks.

A recipe turns the task labels (``{"ctr": click, "cvr": conversion}``, float32 ``[B]``) and the
outputs of the training network into named scalar loss terms. Terms are per-replica means (or
batch-level values of the global batch, see :mod:`trainer.losses.global_batch`); the
training step divides their sum by the number of replicas. A replica that gets no rows of a
final global batch smaller than the replica count reports 0 for every mean, with zero gradient
(that step's mean terms are then the average of the replicas' means, the 0 included, as with
Keras' compiled losses).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from schemas import checks
from schemas.config import ConfigError, LossConfig
from trainer.losses._tensors import safe_mean

Terms = Dict[str, tf.Tensor]

# Auxiliary outputs a recipe may ask the training network for (``Objective.AUX``), and the
# keys under which ``trainer.model.build_networks`` puts them.
AUX_KINDS = ("reps", "hidden", "logits")
REPS, HIDDEN, LOGITS = "_reps", "_hidden", "_logits"
_EPS = 1e-7


class Objective:
    """A configured loss recipe.

    Subclasses set ``ARGS`` (accepted ``loss.args`` with their defaults) and implement
    ``term_names`` (known before training, so metric trackers can be created up front, which
    distribution strategies require) and ``__call__``.

    Recipes that read intermediate values list them in ``AUX`` (some of
    ``trainer.model.AUX_KINDS``: ``"reps"`` each task's backbone representation, ``"hidden"``
    each task tower's layer activations, ``"logits"`` each head's logit) and find them in the
    training network's outputs (``"_reps"``, ``"_hidden"``, ``"_logits"``). Recipes with
    training-only state (AdaFTR's relatedness net, MAN's uncertainty weights) create their
    layers in :meth:`build` (called once, inside the strategy scope, with the training network)
    and list them in ``layers``. Those layers are trained with the network but are never part
    of the exported inference network.
    """

    ARGS: Dict[str, object] = {}
    AUX: Tuple[str, ...] = ()

    def __init__(self, cfg: LossConfig):
        unknown = sorted(set(cfg.args) - set(self.ARGS))
        if unknown:
            raise ConfigError(f"loss.args: {cfg.name} takes {sorted(self.ARGS) or 'no'} "
                              f"arguments, got {unknown}")
        self.name = cfg.name
        self.args = {**self.ARGS, **dict(cfg.args)}
        self.layers: List[tf.keras.layers.Layer] = []

    def build(self, training_network: tf.keras.Model) -> None:
        """Creates training-only layers from the training network's output shapes."""

    @property
    def trainable_variables(self) -> List[tf.Variable]:
        return [v for layer in self.layers for v in layer.trainable_variables]

    def term_names(self, heads: Sequence[str]) -> List[str]:
        raise NotImplementedError

    def report(self) -> Dict[str, object]:
        """Learned recipe state worth printing after training (e.g. MAN's task weights)."""
        return {}

    def __call__(self, labels: Mapping[str, tf.Tensor],
                 outputs: Mapping[str, tf.Tensor]) -> Terms:
        raise NotImplementedError

    # -- argument checks (messages name loss.args.<key> and the received value) --
    def number(self, key: str, low: float = 0.0, high: float = float("inf"),
               low_open: bool = False) -> float:
        """``loss.args[key]`` as a float in ``[low, high]`` (``(low, high]`` if low_open)."""
        return checks.check_number(f"loss.args.{key}", self.args[key], low=low, high=high,
                                   low_open=low_open, error=ConfigError)

    def choice(self, key: str, choices: Sequence[str]) -> str:
        return checks.check_choice(f"loss.args.{key}", self.args[key], choices,
                                   error=ConfigError)


def bce(labels: tf.Tensor, probs: tf.Tensor, positive_weight: float = 1.0,
        negative_weight: float = 1.0, rows: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Mean binary cross-entropy on probabilities (clipped to [eps, 1 - eps]).

    ``-mean(w+ y log p + w- (1 - y) log(1 - p))``: class weights ``w+``/``w-`` default to 1
    (MAN's class-weighted BCE sets them). With ``rows`` (``[B]`` 0/1 weights) the mean runs over
    the selected rows only, e.g. AdaFTR's L_cvr over clicked impressions (eq. 4). A replica
    without (selected) rows gives 0 with zero gradient, never NaN.
    """
    probs = tf.clip_by_value(tf.reshape(tf.cast(probs, tf.float32), [-1]), _EPS, 1 - _EPS)
    labels = tf.reshape(tf.cast(labels, tf.float32), [-1])
    nll = -(positive_weight * labels * tf.math.log(probs)
            + negative_weight * (1 - labels) * tf.math.log(1 - probs))
    if rows is None:
        return safe_mean(nll)
    rows = tf.reshape(tf.cast(rows, tf.float32), [-1])
    return tf.math.divide_no_nan(tf.reduce_sum(rows * nll), tf.reduce_sum(rows))


def head_labels(labels: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Label of each funnel head from the task labels (``trainer.data``): ctr <- the click
    label, cvr <- the conversion label (only meaningful on clicked impressions), ctcvr <-
    click * conversion; any other task keeps its own label (e.g. AdaFTR's third task)."""
    click = tf.cast(labels["ctr"], tf.float32)
    conversion = tf.cast(labels["cvr"], tf.float32)
    out = {k: v for k, v in labels.items() if k not in ("ctr", "cvr")}
    out.update({"ctr": click, "ctcvr": click * conversion, "cvr": conversion})
    return out
