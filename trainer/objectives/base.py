"""What every loss recipe shares: the interface, BCE on probabilities, head labels, arg checks.

A recipe turns the task labels (``{"ctr": click, "cvr": conversion}``, float32 ``[B]``) and the outputs
of the training network into named scalar loss terms. Terms are per-replica means (or
batch-level values); the training step scales their sum for the distribution strategy.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import tensorflow as tf

from schemas import checks
from schemas.config import ConfigError, LossConfig

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


def bce(labels: tf.Tensor, probs: tf.Tensor) -> tf.Tensor:
    """Mean binary cross-entropy on probabilities (clipped to [eps, 1 - eps])."""
    probs = tf.clip_by_value(tf.cast(probs, tf.float32), _EPS, 1 - _EPS)
    labels = tf.cast(labels, tf.float32)
    return -tf.reduce_mean(labels * tf.math.log(probs) + (1 - labels) * tf.math.log(1 - probs))


def head_labels(labels: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Label of each funnel head from the task labels (``trainer.data``): ctr <- the click
    label, cvr <- the conversion label (only meaningful on clicked impressions), ctcvr <-
    click * conversion; any other task keeps its own label (e.g. AdaFTR's third task)."""
    click = tf.cast(labels["ctr"], tf.float32)
    conversion = tf.cast(labels["cvr"], tf.float32)
    out = {k: v for k, v in labels.items() if k not in ("ctr", "cvr")}
    out.update({"ctr": click, "ctcvr": click * conversion, "cvr": conversion})
    return out
