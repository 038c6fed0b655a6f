"""MAN's loss recipe: task losses combined by learned homoscedastic-uncertainty weights.

MAN (/work/shared/papers/man_multitask_attention.md) Sec. 3.3, eq. 2-3, after Kendall et al.
(CVPR'18): ``L = sum_k exp(-2 s_k) / 2 * L_k + s_k`` with ``s_k = log sigma_k`` learned
(:class:`trainer.losses.uncertainty.UncertaintyWeighting`, the one implementation of eq. 3).
The task losses ``L_k`` are the ESMM terms (BCE on ctr and on ctcvr over all impressions,
pCTCVR = pCTR * pCVR as in MAN eq. 1), each optionally with class weights (Sec. 3.3:
"weights to the positive and negative samples").

``loss.args``:
  ``uncertainty`` (true): learn the weights; false gives the plain weighted sum of eq. 2 with
  ``loss.weights``. ``initial_log_sigma`` (0.0). ``positive_weight`` / ``negative_weight``:
  per-head class weights, e.g. ``{ctcvr: 5.0}`` (default 1 for every head).

Terms are named ``task_<head>`` (``exp(-2 s_k) / 2 * L_k + s_k``; they sum to eq. 3). The
``log_sigma`` variable lives in a training-only layer: never exported.
:meth:`UncertaintyObjective.report` gives the learned weights ``1 / (2 sigma_k^2)`` (the paper
prints them at the end of training).
"""
from __future__ import annotations

from typing import Dict, Mapping

import tensorflow as tf

from schemas.config import ConfigError, LossConfig
from trainer.layers.common import build_sublayer
from trainer.losses.uncertainty import UncertaintyWeighting
from trainer.objectives.base import Objective, bce, head_labels

HEADS = ("ctr", "ctcvr")


class UncertaintyObjective(Objective):
    """ESMM task losses (class-weighted) combined by uncertainty weights (MAN eq. 3)."""

    ARGS = {"uncertainty": True, "initial_log_sigma": 0.0, "positive_weight": {},
            "negative_weight": {}}

    def __init__(self, cfg: LossConfig):
        super().__init__(cfg)
        self.weights = dict(cfg.weights)
        unknown = sorted(set(self.weights) - set(HEADS))
        if unknown:
            raise ConfigError(f"loss.weights: {cfg.name} weighs {list(HEADS)}, got {unknown}")
        if not isinstance(self.args["uncertainty"], bool):
            raise ConfigError(f"loss.args.uncertainty: expected true/false, got "
                              f"{self.args['uncertainty']!r}")
        self.uncertainty = self.args["uncertainty"]
        self.class_weights = {key: self._per_head(key) for key in ("positive_weight",
                                                                   "negative_weight")}
        try:
            UncertaintyWeighting(len(HEADS), self.args["initial_log_sigma"])
        except ValueError as e:
            raise ConfigError(f"loss.args: {e}") from e
        self.heads = []
        self.sigma = None

    def _per_head(self, key: str) -> Dict[str, float]:
        value = self.args[key]
        if not isinstance(value, Mapping) or set(value) - set(HEADS) or any(
                isinstance(w, bool) or not isinstance(w, (int, float)) or w <= 0
                for w in value.values()):
            raise ConfigError(f"loss.args.{key}: expected a mapping of {list(HEADS)} to "
                              f"positive numbers, got {value!r}")
        return {h: float(value.get(h, 1.0)) for h in HEADS}

    def build(self, training_network: tf.keras.Model) -> None:
        self.heads = [h for h in HEADS if h in training_network.output_names]
        if self.uncertainty:
            self.sigma = UncertaintyWeighting(len(self.heads), self.args["initial_log_sigma"],
                                            name="uncertainty")
            build_sublayer(self.sigma, None)
            self.layers = [self.sigma]

    def term_names(self, heads):
        return [f"task_{h}" for h in HEADS if h in heads]

    def __call__(self, labels, outputs):
        y = head_labels(labels)
        losses = {h: bce(y[h], outputs[h], self.class_weights["positive_weight"][h],
                         self.class_weights["negative_weight"][h])
                  for h in HEADS if h in outputs}
        if not self.uncertainty:
            return {f"task_{h}": self.weights.get(h, 1.0) * loss for h, loss in losses.items()}
        weighted = self.sigma.weighted({h: losses[h] for h in self.heads})
        return {f"task_{h}": term for h, term in weighted.items()}

    def report(self) -> Dict[str, Dict[str, float]]:
        """Learned task weights ``1 / (2 sigma_k^2)`` and ``log sigma_k`` per head."""
        if self.sigma is None:
            return {}
        weights, values = self.sigma.task_weights(), self.sigma.log_sigma.numpy()
        return {h: {"weight": float(weights[i]), "log_sigma": float(values[i])}
                for i, h in enumerate(self.heads)}
