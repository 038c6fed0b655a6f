"""See README.md. Importing any project package selects Keras 2 (tf-keras) for TensorFlow."""
from schemas._env import ensure_legacy_keras as _ensure_legacy_keras

_ensure_legacy_keras()
