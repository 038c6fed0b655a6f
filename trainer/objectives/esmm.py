"""Loss recipes: labels + network outputs -> named scalar loss terms.

A recipe is chosen by ``loss.name`` in the config. Labels arrive as a dict with canonical
keys ``click`` and ``conversion`` (float32 ``[B]``). Terms are per-replica means; the training
step scales them for the distribution strategy.

Recipes:
  esmm: ``w_ctr * BCE(p_ctr, click) + w_ctcvr * BCE(p_ctcvr, click * conversion)``, both over
    all impressions (ESMM eq. 3), so pCVR is learned over the entire space. A single-task
    model (heads ``[ctr]``) gets the ctr term only. ``loss.args.calibrator`` (default 0)
    adds AITM's calibrator ``calibrator * mean(relu(p_ctcvr - p_ctr))`` (AITM eq. 6; the
    paper uses 0.6).
  pwiser: the esmm terms plus ``lambda * PWiseR`` on one head's probabilities (PWiseR eq. 1;
    ``trainer.losses.pwiser``). ``loss.args``: ``lambda`` (0.1), ``m1``, ``m2`` (0.3),
    ``margin_mode`` ("standard" | "paper_literal"), ``head`` ("ctr" | "ctcvr").
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

    ARGS: Dict[str, object] = {"calibrator": 0.0}

    def __init__(self, cfg: LossConfig):
        self.weights = dict(cfg.weights)
        unknown = sorted(set(self.weights) - set(self.HEADS))
        if unknown:
            raise ConfigError(f"loss.weights: esmm weighs 'ctr' and 'ctcvr', got {unknown}")
        unknown = sorted(set(cfg.args) - set(self.ARGS))
        if unknown:
            raise ConfigError(f"loss.args: {cfg.name} takes {sorted(self.ARGS) or 'no'} "
                              f"arguments, got {unknown}")
        self.args = {**self.ARGS, **dict(cfg.args)}
        cal = self.args["calibrator"]
        if isinstance(cal, bool) or not isinstance(cal, (int, float)) or cal < 0:
            raise ConfigError(f"loss.args.calibrator: expected a number >= 0, got {cal!r}")

    def term_names(self, heads):
        names = [f"bce_{h}" for h in self.HEADS if h in heads]
        if self.args["calibrator"] > 0:
            if "ctcvr" not in heads:
                raise ConfigError("loss.args.calibrator needs a ctcvr head, the model's heads "
                                  f"are {list(heads)}")
            names.append("calibrator")
        return names

    def __call__(self, labels, outputs):
        y = head_labels(labels)
        terms = {f"bce_{head}": self.weights.get(head, 1.0) * bce(y[head], outputs[head])
                 for head in self.HEADS if head in outputs}
        if self.args["calibrator"] > 0:
            from trainer.layers.aitm import aitm_calibrator

            terms["calibrator"] = float(self.args["calibrator"]) * aitm_calibrator(
                outputs["ctr"], outputs["ctcvr"])
        return terms


class PWiseRObjective(Esmm):
    """ESMM terms + ``lambda * PWiseR(click, conversion, p_head)`` (PWiseR eq. 1 and 2).

    PWiseR is a batch-level loss: it ranks each replica's converted impressions above its
    clicked-unconverted (margin m1) and unclicked (margin m2) ones.
    """

    ARGS = {**Esmm.ARGS, "lambda": 0.1, "m1": 0.3, "m2": 0.3, "margin_mode": "standard",
            "head": "ctr"}

    def __init__(self, cfg: LossConfig):
        super().__init__(cfg)
        from trainer.losses.pwiser import PWiseR

        if self.args["head"] not in self.HEADS:
            raise ConfigError(f"loss.args.head: expected 'ctr' or 'ctcvr', got "
                              f"{self.args['head']!r}")
        lam = self.args["lambda"]
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or lam < 0:
            raise ConfigError(f"loss.args.lambda: expected a number >= 0, got {lam!r}")
        try:
            self.loss = PWiseR(m1=self.args["m1"], m2=self.args["m2"],
                               margin_mode=self.args["margin_mode"])
        except ValueError as e:
            raise ConfigError(f"loss.args: {e}") from e

    def term_names(self, heads):
        if self.args["head"] not in heads:
            raise ConfigError(f"loss.args.head={self.args['head']!r} but the model's heads "
                              f"are {list(heads)}")
        return super().term_names(heads) + ["pwiser"]

    def __call__(self, labels, outputs):
        from trainer.losses.pwiser import pwiser

        terms = super().__call__(labels, outputs)
        terms["pwiser"] = float(self.args["lambda"]) * pwiser(
            labels["click"], labels["conversion"], outputs[self.args["head"]],
            m1=self.loss.m1, m2=self.loss.m2, margin_mode=self.loss.margin_mode)
        return terms


RECIPES: Dict[str, Callable[[LossConfig], Objective]] = {"esmm": Esmm, "pwiser": PWiseRObjective}


def build_objective(cfg: LossConfig) -> Objective:
    """The recipe named by ``cfg.name``, configured."""
    if cfg.name not in RECIPES:
        raise ConfigError(f"loss.name: unknown loss recipe {cfg.name!r}; expected one of "
                          f"{sorted(RECIPES)}")
    return RECIPES[cfg.name](cfg)
