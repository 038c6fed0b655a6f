"""ESMM recipe: BCE on ctr (click) and ctcvr (click & conversion) over all impressions.

Ma et al., "Entire Space Multi-Task Model", SIGIR'18, eq. 3: ``w_ctr * BCE(p_ctr, click) +
w_ctcvr * BCE(p_ctcvr, click * conversion)``, so pCVR is learned over the entire space. A
single-task model (heads ``[ctr]``) gets the ctr term only. ``loss.args.calibrator`` (default
0) adds AITM's calibrator ``calibrator * mean(relu(p_ctcvr - p_ctr))`` (AITM eq. 6; the paper
uses 0.6). ``loss.args.cvr_clicked`` (default 0) adds ``cvr_clicked * BCE(p_cvr, conversion)``
over the clicked impressions only (term ``bce_cvr_clicked``; the direct CVR loss of AdaFTR
eq. 4, which ESMM's entire-space terms replace): pCVR then also learns from the clicks'
conversions directly, as a CVR model trained on clicks does, while ctcvr keeps it calibrated
over all impressions.
"""
from __future__ import annotations

from schemas.config import ConfigError, LossConfig
from trainer.layers.aitm import aitm_calibrator
from trainer.objectives.base import Objective, bce, head_labels


class Esmm(Objective):
    """BCE on ctr and ctcvr over all impressions (ESMM eq. 3), weighted per head."""

    HEADS = ("ctr", "ctcvr")
    WEIGHTED = HEADS  # heads ``loss.weights`` may name
    ARGS = {"calibrator": 0.0, "cvr_clicked": 0.0}

    def __init__(self, cfg: LossConfig):
        super().__init__(cfg)
        self.weights = dict(cfg.weights)
        unknown = sorted(set(self.weights) - set(self.WEIGHTED))
        if unknown:
            raise ConfigError(f"loss.weights: {cfg.name} weighs {list(self.WEIGHTED)}, got "
                              f"{unknown}")
        self.calibrator = self.number("calibrator")
        self.cvr_clicked = self.number("cvr_clicked")

    def term_names(self, heads):
        names = [f"bce_{h}" for h in self.HEADS if h in heads]
        if self.calibrator > 0:
            if "ctcvr" not in heads:
                raise ConfigError("loss.args.calibrator needs a ctcvr head, the model's heads "
                                  f"are {list(heads)}")
            names.append("calibrator")
        if self.cvr_clicked > 0:
            if "cvr" not in heads:
                raise ConfigError("loss.args.cvr_clicked trains the cvr head, the model's "
                                  f"heads are {list(heads)}")
            names.append("bce_cvr_clicked")
        return names

    def __call__(self, labels, outputs):
        y = head_labels(labels)
        terms = {f"bce_{head}": self.weights.get(head, 1.0) * bce(y[head], outputs[head])
                 for head in self.HEADS if head in outputs}
        if self.calibrator > 0:
            terms["calibrator"] = self.calibrator * aitm_calibrator(outputs["ctr"],
                                                                    outputs["ctcvr"])
        if self.cvr_clicked > 0:  # AdaFTR eq. 4's L_cvr: clicked impressions only
            terms["bce_cvr_clicked"] = self.cvr_clicked * bce(y["cvr"], outputs["cvr"],
                                                              rows=y["ctr"])
        return terms
