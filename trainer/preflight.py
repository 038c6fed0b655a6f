"""Fail fast: the whole experiment checked before any data work.

``schemas.config`` already checked types, roles, tasks vs labels vs recipe. This adds what
needs the trainer's registries: the backbone exists and takes its ``backbone_args``, the loss
recipe takes its ``loss.args`` and weights, and the model's tasks fit the backbone. ``train``,
``run``, ``prepare`` and ``compile-kubeflow`` call :func:`check_experiment` first, so a typo in
``loss.args`` fails in a second, not after ExampleGen, StatisticsGen and Transform.
"""
from __future__ import annotations

from schemas import tasks as tasks_lib
from schemas.config import ConfigError, ExperimentConfig
from trainer.model import BACKBONES, FUNNEL_ONLY
from trainer.objectives import build_objective


def check_experiment(cfg: ExperimentConfig) -> None:
    """Raises :class:`ConfigError` naming the key and value of the first problem."""
    if cfg.model.backbone not in BACKBONES:
        raise ConfigError(f"model.backbone: expected one of {sorted(BACKBONES)}, got "
                          f"{cfg.model.backbone!r}")
    if cfg.model.backbone in FUNNEL_ONLY and not cfg.funnel:
        raise ConfigError(f"model.backbone {cfg.model.backbone!r} models the click -> "
                          f"conversion funnel; it needs a funnel recipe (esmm, pwiser, adaftr, "
                          f"kaml, uncertainty) with tasks ctr and cvr, got loss.name "
                          f"{cfg.loss.name!r} and tasks {list(cfg.tasks)}")
    tasks = list(cfg.tasks)
    if tasks_lib.ACTIONS in tasks:  # the per-action heads exist once the data is known
        tasks = [tasks_lib.CTR] + [tasks_lib.action_head(j) for j in
                                   range(max(len(cfg.data.features.action_labels), 1))]
    try:
        BACKBONES[cfg.model.backbone](tasks=tasks, **dict(cfg.model.backbone_args))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.backbone_args for {cfg.model.backbone!r}: {e}") from None
    build_objective(cfg.loss, cfg.tasks)
