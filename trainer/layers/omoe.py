"""One-gate Mixture-of-Experts (OMoE; Ma et al., KDD'18, Sec. 4.2 baseline, eq. 4)."""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from schemas.checks import (check_bool, check_positive_int, check_positive_number, check_rate,
                            check_tasks, check_units)
from trainer.layers.common import build_sublayer, register
from trainer.layers.experts import ExpertBank
from trainer.layers.gates import SoftmaxGate, mix_expert_major
from trainer.layers.mlp import MLP


@register
class OMoE(tf.keras.layers.Layer):
    """Shared experts mixed by ONE softmax gate shared by all tasks.

    ``y = sum_i softmax(W x / temperature)_i * expert_i(x)`` (Ma et al. 2018, eq. 4, the
    One-gate MoE baseline; MMoE is the same with one gate per task). Input ``[B, F]``; output a
    dict keyed by task name whose values are the same ``[B, expert_units[-1]]`` mixture, which
    the task towers consume. Experts are named ``shared/expert_i``, the gate ``shared/gate``;
    with ``fused_experts=True`` one :class:`~trainer.layers.experts.ExpertBank`
    ``shared/experts`` (stacked ``[E, in, out]`` kernels) replaces them, with the same maths.

    Defaults follow MAN Sec. 4.2 (8 experts of hidden sizes [256, 128], ReLU).

    Args:
      tasks: Task names, e.g. ``["ctr", "cvr"]``.
      num_experts: Number of shared experts.
      expert_units: Hidden sizes of each expert MLP.
      expert_dropout: Dropout inside experts, in [0, 1).
      gate_temperature: Softmax temperature of the gate (> 0).
      fused_experts: Run the experts as one batched matmul per layer.
    """

    def __init__(self, tasks: Sequence[str], num_experts: int = 8,
                 expert_units: Sequence[int] = (256, 128), expert_dropout: float = 0.0,
                 gate_temperature: float = 1.0, fused_experts: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.tasks = list(check_tasks("tasks", tasks))
        self.num_experts = check_positive_int("num_experts", num_experts)
        self.expert_units = list(check_units("expert_units", expert_units))
        self.expert_dropout = check_rate("expert_dropout", expert_dropout)
        self.gate_temperature = check_positive_number("gate_temperature", gate_temperature)
        self.fused_experts = check_bool("fused_experts", fused_experts)

    def build(self, input_shape):
        if self.fused_experts:
            self.experts = ExpertBank(self.num_experts, self.expert_units,
                                      dropout=self.expert_dropout, name="shared/experts")
            build_sublayer(self.experts, input_shape)
        else:
            self.experts = [MLP(self.expert_units, dropout=self.expert_dropout,
                                name=f"shared/expert_{i}") for i in range(self.num_experts)]
            for expert in self.experts:
                build_sublayer(expert, input_shape)
        self.gate = SoftmaxGate(self.num_experts, self.gate_temperature, name="shared/gate")
        expert_shape = tf.TensorShape([input_shape[0], self.num_experts, self.expert_units[-1]])
        build_sublayer(self.gate, (tf.TensorShape(input_shape), expert_shape))
        super().build(input_shape)

    def call(self, inputs, training=None):
        if self.fused_experts:
            experts = self.experts(inputs, training=training)  # [E, B, d]
            mixture = mix_expert_major(self.gate.gate_weights(inputs), [experts])
        else:
            experts = [e(inputs, training=training) for e in self.experts]
            mixture = self.gate((inputs, experts))
        return {t: tf.identity(mixture) for t in self.tasks}

    def get_config(self):
        config = super().get_config()
        config.update({"tasks": list(self.tasks), "num_experts": self.num_experts,
                       "expert_units": list(self.expert_units),
                       "expert_dropout": self.expert_dropout,
                       "gate_temperature": self.gate_temperature,
                       "fused_experts": self.fused_experts})
        return config
