"""Multi-gate Mixture-of-Experts (Ma et al., KDD'18), the default multi-task backbone."""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from schemas.checks import (check_bool, check_positive_int, check_positive_number, check_rate,
                            check_tasks, check_units)
from trainer.layers.common import build_sublayer, register
from trainer.layers.experts import ExpertBank
from trainer.layers.gates import SoftmaxGate, batched_gate_weights, mix_expert_major
from trainer.layers.mlp import MLP


@register
class MMoE(tf.keras.layers.Layer):
    """Shared experts mixed by one softmax gate per task (MMoE eq. 5).

    ``f_k(x) = sum_i softmax(W_k x)_i * expert_i(x)``. Input ``[B, F]``; output a dict keyed by
    task name of ``[B, expert_units[-1]]`` mixtures, which the task towers consume. Experts
    are named ``shared/expert_i``, gates ``<task>/gate``.

    With ``fused_experts=True`` the experts are one :class:`~trainer.layers.experts.ExpertBank`
    ``shared/experts`` (stacked kernels ``shared/experts/dense_j/kernel`` ``[E, in, out]``
    replace the ``shared/expert_i/dense_j`` variables; same maths, see
    :func:`~trainer.layers.experts.copy_expert_weights`) and the gates' logits are one matmul.

    Defaults follow MAN Sec. 4.2 (8 experts of hidden sizes [256, 128], ReLU), as for OMoE.

    Args:
      tasks: Task names, e.g. ``["ctr", "cvr"]``.
      num_experts: Number of shared experts.
      expert_units: Hidden sizes of each expert MLP.
      expert_dropout: Dropout inside experts.
      gate_temperature: Softmax temperature of every gate.
      fused_experts: Run the experts as one batched matmul per layer (see above).
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
        self.gates = {t: SoftmaxGate(self.num_experts, self.gate_temperature, name=f"{t}/gate")
                      for t in self.tasks}
        expert_shape = tf.TensorShape([input_shape[0], self.num_experts, self.expert_units[-1]])
        for gate in self.gates.values():
            build_sublayer(gate, (tf.TensorShape(input_shape), expert_shape))
        super().build(input_shape)

    def call(self, inputs, training=None):
        if self.fused_experts:
            experts = self.experts(inputs, training=training)  # [E, B, d]
            weights = batched_gate_weights([self.gates[t] for t in self.tasks], inputs)
            return {t: mix_expert_major(w, [experts]) for t, w in zip(self.tasks, weights)}
        experts = [e(inputs, training=training) for e in self.experts]
        return {t: self.gates[t]((inputs, experts)) for t in self.tasks}

    def get_config(self):
        config = super().get_config()
        config.update({"tasks": list(self.tasks), "num_experts": self.num_experts,
                       "expert_units": list(self.expert_units),
                       "expert_dropout": self.expert_dropout,
                       "gate_temperature": self.gate_temperature,
                       "fused_experts": self.fused_experts})
        return config
