"""Multi-task Attention Network (MAN; Luo et al.): experts, gates and task attention.

Paper: /work/shared/papers/man_multitask_attention.md, Sec. 3.2 (experts network, multi-task
attention network) and 4.2 (settings). DESIGN.md "Models".
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import tensorflow as tf

from schemas.checks import (check_bool, check_positive_int, check_positive_number, check_rate,
                            check_tasks, check_units)
from trainer.layers.common import build_sublayer, register
from trainer.layers.gates import weighted_sum
from trainer.layers.ple import CGC, SHARED


def adjacent(tasks: Sequence[str], task: str) -> List[str]:
    """``task`` followed by its neighbours in task order (the tasks it exchanges with)."""
    i = list(tasks).index(task)
    return [task] + [tasks[j] for j in (i - 1, i + 1) if 0 <= j < len(tasks)]


@register
class TaskAttention(tf.keras.layers.Layer):
    """Fuses each task's representation with its adjacent tasks' (MAN Sec. 3.2.3).

    For task ``i`` with neighbours ``N(i)`` (the tasks before and after it, in task order),
    ``C_i = sum_{u in {i} + N(i)} softmax_u(q_i . k_u / sqrt(units)) v_u`` with
    ``q_i = W_q x_i``, ``k_u = W_k x_u``, ``v_u = W_v x_u``: the paper's ``C_ij = a_t(x_i ||
    x_j)``, where Q, K and V come from feed-forward projections of the concatenated task
    inputs. Projections are shared by all tasks (sub-layers ``query``, ``key``, ``value``).
    With ``residual`` the output is ``x_i + C_i`` (needs ``units`` = input width).

    Call with a dict task -> ``[B, d]``; returns a dict task -> ``[B, units]``.
    ``attention_weights(inputs)`` gives, per task, the ``[B, 1 + |N(i)|]`` softmax weights in
    the order of :func:`adjacent`.

    Args:
      tasks: Task names in funnel order (e.g. ``["ctr", "cvr"]``).
      units: Width of Q, K, V and of the output.
      residual: Add the task's own input to its fused output.
    """

    def __init__(self, tasks: Sequence[str], units: int = 128, residual: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.tasks = list(check_tasks("tasks", tasks, [SHARED]))
        self.units = check_positive_int("units", units)
        self.residual = bool(residual)

    def build(self, input_shape):
        missing = [t for t in self.tasks if t not in input_shape]
        if missing:
            raise ValueError(f"TaskAttention: input lacks tasks {missing}, received keys "
                             f"{sorted(input_shape)}")
        widths = {tf.TensorShape(input_shape[t])[-1] for t in self.tasks}
        if len(widths) != 1:
            raise ValueError(f"TaskAttention: every task input must have the same width, "
                             f"received {sorted(widths)}")
        width = widths.pop()
        if self.residual and width != self.units:
            raise ValueError(f"TaskAttention: residual needs units == input width {width}, "
                             f"received: units={self.units}")
        self.query, self.key, self.value = [
            tf.keras.layers.Dense(self.units, name=n) for n in ("query", "key", "value")]
        for dense in (self.query, self.key, self.value):
            build_sublayer(dense, tf.TensorShape([None, width]))
        super().build(input_shape)

    def _scores(self, inputs, task):
        members = tf.stack([inputs[u] for u in adjacent(self.tasks, task)], axis=1)  # [B, n, d]
        q = self.query(inputs[task])[:, tf.newaxis, :]
        weights = tf.nn.softmax(tf.reduce_sum(q * self.key(members), axis=-1)
                                / math.sqrt(self.units), axis=1)
        return weights, members

    def attention_weights(self, inputs) -> Dict[str, tf.Tensor]:
        return {t: self._scores(inputs, t)[0] for t in self.tasks}

    def call(self, inputs):
        out = {}
        for task in self.tasks:
            weights, members = self._scores(inputs, task)
            fused = weighted_sum(weights, self.value(members))
            out[task] = inputs[task] + fused if self.residual else fused
        return out

    def get_config(self):
        config = super().get_config()
        config.update({"tasks": list(self.tasks), "units": self.units,
                       "residual": self.residual})
        return config


@register
class MAN(tf.keras.layers.Layer):
    """MAN backbone: shared + task-specific experts with per-task gates, then task attention.

    ``x_k = g^k(x) S^k(x)`` mixes task ``k``'s own experts and the shared experts (MAN Sec.
    3.2.2, the CGC of :mod:`trainer.layers.ple`, sub-layer ``extraction`` with experts
    ``extraction/shared/expert_i`` and ``extraction/<task>/expert_i``); the
    :class:`TaskAttention` (sub-layer ``attention``) then fuses each task's ``x_k`` with its
    adjacent tasks'. The model assembly adds the towers (2-layer ReLU MLP in the paper) and the
    sigmoid heads. ``use_attention=False`` is the "without att" ablation (Table 2): the gate
    mixtures go straight to the towers.

    The attention is a *fusion* layer: with the towers and logits it is what MAN's second
    training stage meta-learns (:meth:`fusion_layers`).

    Defaults follow MAN Sec. 4.2: 4 shared + 4 task-specific experts of [256, 128], ReLU.

    Args:
      tasks: Task names in funnel order.
      num_shared_experts: Shared experts.
      num_task_experts: Experts per task (``expert_per_task``).
      expert_units: Hidden sizes of each expert.
      expert_dropout: Dropout inside experts, in [0, 1).
      gate_temperature: Softmax temperature of the gates (> 0).
      attention_units: Width of the attention output; default ``expert_units[-1]``.
      use_attention: Apply the task attention.
      residual: Residual connection around the attention (needs the default width).
      fused_experts: Fused expert groups in the extraction (:class:`CGC`; variables
        ``extraction/<group>/experts/dense_i/*``).
    """

    def __init__(self, tasks: Sequence[str], num_shared_experts: int = 4,
                 num_task_experts: int = 4, expert_units: Sequence[int] = (256, 128),
                 expert_dropout: float = 0.0, gate_temperature: float = 1.0,
                 attention_units: Optional[int] = None, use_attention: bool = True,
                 residual: bool = False, fused_experts: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.tasks = list(check_tasks("tasks", tasks, [SHARED]))
        self.num_shared_experts = check_positive_int("num_shared_experts", num_shared_experts)
        self.num_task_experts = check_positive_int("num_task_experts", num_task_experts)
        self.expert_units = list(check_units("expert_units", expert_units))
        self.expert_dropout = check_rate("expert_dropout", expert_dropout)
        self.gate_temperature = check_positive_number("gate_temperature", gate_temperature)
        self.attention_units = (self.expert_units[-1] if attention_units is None
                                else check_positive_int("attention_units", attention_units))
        self.use_attention = bool(use_attention)
        self.residual = bool(residual)
        self.fused_experts = check_bool("fused_experts", fused_experts)
        if self.residual and self.attention_units != self.expert_units[-1]:
            raise ValueError(f"`residual` needs attention_units == expert_units[-1] = "
                             f"{self.expert_units[-1]}, received: "
                             f"attention_units={attention_units!r}")

    def build(self, input_shape):
        self.extraction = CGC(self.tasks, self.num_shared_experts, self.num_task_experts,
                              self.expert_units, self.expert_dropout, self.gate_temperature,
                              fused_experts=self.fused_experts, name="extraction")
        build_sublayer(self.extraction, input_shape)
        self.attention = None
        if self.use_attention:
            self.attention = TaskAttention(self.tasks, self.attention_units, self.residual,
                                           name="attention")
            build_sublayer(self.attention, {t: tf.TensorShape([None, self.expert_units[-1]])
                                            for t in self.tasks})
        super().build(input_shape)

    def fusion_layers(self) -> List[tf.keras.layers.Layer]:
        """Layers of this backbone that MAN's meta-learning stage trains (the attention)."""
        return [self.attention] if self.attention is not None else []

    def call(self, inputs, training=None):
        mixed = self.extraction(inputs, training=training)
        return self.attention(mixed) if self.attention is not None else mixed

    def get_config(self):
        config = super().get_config()
        config.update({"tasks": list(self.tasks), "num_shared_experts": self.num_shared_experts,
                       "num_task_experts": self.num_task_experts,
                       "expert_units": list(self.expert_units),
                       "expert_dropout": self.expert_dropout,
                       "gate_temperature": self.gate_temperature,
                       "attention_units": self.attention_units,
                       "use_attention": self.use_attention, "residual": self.residual,
                       "fused_experts": self.fused_experts})
        return config
