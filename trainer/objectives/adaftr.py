"""AdaFTR recipe: inter-task contrastive learning with an adaptive, per-instance temperature.

Lin et al., "Modeling Adaptive Fine-grained Task Relatedness for Joint CTR-CVR Estimation",
KDD'23 (/work/shared/papers/adaftr_adaptive_task_relatedness.md); DESIGN.md "Losses".

Total (eq. 14): ``L_ctr + L_cvr + alpha L_rel + beta L_cl + l2 ||Theta||^2`` where

* ``L_ctr + L_cvr`` are the ESMM terms of the base recipe (BCE on ctr and ctcvr over all
  impressions), so "+AdaFTR" differs from its baseline by the AdaFTR terms only;
* ``L_rel`` (eq. 11): BCE of the relatedness net's ``y_rel_hat = sigmoid(MLP(v^ctr * v^k))``
  (eq. 8-9, ``v`` = the backbone's task outputs) against ``y_rel = 1[y_ctr == y_k]`` (eq. 10);
* ``L_cl`` (eq. 13): InfoNCE of ``h^ctr_r`` against ``h^k_r`` with in-batch negatives
  ``h^k_r'`` and temperature ``tau_r = (tauU - tauL)(1 - y_rel_hat_r) + tauL`` (eq. 12);
  ``h`` is the output of task tower layer ``contrast_layer`` (0: the first, Sec. 3.1.4);
* ``||Theta||^2``: sum of squares of the network's trainable weights.

Gradient routing follows Algorithm 1: tau enters L_cl through ``stop_gradient`` and the
relatedness net's input through ``stop_gradient``, so the relatedness parameters learn from
L_rel only and L_rel does not move the task parameters. ``tau_gradient`` and
``relatedness_input_gradient`` turn either stop off.

With more than two tasks, ``ctr`` (click) is contrasted with each other task (Sec. 3.3.4),
each pair with its own relatedness net; terms are then suffixed ``_<task>``.

Variants (``loss.args.variant``, Table 5 ablations):
  ``adaptive`` (AdaFTR), ``learnable_tau`` (one learned tau for every instance, trained by
  L_cl), ``fixed_tau`` (tau = ``fixed_tau``, 0.05), ``single_negative`` (L_scl, eq. 7 made
  safe), ``regression`` (L_reg, eq. 5 with MSE). Only ``adaptive`` has L_rel.

Defaults are Table 3's (tauU 1, tauL 0.05, alpha 1, beta 0.01) except ``l2``: Table 3's
``lambda = 1`` cannot be a literal coefficient of a sum of squared weights (it would outweigh
the BCE terms by orders of magnitude), so it defaults to 0 here; set it explicitly.
The relatedness net and the learnable temperature are training-only: the exported inference
network holds neither.
"""
from __future__ import annotations

from typing import Dict, List

import tensorflow as tf

from schemas.config import ConfigError, LossConfig
from trainer.layers.common import build_sublayer
from trainer.layers.relatedness import LearnableTemperature, RelatednessNet
from trainer.losses.contrastive import (
    adaptive_info_nce,
    representation_mse,
    single_negative_contrast,
)
from trainer.objectives.base import HIDDEN, REPS, bce, head_labels
from trainer.objectives.esmm import Esmm

ANCHOR = "ctr"
VARIANTS = ("adaptive", "learnable_tau", "fixed_tau", "single_negative", "regression")


def task_label(labels, task: str) -> tf.Tensor:
    """``[B]`` label of ``task``: the standard heads' (:func:`head_labels`), else
    ``labels[task]`` (extra tasks such as a ``view`` step carry their own label)."""
    standard = head_labels(labels)
    if task in standard:
        return standard[task]
    if task not in labels:
        raise KeyError(f"no label for task {task!r}: labels hold {sorted(labels)}")
    return tf.cast(tf.reshape(labels[task], [-1]), tf.float32)


class AdaFTRObjective(Esmm):
    """ESMM terms + AdaFTR's relatedness and contrastive terms (see the module docstring)."""

    AUX = ("reps", "hidden")
    ARGS = {**Esmm.ARGS, "alpha": 1.0, "beta": 0.01, "tau_upper": 1.0, "tau_lower": 0.05,
            "variant": "adaptive", "fixed_tau": 0.05, "initial_tau": 0.5,
            "relatedness_units": [32], "contrast_layer": 0, "l2": 0.0, "tau_gradient": False,
            "relatedness_input_gradient": False}

    def __init__(self, cfg: LossConfig):
        super().__init__(cfg)
        self.variant = self.choice("variant", VARIANTS)
        self.alpha = self.number("alpha")
        self.beta = self.number("beta")
        self.l2 = self.number("l2")
        self.tau_lower = self.number("tau_lower", low_open=True)
        self.tau_upper = self.number("tau_upper", low=self.tau_lower, low_open=True)
        self.fixed_tau = self.number("fixed_tau", low_open=True)
        layer = self.args["contrast_layer"]
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
            raise ConfigError(f"loss.args.contrast_layer: expected an integer >= 0, got "
                              f"{layer!r}")
        self.contrast_layer = layer
        for key in ("tau_gradient", "relatedness_input_gradient"):
            if not isinstance(self.args[key], bool):
                raise ConfigError(f"loss.args.{key}: expected true/false, got "
                                  f"{self.args[key]!r}")
        try:  # validate the layer arguments now, not at build time
            RelatednessNet(self.args["relatedness_units"], self.tau_lower, self.tau_upper)
            if self.variant == "learnable_tau":
                LearnableTemperature(self.args["initial_tau"], self.tau_lower, self.tau_upper)
        except ValueError as e:
            raise ConfigError(f"loss.args: {e}") from e
        self.others: List[str] = []
        self.relatedness: Dict[str, RelatednessNet] = {}
        self.temperature = None
        self._weights: List[tf.Variable] = []

    def build(self, training_network: tf.keras.Model) -> None:
        outputs = training_network.output
        hidden = outputs[HIDDEN]
        tasks = list(hidden)
        if ANCHOR not in tasks or len(tasks) < 2:
            raise ConfigError(f"loss.name=adaftr contrasts '{ANCHOR}' with the other tasks; "
                              f"the model's tasks are {tasks}")
        depth = len(hidden[ANCHOR])
        if self.contrast_layer >= depth:
            raise ConfigError(f"loss.args.contrast_layer={self.contrast_layer} but the towers "
                              f"have {depth} layer(s) (model.tower_units)")
        self.others = [t for t in tasks if t != ANCHOR]
        if self.variant == "adaptive":
            for task in self.others:
                net = RelatednessNet(self.args["relatedness_units"], self.tau_lower,
                                     self.tau_upper,
                                     stop_input_gradient=not self.args[
                                         "relatedness_input_gradient"],
                                     name=f"relatedness/{task}")
                shape = outputs[REPS][task].shape
                build_sublayer(net, (shape, shape))
                self.relatedness[task] = net
            self.layers = list(self.relatedness.values())
        elif self.variant == "learnable_tau":
            self.temperature = LearnableTemperature(self.args["initial_tau"], self.tau_lower,
                                                    self.tau_upper, name="temperature")
            build_sublayer(self.temperature, tf.TensorShape([None]))
            self.layers = [self.temperature]
        self._weights = list(training_network.trainable_weights)

    def _suffix(self, task: str) -> str:
        return "" if len(self.others) == 1 else f"_{task}"

    def term_names(self, heads):
        names = super().term_names(heads)
        for task in self.others:
            if self.variant == "adaptive":
                names.append("rel" + self._suffix(task))
            names.append("cl" + self._suffix(task))
        if self.l2 > 0:
            names.append("l2")
        return names

    def _contrast(self, anchor, other, task, labels, outputs, terms):
        if self.variant == "adaptive":
            net = self.relatedness[task]
            relatedness = net((outputs[REPS][ANCHOR], outputs[REPS][task]))
            y_rel = tf.cast(tf.equal(task_label(labels, ANCHOR), task_label(labels, task)),
                            tf.float32)  # eq. 10
            terms["rel" + self._suffix(task)] = self.alpha * bce(y_rel, relatedness)
            return adaptive_info_nce(anchor, other, net.temperature(relatedness),
                                     stop_tau_gradient=not self.args["tau_gradient"])
        if self.variant == "learnable_tau":
            return adaptive_info_nce(anchor, other, self.temperature(anchor),
                                     stop_tau_gradient=False)
        if self.variant == "fixed_tau":
            return adaptive_info_nce(anchor, other, self.fixed_tau)
        if self.variant == "single_negative":
            return single_negative_contrast(anchor, other)
        return representation_mse(anchor, other)

    def __call__(self, labels, outputs):
        terms = super().__call__(labels, outputs)
        anchor = outputs[HIDDEN][ANCHOR][self.contrast_layer]
        for task in self.others:
            other = outputs[HIDDEN][task][self.contrast_layer]
            cl = self._contrast(anchor, other, task, labels, outputs, terms)
            terms["cl" + self._suffix(task)] = self.beta * cl
        if self.l2 > 0:
            terms["l2"] = self.l2 * tf.add_n([tf.reduce_sum(tf.square(w))
                                              for w in self._weights])
        return terms
