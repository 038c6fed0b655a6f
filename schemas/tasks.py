"""Tasks and heads: one vocabulary from the config to the metrics, TFMA and the served outputs.

A *task* is a key of ``data.labels`` (``{task: label column}``) named in ``model.tasks``; each
task gets a tower and a sigmoid head of the same name. The funnel recipes (``esmm``, ``pwiser``,
``adaftr``, ``kaml``, ``uncertainty``) give the click -> conversion funnel its meaning:

* tasks ``ctr`` (label: click) and ``cvr`` (label: conversion, which implies click);
* a derived head ``ctcvr = ctr * cvr`` (ESMM eq. 1), or with tasks ``[ctr, ctcvr]`` (AITM's
  funnel order) a derived ``cvr = ctcvr / ctr``;
* ``cvr`` is scored on clicked impressions only, ``ctcvr`` on all of them;
* ``[ctr, actions]`` (KAML) has one post-click head ``cvr_<j>`` per conversion action.

Any other tasks (``loss.name: bce``) are independent binary tasks, scored on every row.
This module is the only place outside the funnel recipes that spells the funnel's names.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Optional, Sequence, Tuple, Type

CTR, CVR, CTCVR, ACTIONS = "ctr", "cvr", "ctcvr", "actions"
FUNNEL_TASKS = (CTR, CVR, CTCVR, ACTIONS)
FUNNEL_FORMS = ((CTR, CVR), (CTR, CTCVR), (CTR,), (CTR, ACTIONS))
FUNNEL_RECIPES = frozenset({"esmm", "pwiser", "adaftr", "kaml", "uncertainty"})
RECIPES = FUNNEL_RECIPES | {"bce"}
# Names a label key may not take: derived heads and the labels dict's own entries.
RESERVED_TASKS = frozenset({CTCVR, ACTIONS, "user", "adm_mask", "adm_original"})
VALID_TASK = re.compile(r"[a-z][a-z0-9_]{0,63}")


def action_head(action: int) -> str:
    """Name of the per-action conversion head: ``cvr_<action>`` (DESIGN.md)."""
    return f"{CVR}_{action}"


@dataclasses.dataclass(frozen=True)
class Head:
    """One output of the model and how it is scored.

    Attributes:
      name: Output name (``ctr``, ``ctcvr``, ``income`` ...).
      label_tasks: Its label is the product of these tasks' labels (``ctcvr``: ctr * cvr).
      mask_task: Scored only where this task's label is 1 (``cvr``: clicked rows), or None.
    """

    name: str
    label_tasks: Tuple[str, ...]
    mask_task: Optional[str] = None


def is_funnel_labels(labels: Optional[Mapping[str, str]]) -> bool:
    """True when the labels are exactly the funnel's: ``ctr`` and ``cvr``."""
    return bool(labels) and set(labels) == {CTR, CVR}


def heads(tasks: Sequence[str], funnel: bool, num_actions: int = 0) -> Tuple[Head, ...]:
    """The model's heads for ``tasks`` (see the module docstring)."""
    tasks = tuple(tasks)
    if not funnel:
        return tuple(Head(t, (t,)) for t in tasks)
    out = [Head(CTR, (CTR,))]
    if CVR in tasks or CTCVR in tasks:
        out += [Head(CVR, (CVR,), CTR), Head(CTCVR, (CTR, CVR))]
    if ACTIONS in tasks:
        out += [Head(action_head(j), (CVR,), CTR) for j in range(num_actions)]
        out += [Head(CVR, (CVR,), CTR), Head(CTCVR, (CTR, CVR))]
    extra = [t for t in tasks if t not in FUNNEL_TASKS]  # e.g. AdaFTR's third task
    return tuple(out) + tuple(Head(t, (t,)) for t in extra)


def heads_of_outputs(outputs: Sequence[str]) -> Tuple[Head, ...]:
    """The heads of a network, from its output names: the funnel's when it has ``ctr`` and
    ``cvr`` or per-action ``cvr_<j>`` outputs, else one independent head per output."""
    outputs = list(outputs)
    actions = sum(1 for o in outputs if re.fullmatch(r"cvr_\d+", o))
    if CTR in outputs and (CVR in outputs or actions):  # per-action networks have no cvr
        tasks = (CTR, ACTIONS) if actions else (CTR, CVR)
        extra = tuple(o for o in outputs if o not in FUNNEL_TASKS and not
                      re.fullmatch(r"cvr_\d+", o))
        return heads(tasks + extra, True, actions)
    return heads(outputs, False)


def head_names(tasks: Sequence[str], funnel: bool, num_actions: int = 0) -> Tuple[str, ...]:
    return tuple(h.name for h in heads(tasks, funnel, num_actions))


def check_tasks(tasks: Sequence[str], labels: Mapping[str, str], recipe: str,
                has_action_labels: bool, error: Type[Exception] = ValueError,
                recipe_labels: Sequence[str] = ()) -> None:
    """Tasks vs labels vs recipe, as the config states them.

    Extra tasks beside the funnel's (AdaFTR's three-task form, Sec. 3.3.4) are trained by the
    ``adaftr`` recipe only; their labels come from ``data.labels`` or, for ``recipe_labels``,
    from the recipe (``loss.args.task_labels``: a per-action label column).

    Raises:
      error: Unknown recipe, a task without a label, duplicate tasks, a funnel recipe without
        the funnel's tasks, extra tasks with another recipe than adaftr, or per-action heads
        without per-action labels.
    """
    if recipe not in RECIPES:
        raise error(f"loss.name: expected one of {sorted(RECIPES)}, got {recipe!r}")
    if not tasks:
        raise error("model.tasks: expected at least one task")
    if len(set(tasks)) != len(tasks):
        raise error(f"model.tasks: duplicate task names in {list(tasks)}")
    if recipe in FUNNEL_RECIPES:
        missing = [t for t in (CTR, CVR) if t not in labels]
        if missing:
            raise error(f"loss.name {recipe!r} is a click -> conversion funnel recipe: it needs "
                        f"data.labels with tasks 'ctr' (click) and 'cvr' (conversion), e.g. "
                        f"labels: {{ctr: click, cvr: purchase}}; got labels {dict(labels)}. "
                        f"For independent tasks use loss.name: bce")
        core = tuple(t for t in tasks if t in FUNNEL_TASKS)
        if core not in FUNNEL_FORMS:
            raise error(f"model.tasks: loss {recipe!r} needs one of "
                        f"{[list(f) for f in FUNNEL_FORMS]} (plus extra labelled tasks), got "
                        f"{list(tasks)}")
        if ACTIONS in tasks and not has_action_labels:
            raise error("model.tasks [ctr, actions] needs data.features.action_labels (one 0/1 "
                        "column per conversion action)")
        extra = [t for t in tasks if t not in FUNNEL_TASKS]
        bad = [t for t in extra if not isinstance(t, str) or not VALID_TASK.fullmatch(t)
               or t in RESERVED_TASKS or re.fullmatch(r"cvr_\d+", t)]
        if bad:
            raise error(f"model.tasks: extra task names are lowercase identifiers, not "
                        f"{sorted(RESERVED_TASKS)} or cvr_<j>; got {list(tasks)}")
        if extra and recipe != "adaftr":
            raise error(f"model.tasks {list(tasks)}: only loss.name adaftr trains extra tasks "
                        f"beside the funnel's, got loss.name {recipe!r}")
        unknown = [t for t in extra if t not in labels and t not in recipe_labels]
    else:
        derived = [t for t in tasks if t in (CTCVR, ACTIONS)]
        if derived:
            raise error(f"model.tasks: {derived} are funnel heads derived from ctr and cvr; "
                        f"loss.name {recipe!r} trains independent tasks, use a funnel recipe "
                        f"(esmm, ...) or list label keys only")
        unknown = [t for t in tasks if t not in labels]
    if unknown:
        raise error(f"model.tasks: {unknown} have no label column; data.labels defines "
                    f"{sorted(labels)}")
