"""KAML recipe: per-action post-click CVR heads trained on ADM-masked labels (+ RLU ranking).

Jia et al. (/work/shared/papers/kaml_incomplete_skewed_multilabel.md) Sec. 3.2-3.5; DESIGN.md.
For a model with ``tasks: [ctr, actions]`` (heads ``ctr`` and ``cvr_<j>``), the terms are
``bce_ctr`` plus eq. 13 computed by :class:`trainer.losses.kaml.KamlLoss` (the one
implementation of eq. 11-13, on the global batch):

* ``bce_ctr``: ``ctr_weight * BCE(p_ctr, click)`` over all impressions (the funnel's first
  step, as in the other recipes);
* ``bce_actions``: ``gamma * L_BCE`` with ``L_BCE`` eq. 12: per action, BCE averaged over its
  valid samples, summed over actions. Valid = clicked (KAML's samples are post-click) AND
  ``Mask_ij``, chosen by ``loss.args.mask``: ``adm``, the ADM mask ``1[o_i == j] OR
  1[c_i^j >= alpha_j]`` (eq. 8 + DESIGN.md); ``target``, the base mask ``1[o_i == j]`` (eq. 6,
  "Vanilla"); ``all``, every action on every clicked sample (the Oracle of Table 3 when the
  labels are complete; with submitted labels it trusts every unsubmitted 0);
* ``ranking``: ``(1 - gamma) * L_Ranking`` with ``L_Ranking`` eq. 11 over the batch's clicked
  samples (``D``; |D| normalises), weights ``beta_k``. Omitted when ``gamma == 1``. Which
  samples rank above the others (the paper's Type A) is ``loss.args.ranking_positives``:
  ``masked`` (default): ``y * Mask``, positives inside the valid mask only, masked-out labels
  count as 0 (the paper's Type C); ``submitted``: every submitted positive ``y = 1`` of a
  clicked sample, whatever the mask, as Sec. 3.4 defines Type A ("y = 1, confirmed labels
  uploaded by the advertisers").

The logits are the training network's (with HKE: the merged sub-towers of eq. 10). ``loss.args``:
``gamma`` (0.9), ``beta`` (1.0, or one per action), ``mask`` ("adm"), ``ranking_positives``
("masked"), ``ctr_weight`` (1.0). The paper gives no gamma or beta; 0.9 keeps the ranking term
from dominating early training.
"""
from __future__ import annotations

from typing import List

import tensorflow as tf

from schemas import checks
from schemas.config import ConfigError, LossConfig
from schemas.features import action_head
from trainer.losses.kaml import RANKING_POSITIVES, KamlLoss
from trainer.objectives.base import LOGITS, Objective, bce, head_labels


class KamlObjective(Objective):
    """ctr BCE + KAML eq. 13 on the per-action heads (see the module docstring)."""

    AUX = ("logits",)
    ARGS = {"gamma": 0.9, "beta": 1.0, "mask": "adm", "ranking_positives": "masked",
            "ctr_weight": 1.0}
    MASKS = ("adm", "target", "all")

    def __init__(self, cfg: LossConfig):
        super().__init__(cfg)
        self.gamma = self.number("gamma", high=1.0)
        self.ctr_weight = self.number("ctr_weight")
        self.mask = self.choice("mask", self.MASKS)
        self.ranking_positives = self.choice("ranking_positives", RANKING_POSITIVES)
        beta = self.args["beta"]
        betas = beta if isinstance(beta, (list, tuple)) else [beta]
        if not betas or any(isinstance(b, bool) or not isinstance(b, (int, float)) or b < 0
                            for b in betas):
            raise ConfigError(f"`loss.args.beta` must be a number >= 0 or one per action, "
                              f"received: loss.args.beta={checks.short_repr(beta)}")
        self.beta = [float(b) for b in betas]
        self.actions: List[str] = []
        self.loss = None

    def build(self, training_network: tf.keras.Model) -> None:
        heads = training_network.output  # the dict of the functional model's outputs
        count = 0
        while action_head(count) in heads:
            count += 1
        if count == 0:
            raise ConfigError("loss.name=kaml needs per-action heads: set model.tasks to "
                              "[ctr, actions]")
        if len(self.beta) not in (1, count):
            raise ConfigError(f"loss.args.beta: expected 1 value or one per action ({count}), "
                              f"got {self.beta}")
        self.actions = [action_head(j) for j in range(count)]
        if len(self.beta) == 1:
            self.beta = self.beta * count
        self.loss = KamlLoss(self.gamma, self.beta, self.ranking_positives)

    def term_names(self, heads):
        names = ["bce_ctr", "bce_actions"]
        if self.gamma < 1.0:
            names.append("ranking")
        return names

    def __call__(self, labels, outputs):
        click = head_labels(labels)["ctr"]
        actions = tf.cast(labels["actions"], tf.float32)
        if self.mask == "all":
            mask = tf.ones_like(actions)
        else:
            mask = labels["adm_mask" if self.mask == "adm" else "adm_original"]
        valid = tf.cast(mask, tf.float32) * click[:, tf.newaxis]  # post-click samples only
        logits = tf.stack([tf.reshape(outputs[LOGITS][h], [-1]) for h in self.actions], axis=1)
        eq13 = self.loss.terms(tf.concat([actions, valid], axis=1), logits)
        terms = {"bce_ctr": self.ctr_weight * bce(click, outputs["ctr"]),
                 "bce_actions": eq13["bce"]}
        if "ranking" in eq13:
            terms["ranking"] = eq13["ranking"]
        return terms
