"""funnelrank: TFX/Keras pipeline for multi-task CTR/CVR learning. Selects tf-keras on import.

``from funnelrank import layers, losses`` is the public import surface of the Keras building
blocks (see README, "Use the layers and losses in your own Keras model"). They are loaded on
first use: ``import funnelrank`` itself does not import TensorFlow.
"""
import importlib

from schemas._env import ensure_legacy_keras as _ensure_legacy_keras

_ensure_legacy_keras()

_LAZY = ("layers", "losses")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
