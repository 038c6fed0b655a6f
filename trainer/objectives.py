"""Loss recipes: labels + network outputs -> named scalar loss terms.

A recipe is chosen by ``loss.name`` in the config. Labels arrive as a dict with canonical
keys ``click`` and ``conversion`` (float32 ``[B]``). Terms are per-replica means; the training
step scales them for the distribution strategy.

Recipes:
  esmm: ``w_ctr * BCE(p_ctr, click) + w_ctcvr * BCE(p_ctcvr, click * conversion)``, both over
    all impressions (ESMM eq. 3), so pCVR is learned over the entire space.
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping

import tensorflow as tf

from trainer.config import ConfigError, LossConfig

Terms = Dict[str, tf.Tensor]


class Objective:
    """A configured loss recipe.

    Subclasses implement ``term_names`` (known before training, so metric trackers can be
    created up front, which distribution strategies require) and ``__call__``.
    """

    def term_names(self, heads) -> list:
        raise NotImplementedError

    def __call__(self, labels: Mapping[str, tf.Tensor],
                 outputs: Mapping[str, tf.Tensor]) -> Terms:
        raise NotImplementedError

_EPS = 1e-7


def bce(labels: tf.Tensor, probs: tf.Tensor) -> tf.Tensor:
    """Mean binary cross-entropy on probabilities (clipped to [eps, 1 - eps])."""
    probs = tf.clip_by_value(tf.cast(probs, tf.float32), _EPS, 1 - _EPS)
    labels = tf.cast(labels, tf.float32)
    return -tf.reduce_mean(labels * tf.math.log(probs) + (1 - labels) * tf.math.log(1 - probs))


def head_labels(labels: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Label of each standard head: ctr <- click, ctcvr <- click * conversion, cvr <- conversion
    (the cvr label is only meaningful on clicked impressions)."""
    click = tf.cast(labels["click"], tf.float32)
    conversion = tf.cast(labels["conversion"], tf.float32)
    return {"ctr": click, "ctcvr": click * conversion, "cvr": conversion}


class Esmm(Objective):
    """BCE on ctr and ctcvr over all impressions (ESMM eq. 3), weighted per head."""

    HEADS = ("ctr", "ctcvr")

    def __init__(self, cfg: LossConfig):
        self.weights = dict(cfg.weights)
        unknown = sorted(set(self.weights) - set(self.HEADS))
        if unknown:
            raise ConfigError(f"loss.weights: esmm weighs 'ctr' and 'ctcvr', got {unknown}")
        if cfg.args:
            raise ConfigError(f"loss.args: esmm takes no arguments, got {dict(cfg.args)}")

    def term_names(self, heads):
        return [f"bce_{h}" for h in self.HEADS if h in heads]

    def __call__(self, labels, outputs):
        y = head_labels(labels)
        return {f"bce_{head}": self.weights.get(head, 1.0) * bce(y[head], outputs[head])
                for head in self.HEADS if head in outputs}


RECIPES: Dict[str, Callable[[LossConfig], Objective]] = {"esmm": Esmm}


def build_objective(cfg: LossConfig) -> Objective:
    """The recipe named by ``cfg.name``, configured."""
    if cfg.name not in RECIPES:
        raise ConfigError(f"loss.name: unknown loss recipe {cfg.name!r}; expected one of "
                          f"{sorted(RECIPES)}")
    return RECIPES[cfg.name](cfg)
