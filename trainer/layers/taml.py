"""TAML: Task Adaptive Multi-Learner network (Liu et al., WWW'23), a KAML Table 2 baseline.

"Task Adaptive Multi-learner Network for Joint CTR and CVR Estimation" (KAML's reference [15]).
The original short paper is not in ``/work/shared/papers``; this follows KAML's description
(Sec. 4.1.2: "TAML further separates task-level experts into general task experts and learner
task experts and utilizes self-distillation losses"; Sec. 5: "a multi-learner network to replace
the single tower, generating scores by fusing outputs from multiple learners") and TAML's
published abstract (a hierarchical task adaptive knowledge representation with experts of
different granularities; multiple learners per task whose predictions are fused; the fused
score teaches every learner by self-distillation). Every choice it leaves open is listed in
:class:`TAML`'s docstring.
"""
from __future__ import annotations

from typing import Dict, Sequence

import tensorflow as tf

from schemas.checks import (check_nonneg_int, check_nonneg_number, check_positive_int,
                            check_positive_number, check_rate, check_tasks, check_units)
from trainer.layers.common import build_sublayer, register
from trainer.layers.gates import SoftmaxGate
from trainer.layers.mlp import MLP

SHARED = "shared"


def fuse_learner_logits(logits: tf.Tensor) -> tf.Tensor:
    """``logit(mean_l sigmoid(z_l))`` of ``[B, L]`` learner logits, as ``[B, 1]``.

    The fused score is the mean of the learners' probabilities (an ensemble); its logit is
    ``log sum_l sigmoid(z_l) - log sum_l sigmoid(-z_l)``, computed with ``logsumexp`` of
    log-sigmoids so that no probability is formed and the value stays finite for any logits.
    """
    return (tf.reduce_logsumexp(tf.math.log_sigmoid(logits), axis=-1, keepdims=True)
            - tf.reduce_logsumexp(tf.math.log_sigmoid(-logits), axis=-1, keepdims=True))


def self_distillation(learner_logits: tf.Tensor, fused_logit: tf.Tensor) -> tf.Tensor:
    """Mean over rows and learners of ``KL(p_fused || p_l)`` for one task.

    ``p_fused = sigmoid(fused_logit)`` is the teacher and enters through ``stop_gradient`` (the
    learners learn from it, not the other way round). KL equals the BCE of the learner against
    the soft target minus the target's entropy: the same gradient as the BCE, but 0 when a
    learner agrees with the ensemble. Mean over an empty batch (a replica without rows) is 0.

    Args:
      learner_logits: ``[B, L]``.
      fused_logit: ``[B, 1]``.
    """
    learner_logits = tf.cast(learner_logits, tf.float32)
    fused_logit = tf.stop_gradient(tf.cast(fused_logit, tf.float32))
    target = tf.sigmoid(fused_logit) + tf.zeros_like(learner_logits)
    cross = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=learner_logits)
    entropy = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=target, logits=fused_logit + tf.zeros_like(learner_logits))
    kl = cross - entropy
    return tf.math.divide_no_nan(tf.reduce_sum(kl), tf.cast(tf.size(kl), tf.float32))


@register
class TAML(tf.keras.layers.Layer):
    """TAML backbone: experts at three granularities, several learners per task, fused.

    Experts: ``num_shared_experts`` shared by all tasks (``shared/expert_i``),
    ``num_task_experts`` general experts per task shared by its learners (``<task>/expert_i``)
    and ``num_learner_experts`` per learner (``<task>/learner_l/expert_i``). Learner ``l`` of
    task ``k`` mixes its own, its task's and the shared experts with its gate
    (``<task>/learner_l/gate``, a softmax gate as in MMoE/PLE), then its tower
    (``<task>/learner_l/tower``, an MLP of ``tower_units``) and logit (``<task>/learner_l/logit``)
    give ``z_{k,l}``. Task ``k``'s score is the mean of its learners' probabilities; the layer
    returns its logit ``logit(mean_l sigmoid(z_{k,l}))`` (:func:`fuse_learner_logits`).

    Self-distillation: the layer adds ``distill_weight * sum_k mean_{l, rows} KL(p_k || p_{k,l})``
    with ``add_loss`` (:func:`self_distillation`; the fused score is the teacher, held fixed).
    ``FunnelModel`` counts layer losses in its ``regularization`` term, compiled Keras models
    add them to the loss; the exported signatures output only the heads.

    Output: dict task -> ``[B, 1]`` fused logit. This backbone OWNS its towers: the model
    assembly adds only its ``<task>/logit`` Dense(1), an affine ``a * z + b`` of the fused logit
    (redundant but harmless; the distillation teacher is the score before it).

    Choices the citing paper leaves open (the original is not available here): the three expert
    granularities are one level deep (no stacking); each learner has its own gate over all the
    experts it may see; fusion is the plain mean of probabilities (not learned weights);
    distillation is KL to the stop-gradient fused score, summed over tasks, averaged over
    learners and rows; no other TAML loss term. Sizes are ours (TAML's are not given).

    Args:
      tasks: Task names; ``shared`` is reserved.
      num_learners: Learners per task L.
      num_shared_experts: Experts shared by all tasks.
      num_task_experts: General experts per task.
      num_learner_experts: Experts per learner.
      expert_units: Hidden sizes of each expert.
      expert_dropout: Dropout inside experts, in [0, 1).
      gate_temperature: Softmax temperature of the gates (> 0).
      tower_units: Hidden sizes of each learner's tower.
      distill_weight: Weight of the self-distillation loss (>= 0; 0 disables it).
    """

    def __init__(self, tasks: Sequence[str], num_learners: int = 2, num_shared_experts: int = 2,
                 num_task_experts: int = 1, num_learner_experts: int = 1,
                 expert_units: Sequence[int] = (256, 128), expert_dropout: float = 0.0,
                 gate_temperature: float = 1.0, tower_units: Sequence[int] = (64,),
                 distill_weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.tasks = list(check_tasks("tasks", tasks, [SHARED]))
        self.num_learners = check_positive_int("num_learners", num_learners)
        self.num_shared_experts = check_nonneg_int("num_shared_experts", num_shared_experts)
        self.num_task_experts = check_nonneg_int("num_task_experts", num_task_experts)
        self.num_learner_experts = check_positive_int("num_learner_experts", num_learner_experts)
        self.expert_units = list(check_units("expert_units", expert_units))
        self.expert_dropout = check_rate("expert_dropout", expert_dropout)
        self.gate_temperature = check_positive_number("gate_temperature", gate_temperature)
        self.tower_units = list(check_units("tower_units", tower_units))
        self.distill_weight = check_nonneg_number("distill_weight", distill_weight)

    def _learners(self):
        """Sub-layer name prefix of every learner, ``<task>/learner_l``."""
        return [f"{t}/learner_{l}" for t in self.tasks for l in range(self.num_learners)]

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        mlp = lambda name: MLP(self.expert_units, dropout=self.expert_dropout, name=name)
        self.shared_experts = [mlp(f"{SHARED}/expert_{i}") for i in range(self.num_shared_experts)]
        self.task_experts = {t: [mlp(f"{t}/expert_{i}") for i in range(self.num_task_experts)]
                             for t in self.tasks}
        self.learner_experts, self.gates, self.towers, self.logits = {}, {}, {}, {}
        seen = self.num_learner_experts + self.num_task_experts + self.num_shared_experts
        # Keyed by the learner's name prefix: checkpointing needs string keys.
        for prefix in self._learners():
            self.learner_experts[prefix] = [mlp(f"{prefix}/expert_{i}")
                                            for i in range(self.num_learner_experts)]
            self.gates[prefix] = SoftmaxGate(seen, self.gate_temperature, name=f"{prefix}/gate")
            self.towers[prefix] = MLP(self.tower_units, name=f"{prefix}/tower")
            self.logits[prefix] = tf.keras.layers.Dense(1, name=f"{prefix}/logit")
        experts = self.shared_experts + [e for es in self.task_experts.values() for e in es] + [
            e for es in self.learner_experts.values() for e in es]
        for expert in experts:
            build_sublayer(expert, shape)
        d = self.expert_units[-1]
        for key in self._learners():
            build_sublayer(self.gates[key], (shape, tf.TensorShape([None, seen, d])))
            build_sublayer(self.towers[key], tf.TensorShape([None, d]))
            build_sublayer(self.logits[key], tf.TensorShape([None, self.tower_units[-1]]))
        super().build(input_shape)

    def learner_logits(self, inputs, training=None) -> Dict[str, tf.Tensor]:
        """Per task the ``[B, L]`` logits of its learners."""
        shared = [e(inputs, training=training) for e in self.shared_experts]
        out = {}
        for t in self.tasks:
            general = [e(inputs, training=training) for e in self.task_experts[t]]
            columns = []
            for l in range(self.num_learners):
                key = f"{t}/learner_{l}"
                own = [e(inputs, training=training) for e in self.learner_experts[key]]
                mixed = self.gates[key]((inputs, own + general + shared))
                tower = self.towers[key](mixed, training=training)
                columns.append(self.logits[key](tower))
            out[t] = tf.concat(columns, axis=-1)
        return out

    def call(self, inputs, training=None):
        learners = self.learner_logits(inputs, training=training)
        fused = {t: fuse_learner_logits(z) for t, z in learners.items()}
        if self.distill_weight > 0:
            # Added on every call, not only in training: a loss added conditionally leaves the
            # functional construction's graph tensor in `model.losses`, which an inference call
            # under tf.function cannot read. The exported signatures do not output it.
            self.add_loss(self.distill_weight * tf.add_n(
                [self_distillation(learners[t], fused[t]) for t in self.tasks]))
        return fused

    def get_config(self):
        config = super().get_config()
        config.update({"tasks": list(self.tasks), "num_learners": self.num_learners,
                       "num_shared_experts": self.num_shared_experts,
                       "num_task_experts": self.num_task_experts,
                       "num_learner_experts": self.num_learner_experts,
                       "expert_units": list(self.expert_units),
                       "expert_dropout": self.expert_dropout,
                       "gate_temperature": self.gate_temperature,
                       "tower_units": list(self.tower_units),
                       "distill_weight": self.distill_weight})
        return config
