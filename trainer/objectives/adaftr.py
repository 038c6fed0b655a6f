"""AdaFTR recipe: inter-task contrastive learning with an adaptive, per-instance temperature.

Lin et al., "Modeling Adaptive Fine-grained Task Relatedness for Joint CTR-CVR Estimation",
KDD'23 (/work/shared/papers/adaftr_adaptive_task_relatedness.md); DESIGN.md "Losses".

Total (eq. 14): ``L_ctr + L_cvr + alpha L_rel + beta L_cl + l2 ||Theta||^2`` where

* ``L_ctr + L_cvr`` (``loss.args.cvr_loss``): ``esmm`` (default), the ESMM terms of the base
  recipe (BCE on ctr and ctcvr over all impressions: terms ``bce_ctr``, ``bce_ctcvr``), so
  "+AdaFTR" differs from its baseline by the AdaFTR terms only; ``clicked``, the paper's eq. 4:
  BCE on ctr over all impressions and BCE of the cvr head against the conversion label over
  the clicked impressions (terms ``bce_ctr``, ``bce_cvr``; ``loss.weights`` may weigh ``cvr``,
  its ``ctcvr`` entry is then unused);
* ``L_rel`` (eq. 11): BCE of the relatedness net's ``y_rel_hat = sigmoid(MLP(v^ctr * v^k))``
  (eq. 8-9, ``v`` = the backbone's task outputs) against ``y_rel = 1[y_ctr == y_k]`` (eq. 10);
* ``L_cl`` (eq. 13): :class:`~trainer.losses.contrastive.AdaptiveInfoNCE` of ``h^ctr_r``
  against ``h^k_r`` with in-batch negatives ``h^k_r'`` (of the global batch) and temperature
  ``tau_r = (tauU - tauL)(1 - y_rel_hat_r) + tauL`` (eq. 12); ``h`` is the output of task tower
  layer ``contrast_layer`` (0: the first, Sec. 3.1.4). ``loss.args.cl_reduction``: ``mean``
  (default) averages the row terms, so ``beta`` does not depend on the batch size; ``sum`` sums
  them over the global batch as eq. 6/13 are printed (the same as ``beta`` times the global
  batch size);
* ``||Theta||^2``: sum of squares of the network's trainable weights.

Gradient routing follows Algorithm 1: tau enters L_cl through ``stop_gradient`` and the
relatedness net's input through ``stop_gradient``, so the relatedness parameters learn from
L_rel only and L_rel does not move the task parameters. ``tau_gradient`` and
``relatedness_input_gradient`` turn either stop off.

More than two tasks (Sec. 3.3.4, click / view / conversion): with ``model.tasks: [ctr, cvr,
<task>, ...]`` ``ctr`` (click) is contrasted with each other task, each pair with its own
relatedness net (terms ``rel_<task>``, ``cl_<task>``), and each extra task gets its own BCE
term ``bce_<task>`` (weight 1; over all impressions, or over clicked ones with ``cvr_loss:
clicked``). An extra task's label is ``labels[<task>]`` when the data provides it, else the
per-action label column named by ``loss.args.task_labels`` (``{view: 0}``: the data's action 0;
on the synthetic log action 0 is the most frequent post-click action, the closest thing to
the paper's View). Only this recipe trains extra tasks.

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

from typing import Dict, List, Mapping

import tensorflow as tf

from schemas import checks
from schemas.config import ConfigError, LossConfig
from trainer.layers.aitm import aitm_calibrator
from trainer.layers.common import build_sublayer
from trainer.layers.relatedness import LearnableTemperature, RelatednessNet
from trainer.losses._tensors import safe_mean
from trainer.losses.contrastive import (AdaptiveInfoNCE, representation_mse,
                                        single_negative_contrast)
from trainer.losses.global_batch import num_replicas
from trainer.objectives.base import HIDDEN, REPS, bce, head_labels
from trainer.objectives.esmm import Esmm

ANCHOR = "ctr"
STANDARD_TASKS = ("ctr", "cvr", "ctcvr")
VARIANTS = ("adaptive", "learnable_tau", "fixed_tau", "single_negative", "regression")
CVR_LOSSES = ("esmm", "clicked")
CL_REDUCTIONS = ("mean", "sum")


def task_label(labels, task: str, action_column: int = None) -> tf.Tensor:
    """``[B]`` label of ``task``: the standard heads' (:func:`head_labels`), else
    ``labels[task]``, else column ``action_column`` of the per-action labels."""
    standard = head_labels(labels)
    if task in standard:
        return standard[task]
    if task in labels:
        return tf.cast(tf.reshape(labels[task], [-1]), tf.float32)
    if action_column is None or "actions" not in labels:
        raise ConfigError(f"no label for task {task!r}: the labels hold {sorted(labels)}; name "
                          f"a per-action label column in loss.args.task_labels "
                          f"(e.g. {{{task}: 0}}) on data with per-action labels")
    return tf.cast(labels["actions"][:, action_column], tf.float32)


class AdaFTRObjective(Esmm):
    """ESMM (or eq. 4) terms + AdaFTR's relatedness and contrastive terms (see the module
    docstring)."""

    AUX = ("reps", "hidden")
    WEIGHTED = ("ctr", "ctcvr", "cvr")
    ARGS = {**Esmm.ARGS, "alpha": 1.0, "beta": 0.01, "tau_upper": 1.0, "tau_lower": 0.05,
            "variant": "adaptive", "fixed_tau": 0.05, "initial_tau": 0.5,
            "relatedness_units": [32], "contrast_layer": 0, "l2": 0.0, "tau_gradient": False,
            "relatedness_input_gradient": False, "cvr_loss": "esmm", "cl_reduction": "mean",
            "task_labels": {}}

    def __init__(self, cfg: LossConfig):
        super().__init__(cfg)
        self.variant = self.choice("variant", VARIANTS)
        self.cvr_loss = self.choice("cvr_loss", CVR_LOSSES)
        if self.cvr_loss == "esmm" and "cvr" in self.weights:
            raise ConfigError(f"loss.weights: 'cvr' weighs the BCE term of loss.args.cvr_loss="
                              f"clicked; with esmm the terms are ctr and ctcvr, got "
                              f"{dict(self.weights)}")
        if self.cvr_loss == "clicked" and self.cvr_clicked > 0:
            raise ConfigError(f"loss.args.cvr_clicked adds a clicked-rows cvr term to the ESMM "
                              f"terms; cvr_loss=clicked already trains cvr on clicked rows "
                              f"only, got cvr_clicked={self.cvr_clicked}")
        self.cl_reduction = self.choice("cl_reduction", CL_REDUCTIONS)
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
        self.task_labels = self._task_labels(self.args["task_labels"])
        try:  # validate the layer arguments now, not at build time
            RelatednessNet(self.args["relatedness_units"], self.tau_lower, self.tau_upper)
            if self.variant == "learnable_tau":
                LearnableTemperature(self.args["initial_tau"], self.tau_lower, self.tau_upper)
        except ValueError as e:
            raise ConfigError(f"loss.args: {e}") from e
        # One implementation of eq. 6/13: the Keras loss, per-row terms reduced here.
        self.info_nce = AdaptiveInfoNCE(
            temperature=self.fixed_tau if self.variant == "fixed_tau" else None,
            stop_tau_gradient=(self.variant == "adaptive" and not self.args["tau_gradient"])
            or self.variant == "fixed_tau",
            reduction=tf.keras.losses.Reduction.NONE)
        self.others: List[str] = []
        self.extra_tasks: List[str] = []
        self.relatedness: Dict[str, RelatednessNet] = {}
        self.temperature = None
        self._weights: List[tf.Variable] = []

    @staticmethod
    def _task_labels(value) -> Dict[str, int]:
        if not isinstance(value, Mapping) or any(
                not isinstance(k, str) or k in STANDARD_TASKS or not checks.is_int(v) or v < 0
                for k, v in value.items()):
            raise ConfigError(f"`loss.args.task_labels` must map extra task names (not "
                              f"{list(STANDARD_TASKS)}) to per-action label columns (integers "
                              f">= 0), received: loss.args.task_labels="
                              f"{checks.short_repr(value)}")
        return dict(value)

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
        self.extra_tasks = [t for t in tasks if t not in STANDARD_TASKS]
        unknown = sorted(set(self.task_labels) - set(self.extra_tasks))
        if unknown:
            raise ConfigError(f"loss.args.task_labels names {unknown}, which are not extra "
                              f"tasks of the model (its tasks are {tasks})")
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
        if self.cvr_loss == "esmm":
            names = super().term_names(heads)
        else:
            if "cvr" not in heads:
                raise ConfigError(f"loss.args.cvr_loss=clicked trains the cvr head, the "
                                  f"model's heads are {list(heads)}")
            if self.calibrator > 0 and "ctcvr" not in heads:
                raise ConfigError("loss.args.calibrator needs a ctcvr head, the model's heads "
                                  f"are {list(heads)}")
            names = ["bce_ctr", "bce_cvr"] + (["calibrator"] if self.calibrator > 0 else [])
        names += [f"bce_{task}" for task in self.extra_tasks]
        for task in self.others:
            if self.variant == "adaptive":
                names.append("rel" + self._suffix(task))
            names.append("cl" + self._suffix(task))
        if self.l2 > 0:
            names.append("l2")
        return names

    def _task_terms(self, labels, outputs):
        """L_ctr + L_cvr (ESMM or eq. 4) and the extra tasks' BCE terms."""
        if self.cvr_loss == "esmm":
            terms, rows = super().__call__(labels, outputs), None
        else:
            y = head_labels(labels)
            rows = y["ctr"]  # eq. 4's L_cvr: clicked impressions only
            terms = {"bce_ctr": self.weights.get("ctr", 1.0) * bce(y["ctr"], outputs["ctr"]),
                     "bce_cvr": self.weights.get("cvr", 1.0) * bce(y["cvr"], outputs["cvr"],
                                                                   rows=rows)}
            if self.calibrator > 0:
                terms["calibrator"] = self.calibrator * aitm_calibrator(outputs["ctr"],
                                                                        outputs["ctcvr"])
        for task in self.extra_tasks:
            label = task_label(labels, task, self.task_labels.get(task))
            terms[f"bce_{task}"] = bce(label, outputs[task], rows=rows)
        return terms

    def _contrast(self, anchor, other, task, labels, outputs, terms):
        """L_cl of one task pair as the mean over this replica's rows (and L_rel)."""
        if self.variant in ("single_negative", "regression"):
            fn = single_negative_contrast if self.variant == "single_negative" else \
                representation_mse
            return fn(anchor, other)
        pair = {"anchor": anchor, "positive": other}
        if self.variant == "adaptive":
            net = self.relatedness[task]
            relatedness = net((outputs[REPS][ANCHOR], outputs[REPS][task]))
            y_rel = tf.cast(tf.equal(task_label(labels, ANCHOR),
                                     task_label(labels, task, self.task_labels.get(task))),
                            tf.float32)  # eq. 10
            terms["rel" + self._suffix(task)] = self.alpha * bce(y_rel, relatedness)
            pair["tau"] = net.temperature(relatedness)
        elif self.variant == "learnable_tau":
            pair["tau"] = self.temperature(anchor)
        return safe_mean(self.info_nce(None, pair))

    def __call__(self, labels, outputs):
        terms = self._task_terms(labels, outputs)
        anchor = outputs[HIDDEN][ANCHOR][self.contrast_layer]
        rows = tf.shape(anchor)[0]
        for task in self.others:
            other = outputs[HIDDEN][task][self.contrast_layer]
            cl = self._contrast(anchor, other, task, labels, outputs, terms)
            if self.cl_reduction == "sum":  # the global batch's sum over rows (eq. 6/13)
                cl = cl * tf.cast(rows * num_replicas(), cl.dtype)
            terms["cl" + self._suffix(task)] = self.beta * cl
        if self.l2 > 0:
            terms["l2"] = self.l2 * tf.add_n([tf.reduce_sum(tf.square(w))
                                              for w in self._weights])
        return terms
