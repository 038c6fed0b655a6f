"""funnelrank: TFX/Keras pipeline for multi-task CTR/CVR learning. Selects tf-keras on import."""
from schemas._env import ensure_legacy_keras as _ensure_legacy_keras

_ensure_legacy_keras()
