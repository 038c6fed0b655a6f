"""Shared helpers for layer argument validation and registration."""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

PACKAGE = "funnelrank"


def register(cls):
    """Registers a Keras class under the project's single serialization package."""
    return tf.keras.utils.register_keras_serializable(package=PACKAGE)(cls)


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, received: {name}={value!r}")
    return value


def check_units(name: str, value) -> tuple:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or any(
            isinstance(u, bool) or not isinstance(u, int) or u < 1 for u in value):
        raise ValueError(f"`{name}` must be a non-empty list of positive integers, "
                         f"received: {name}={value!r}")
    return tuple(value)


def check_rate(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be a float in [0, 1), received: {name}={value!r}")
    return float(value)


def check_tasks(name: str, value: Sequence[str]) -> tuple:
    if (not isinstance(value, (list, tuple)) or not value
            or any(not isinstance(t, str) or not t for t in value)
            or len(set(value)) != len(value)):
        raise ValueError(f"`{name}` must be a non-empty list of distinct task names, "
                         f"received: {name}={value!r}")
    return tuple(value)


def build_sublayer(layer: tf.keras.layers.Layer, input_shape) -> None:
    """Builds ``layer`` inside its own name scope so its variables are named after it.

    Building nested layers from a parent's ``build()`` otherwise names every variable after the
    parent only (``mmoe/kernel:0`` for all experts), which makes exported variable lists
    unreadable and checkpoints hard to map.
    """
    if not layer.built:
        with tf.name_scope(layer.name):
            layer.build(input_shape)


def check_positive_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number, received: {name}={value!r}")
    return float(value)


def check_choice(name: str, value, choices: Sequence) -> str:
    if value not in tuple(choices):
        raise ValueError(f"`{name}` must be one of {list(choices)}, received: {name}={value!r}")
    return value


def check_tasks_avoid(name: str, tasks: Sequence[str], reserved: Sequence[str]) -> tuple:
    """Like ``check_tasks``, and no task may take a reserved sub-layer prefix (e.g. ``shared``)."""
    tasks = check_tasks(name, tasks)
    clash = [t for t in tasks if t in tuple(reserved)]
    if clash:
        raise ValueError(f"`{name}` may not contain the reserved name(s) {clash} (used for "
                         f"shared sub-layers), received: {name}={list(tasks)!r}")
    return tasks
