"""PWiseR recipe: the ESMM terms plus ``lambda * PWiseR`` on one head (PWiseR eq. 1 and 2).

``loss.args``: ``lambda`` (0.1), ``m1``, ``m2`` (0.3), ``margin_mode`` ("standard" |
"paper_literal"), ``head`` ("ctr" | "ctcvr"); see :mod:`trainer.losses.pwiser`.
"""
from __future__ import annotations

from schemas.config import ConfigError, LossConfig
from trainer.losses.pwiser import PWiseR, pwiser
from trainer.objectives.base import head_labels
from trainer.objectives.esmm import Esmm


class PWiseRObjective(Esmm):
    """ESMM terms + ``lambda * PWiseR(click, conversion, p_head)``.

    PWiseR is a batch-level loss: it ranks each replica's converted impressions above its
    clicked-unconverted (margin m1) and unclicked (margin m2) ones.
    """

    ARGS = {**Esmm.ARGS, "lambda": 0.1, "m1": 0.3, "m2": 0.3, "margin_mode": "standard",
            "head": "ctr"}

    def __init__(self, cfg: LossConfig):
        super().__init__(cfg)
        self.head = self.choice("head", self.HEADS)
        self.weight = self.number("lambda")
        try:
            self.loss = PWiseR(m1=self.args["m1"], m2=self.args["m2"],
                               margin_mode=self.args["margin_mode"])
        except ValueError as e:
            raise ConfigError(f"loss.args: {e}") from e

    def term_names(self, heads):
        if self.head not in heads:
            raise ConfigError(f"loss.args.head={self.head!r} but the model's heads "
                              f"are {list(heads)}")
        return super().term_names(heads) + ["pwiser"]

    def __call__(self, labels, outputs):
        terms = super().__call__(labels, outputs)
        y = head_labels(labels)
        terms["pwiser"] = self.weight * pwiser(
            y["ctr"], y["cvr"], outputs[self.head],
            m1=self.loss.m1, m2=self.loss.m2, margin_mode=self.loss.margin_mode)
        return terms
