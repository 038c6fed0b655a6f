"""Keras registration and sub-layer building shared by the layers (argument checks live in
``schemas.checks``, the one checking module of the project)."""
from __future__ import annotations

import tensorflow as tf

PACKAGE = "funnelrank"


def register(cls):
    """Registers a Keras class under the project's single serialization package."""
    return tf.keras.utils.register_keras_serializable(package=PACKAGE)(cls)


def build_sublayer(layer: tf.keras.layers.Layer, input_shape) -> None:
    """Builds ``layer`` inside its own name scope so its variables are named after it.

    Building nested layers from a parent's ``build()`` otherwise names every variable after the
    parent only (``mmoe/kernel:0`` for all experts), which makes exported variable lists
    unreadable and checkpoints hard to map.
    """
    if not layer.built:
        with tf.name_scope(layer.name):
            layer.build(input_shape)


def registered_objects() -> dict:
    """Every class registered so far with :func:`register`, under its registered name
    (``funnelrank>MMoE``) and its class name (``MMoE``): a ``custom_objects`` mapping for
    ``tf.keras.models.load_model``. Only classes whose modules were imported are registered;
    ``funnelrank.layers.custom_objects`` imports all of them first."""
    prefix = PACKAGE + ">"
    objects = {}
    for name, obj in tf.keras.utils.get_custom_objects().items():
        if name.startswith(prefix):
            objects[name] = obj
            objects[name[len(prefix):]] = obj
    return objects
