"""Process environment that must be in place before TensorFlow is imported.

tensorflow-recommenders and our SavedModel export need the Keras 2 API (tf-keras), which
TensorFlow 2.16 only selects when ``TF_USE_LEGACY_KERAS=1`` is set *before* its first import.
Every top-level package of the project imports this module first.
"""
import os


def ensure_legacy_keras() -> None:
    """Selects tf-keras (Keras 2) for ``tf.keras`` unless the user chose explicitly."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
