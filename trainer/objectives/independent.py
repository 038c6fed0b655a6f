"""``bce``: independent binary tasks, one BCE term per task over every row.

``L = sum_k w_k * BCE(p_k, y_k)`` with ``w_k = loss.weights[k]`` (default 1), the loss of a
multi-task model whose tasks are unrelated (e.g. income and marital status of the census data)
or of any set of labels the user declares. Terms are named ``bce_<task>``.
"""
from __future__ import annotations

from typing import Sequence

from schemas import checks
from schemas.config import ConfigError, LossConfig
from trainer.objectives.base import Objective, bce


class IndependentBCE(Objective):
    """Mean BCE per task on its own label, weighted by ``loss.weights``."""

    ARGS = {}

    def __init__(self, cfg: LossConfig, tasks: Sequence[str]):
        super().__init__(cfg)
        self.tasks = list(tasks)
        unknown = sorted(set(cfg.weights) - set(self.tasks))
        if unknown:
            raise ConfigError(f"loss.weights: bce weighs the tasks {self.tasks}, got {unknown}")
        self.weights = {t: checks.check_nonneg_number(f"loss.weights.{t}",
                                                      cfg.weights.get(t, 1.0), error=ConfigError)
                        for t in self.tasks}

    def term_names(self, heads):
        return [f"bce_{t}" for t in self.tasks if t in heads]

    def __call__(self, labels, outputs):
        return {f"bce_{t}": self.weights[t] * bce(labels[t], outputs[t])
                for t in self.tasks if t in outputs}
