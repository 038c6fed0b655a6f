"""Customized Gate Control (CGC) and Progressive Layered Extraction (PLE).

Tang, Liu, Zhao, Gong, "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning
(MTL) Model for Personalized Recommendations", RecSys'20.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import tensorflow as tf

from schemas.checks import (check_bool, check_positive_int, check_positive_number, check_rate,
                            check_tasks, check_units)
from trainer.layers.common import build_sublayer, register
from trainer.layers.experts import ExpertBank
from trainer.layers.gates import SoftmaxGate, batched_gate_weights, mix_expert_major
from trainer.layers.mlp import MLP

SHARED = "shared"


@register
class CGC(tf.keras.layers.Layer):
    """One extraction level: shared experts, task-specific experts and per-task gates.

    For task ``k`` (PLE eq. 5-7)::

        S^k(x) = [E_(k,1)(x), ..., E_(k,m_k)(x), E_(s,1)(x), ..., E_(s,m_s)(x)]
        g^k(x) = softmax(W_g^k x / temperature) S^k(x)

    With ``shared_gate=True`` (every PLE level but the last) a shared gate additionally mixes
    ALL experts (each task's, in task order, then the shared ones) into ``g^s``, the input of
    the next level's shared experts.

    Input: ``[B, F]`` (the same input for every expert and gate) or, inside PLE, a dict with one
    ``[B, F]`` tensor per task plus ``"shared"``: task ``k``'s experts and gate read ``x[k]``,
    the shared experts and shared gate read ``x["shared"]`` (PLE eq. 8). Output: dict task ->
    ``[B, expert_units[-1]]``, plus ``"shared"`` when ``shared_gate`` is set. Experts are named
    ``shared/expert_i`` and ``<task>/expert_i``, gates ``<task>/gate`` and ``shared/gate``; a
    task may therefore not be called ``shared``.

    With ``fused_experts=True`` each group of experts (the shared ones, each task's own) is one
    :class:`~trainer.layers.experts.ExpertBank`, ``shared/experts`` and ``<task>/experts``,
    whose stacked ``[m, in, out]`` kernels replace the ``<group>/expert_i`` variables (same
    maths; :func:`~trainer.layers.experts.copy_expert_weights` converts), and the gates that
    read the same input compute their logits in one matmul.

    Defaults follow MAN Sec. 4.2 (4 shared + 4 task-specific experts of [256, 128], ReLU).

    Args:
      tasks: Task names, e.g. ``["ctr", "cvr"]``.
      num_shared_experts: Number of shared experts ``m_s``.
      num_task_experts: Number of experts per task ``m_k``.
      expert_units: Hidden sizes of each expert MLP.
      expert_dropout: Dropout inside experts, in [0, 1).
      gate_temperature: Softmax temperature of every gate (> 0).
      shared_gate: Also output the shared gate's mixture under ``"shared"``.
      fused_experts: Run each expert group as one batched matmul per layer (see above).
    """

    def __init__(self, tasks: Sequence[str], num_shared_experts: int = 4,
                 num_task_experts: int = 4, expert_units: Sequence[int] = (256, 128),
                 expert_dropout: float = 0.0, gate_temperature: float = 1.0,
                 shared_gate: bool = False, fused_experts: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.tasks = list(check_tasks("tasks", tasks, [SHARED]))
        self.num_shared_experts = check_positive_int("num_shared_experts", num_shared_experts)
        self.num_task_experts = check_positive_int("num_task_experts", num_task_experts)
        self.expert_units = list(check_units("expert_units", expert_units))
        self.expert_dropout = check_rate("expert_dropout", expert_dropout)
        self.gate_temperature = check_positive_number("gate_temperature", gate_temperature)
        self.shared_gate = bool(shared_gate)
        self.fused_experts = check_bool("fused_experts", fused_experts)

    def _input_shapes(self, input_shape):
        if isinstance(input_shape, Mapping):
            missing = [k for k in self.tasks + [SHARED] if k not in input_shape]
            if missing:
                raise ValueError(f"{type(self).__name__}: dict input lacks {missing}, "
                                 f"received keys {sorted(input_shape)}")
            return {k: tf.TensorShape(input_shape[k]) for k in self.tasks + [SHARED]}
        return {k: tf.TensorShape(input_shape) for k in self.tasks + [SHARED]}

    def build(self, input_shape):
        shapes = self._input_shapes(input_shape)
        per_task = self.num_task_experts + self.num_shared_experts
        self.gates = {t: SoftmaxGate(per_task, self.gate_temperature, name=f"{t}/gate")
                      for t in self.tasks}
        d = self.expert_units[-1]
        if self.fused_experts:
            bank = lambda n, name: ExpertBank(n, self.expert_units, dropout=self.expert_dropout,
                                              name=name)
            self.shared_experts = bank(self.num_shared_experts, f"{SHARED}/experts")
            self.task_experts = {t: bank(self.num_task_experts, f"{t}/experts")
                                 for t in self.tasks}
            build_sublayer(self.shared_experts, shapes[SHARED])
        else:
            mlp = lambda name: MLP(self.expert_units, dropout=self.expert_dropout, name=name)
            self.shared_experts = [mlp(f"{SHARED}/expert_{i}")
                                   for i in range(self.num_shared_experts)]
            self.task_experts = {t: [mlp(f"{t}/expert_{i}")
                                     for i in range(self.num_task_experts)]
                                 for t in self.tasks}
            for expert in self.shared_experts:
                build_sublayer(expert, shapes[SHARED])
        for t in self.tasks:
            if self.fused_experts:
                build_sublayer(self.task_experts[t], shapes[t])
            else:
                for expert in self.task_experts[t]:
                    build_sublayer(expert, shapes[t])
            build_sublayer(self.gates[t], (shapes[t], tf.TensorShape([None, per_task, d])))
        if self.shared_gate:
            total = self.num_task_experts * len(self.tasks) + self.num_shared_experts
            self.gates[SHARED] = SoftmaxGate(total, self.gate_temperature, name=f"{SHARED}/gate")
            build_sublayer(self.gates[SHARED], (shapes[SHARED], tf.TensorShape([None, total, d])))
        super().build(input_shape)

    def call(self, inputs, training=None):
        if isinstance(inputs, Mapping):
            x = dict(inputs)
        else:
            x = {k: inputs for k in self.tasks + [SHARED]}
        if self.fused_experts:
            return self._call_fused(x, shared_input=not isinstance(inputs, Mapping),
                                    training=training)
        shared = [e(x[SHARED], training=training) for e in self.shared_experts]
        own = {t: [e(x[t], training=training) for e in self.task_experts[t]] for t in self.tasks}
        out = {t: self.gates[t]((x[t], own[t] + shared)) for t in self.tasks}
        if self.shared_gate:
            everything = [h for t in self.tasks for h in own[t]] + shared
            out[SHARED] = self.gates[SHARED]((x[SHARED], everything))
        return out

    def _call_fused(self, x, shared_input: bool, training=None):
        # Expert-major [m, B, d] groups; each gate mixes its groups without concatenating them.
        shared = self.shared_experts(x[SHARED], training=training)
        own = {t: self.task_experts[t](x[t], training=training) for t in self.tasks}
        names = self.tasks + ([SHARED] if self.shared_gate else [])
        if shared_input:  # every gate reads the same input: one matmul for all their logits
            weights = dict(zip(names, batched_gate_weights([self.gates[k] for k in names],
                                                           x[SHARED])))
        else:
            weights = {k: self.gates[k].gate_weights(x[k]) for k in names}
        out = {t: mix_expert_major(weights[t], [own[t], shared]) for t in self.tasks}
        if self.shared_gate:
            out[SHARED] = mix_expert_major(weights[SHARED],
                                           [own[t] for t in self.tasks] + [shared])
        return out

    def get_config(self):
        config = super().get_config()
        config.update({"tasks": list(self.tasks), "num_shared_experts": self.num_shared_experts,
                       "num_task_experts": self.num_task_experts,
                       "expert_units": list(self.expert_units),
                       "expert_dropout": self.expert_dropout,
                       "gate_temperature": self.gate_temperature,
                       "shared_gate": self.shared_gate, "fused_experts": self.fused_experts})
        return config


@register
class PLE(tf.keras.layers.Layer):
    """Progressive Layered Extraction: ``num_levels`` stacked CGC levels (PLE eq. 8-9).

    Level ``j`` computes ``g^{k,j}(x) = w^{k,j}(g^{k,j-1}(x)) S^{k,j}(x)``: task ``k``'s experts
    and gate read the task's previous-level mixture, the shared experts (and the shared gate)
    read the shared gate's previous-level mixture. Every level but the last has a shared gate
    over all experts; the last level only has the task gates, whose outputs ``g^{k,N}`` are
    returned as a dict task -> ``[B, expert_units[-1]]`` for the towers. The first level reads
    the input ``[B, F]`` everywhere. Levels are named ``level_j`` (experts
    ``level_j/shared/expert_i`` and ``level_j/<task>/expert_i``). With ``num_levels=1`` this is
    structurally a CGC. Every level uses the same expert configuration.

    Defaults follow MAN Sec. 4.2 (4 shared + 4 task-specific experts of [256, 128]); two levels
    as in the PLE paper's multi-level experiments.

    Args:
      tasks: Task names, e.g. ``["ctr", "cvr"]``; ``shared`` is reserved.
      num_levels: Number of extraction levels N.
      num_shared_experts: Shared experts per level.
      num_task_experts: Experts per task per level.
      expert_units: Hidden sizes of each expert MLP.
      expert_dropout: Dropout inside experts, in [0, 1).
      gate_temperature: Softmax temperature of every gate (> 0).
      fused_experts: Fused expert groups in every level (:class:`CGC`; variables
        ``level_j/<group>/experts/dense_i/*``).
    """

    def __init__(self, tasks: Sequence[str], num_levels: int = 2, num_shared_experts: int = 4,
                 num_task_experts: int = 4, expert_units: Sequence[int] = (256, 128),
                 expert_dropout: float = 0.0, gate_temperature: float = 1.0,
                 fused_experts: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.tasks = list(check_tasks("tasks", tasks, [SHARED]))
        self.num_levels = check_positive_int("num_levels", num_levels)
        self.num_shared_experts = check_positive_int("num_shared_experts", num_shared_experts)
        self.num_task_experts = check_positive_int("num_task_experts", num_task_experts)
        self.expert_units = list(check_units("expert_units", expert_units))
        self.expert_dropout = check_rate("expert_dropout", expert_dropout)
        self.gate_temperature = check_positive_number("gate_temperature", gate_temperature)
        self.fused_experts = check_bool("fused_experts", fused_experts)

    def build(self, input_shape):
        self.levels = [CGC(self.tasks, self.num_shared_experts, self.num_task_experts,
                           self.expert_units, self.expert_dropout, self.gate_temperature,
                           shared_gate=j < self.num_levels - 1,
                           fused_experts=self.fused_experts, name=f"level_{j}")
                       for j in range(self.num_levels)]
        shape = tf.TensorShape(input_shape)
        for level in self.levels:
            build_sublayer(level, shape)
            shape = {k: tf.TensorShape([None, self.expert_units[-1]])
                     for k in self.tasks + [SHARED]}
        super().build(input_shape)

    def call(self, inputs, training=None):
        x = inputs
        for level in self.levels:
            x = level(x, training=training)
        return {t: x[t] for t in self.tasks}

    def get_config(self):
        config = super().get_config()
        config.update({"tasks": list(self.tasks), "num_levels": self.num_levels,
                       "num_shared_experts": self.num_shared_experts,
                       "num_task_experts": self.num_task_experts,
                       "expert_units": list(self.expert_units),
                       "expert_dropout": self.expert_dropout,
                       "gate_temperature": self.gate_temperature,
                       "fused_experts": self.fused_experts})
        return config
