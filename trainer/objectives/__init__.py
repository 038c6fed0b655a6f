"""Loss recipes: labels + training-network outputs -> named scalar loss terms.

A recipe is chosen by ``loss.name`` in the config (one module each):

* ``bce`` (:mod:`trainer.objectives.independent`): independent BCE per task, any tasks.

* ``esmm`` (:mod:`trainer.objectives.esmm`): BCE on ctr and ctcvr over all impressions
  (ESMM eq. 3), optional AITM calibrator.
* ``pwiser`` (:mod:`trainer.objectives.pwiser`): esmm + ``lambda * PWiseR`` (PWiseR eq. 1-2).
* ``adaftr`` (:mod:`trainer.objectives.adaftr`): esmm + AdaFTR's relatedness and adaptive-tau
  contrastive terms (AdaFTR eq. 8-14) and its Table 5 ablation variants.
* ``kaml`` (:mod:`trainer.objectives.kaml`): per-action CVR heads on ADM-masked labels with
  KAML's masked BCE and RLU ranking loss (KAML eq. 11-13).
* ``uncertainty`` (:mod:`trainer.objectives.uncertainty`): MAN's recipe, the esmm task losses
  (optionally class-weighted) combined by learned uncertainty weights (MAN eq. 3).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

from schemas.config import ConfigError, LossConfig
from trainer.objectives.adaftr import AdaFTRObjective
from trainer.objectives.base import Objective, Terms, bce, head_labels
from trainer.objectives.independent import IndependentBCE
from trainer.objectives.esmm import Esmm
from trainer.objectives.kaml import KamlObjective
from trainer.objectives.pwiser import PWiseRObjective
from trainer.objectives.uncertainty import UncertaintyObjective

RECIPES: Dict[str, Callable[[LossConfig], Objective]] = {
    "esmm": Esmm, "pwiser": PWiseRObjective, "adaftr": AdaFTRObjective,
    "uncertainty": UncertaintyObjective, "kaml": KamlObjective}

__all__ = ["Objective", "Terms", "bce", "head_labels", "build_objective", "RECIPES"]


def build_objective(cfg: LossConfig, tasks: Optional[Sequence[str]] = None) -> Objective:
    """The recipe named by ``cfg.name``, configured (``bce`` needs the model's ``tasks``)."""
    if cfg.name == "bce":
        if not tasks:
            raise ConfigError("loss.name bce needs the model's tasks")
        return IndependentBCE(cfg, tasks)
    if cfg.name not in RECIPES:
        raise ConfigError(f"loss.name: unknown loss recipe {cfg.name!r}; expected one of "
                          f"{sorted(RECIPES) + ['bce']}")
    return RECIPES[cfg.name](cfg)
