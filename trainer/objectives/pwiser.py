"""PWiseR recipe: the ESMM terms plus ``lambda * PWiseR`` on one head (PWiseR eq. 1 and 2).

``loss.args``: ``lambda`` (0.1), ``m1``, ``m2`` (0.3), ``margin_mode`` ("standard" |
"paper_literal"), ``head`` ("ctr" | "ctcvr"); see :mod:`trainer.losses.pwiser`.

``head: ctcvr`` works on both kinds of CTCVR output: the ESMM product head of ``model.tasks:
[ctr, cvr]`` (pCTCVR = pCTR x pCVR) and the direct CTCVR tower of ``[ctr, ctcvr]`` (FuxiCTR
style, as the paper's baselines; the model then derives pCVR = pCTCVR / pCTR). The ESMM terms
are the same for both: BCE on ctr and on ctcvr over all impressions.
"""
from __future__ import annotations

import tensorflow as tf

from schemas.config import ConfigError, LossConfig
from trainer.losses.pwiser import PWiseR
from trainer.objectives.base import head_labels
from trainer.objectives.esmm import Esmm


class PWiseRObjective(Esmm):
    """ESMM terms + ``lambda * PWiseR(click, conversion, p_head)``.

    PWiseR is a batch-level loss: it ranks the global batch's converted impressions above its
    clicked-unconverted (margin m1) and unclicked (margin m2) ones (the Keras loss
    :class:`~trainer.losses.pwiser.PWiseR` gathers every replica's rows).
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
        y_true = tf.stack([y["ctr"], y["cvr"]], axis=1)  # (click, conversion)
        terms["pwiser"] = self.weight * self.loss(y_true, outputs[self.head])
        return terms
