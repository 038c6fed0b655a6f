"""In-process preprocessing for ``funnelrank train``: what tf.Transform does, in NumPy.

Same semantics as ``transform.preprocessing.preprocessing_fn``: vocabularies ordered by
decreasing frequency (ties: decreasing byte order of the value's text), ``NUM_OOV_BUCKETS``
OOV ids after the vocabulary, dense z-scores with population variance (a constant column is
only centred), labels and ADM masks as float32. Fitted on the train split only.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Dict, List

import numpy as np
import pandas as pd

from schemas import features
from transform.preprocessing import NUM_OOV_BUCKETS


@dataclasses.dataclass(frozen=True)
class Preprocessor:
    """Fitted vocabularies and dense statistics.

    Attributes:
      spec: The dataset spec it was fitted for.
      vocabularies: Sparse feature -> vocabulary (value text, most frequent first).
      means, stds: Dense feature -> mean and standard deviation (0 for constant columns).
    """

    spec: features.DatasetSpec
    vocabularies: Dict[str, List[str]]
    means: Dict[str, float]
    stds: Dict[str, float]

    @property
    def vocab_sizes(self) -> Dict[str, int]:
        """Feature -> embedding rows needed (vocabulary plus OOV buckets)."""
        return {k: len(v) + NUM_OOV_BUCKETS for k, v in self.vocabularies.items()}

    def transform(self, frame: pd.DataFrame) -> Dict[str, np.ndarray]:
        """``<key>_xf`` -> ``[N, 1]`` arrays, as the Transform graph would give."""
        out: Dict[str, np.ndarray] = {}
        for key, vocab in self.vocabularies.items():
            index = pd.Index(vocab)
            ids = index.get_indexer(frame[key].astype(str).to_numpy())
            ids = np.where(ids < 0, len(vocab), ids)  # one OOV bucket
            out[features.transformed_name(key)] = ids.astype(np.int64).reshape(-1, 1)
        for key in self.spec.dense_keys:
            x = frame[key].to_numpy(np.float64) - self.means[key]
            if self.stds[key] > 0:
                x = x / self.stds[key]
            out[features.transformed_name(key)] = x.astype(np.float32).reshape(-1, 1)
        for key in self.spec.label_keys + self.spec.adm_keys:
            out[features.transformed_name(key)] = (
                frame[key].to_numpy(np.float32).reshape(-1, 1))
        return out

    def to_json(self) -> str:
        return json.dumps({"spec": features.spec_to_dict(self.spec),
                           "vocabularies": self.vocabularies, "means": self.means,
                           "stds": self.stds})

    @classmethod
    def from_json(cls, text: str) -> "Preprocessor":
        d = json.loads(text)
        return cls(features.spec_from_dict(d["spec"]), d["vocabularies"], d["means"], d["stds"])


def _vocabulary(values: pd.Series) -> List[str]:
    counts = values.astype(str).value_counts(sort=False)
    keys = [k.encode() for k in counts.index]
    order = sorted(range(len(keys)), key=lambda i: (-counts.iloc[i], _neg_bytes(keys[i])))
    return [counts.index[i] for i in order]


def _neg_bytes(b: bytes):
    """Sort key giving decreasing byte order."""
    return tuple(-c for c in b) + (1,)


def fit(frame: pd.DataFrame, spec: features.DatasetSpec) -> Preprocessor:
    """Fits vocabularies and z-score statistics on ``frame`` (the train split)."""
    vocabularies = {k: _vocabulary(frame[k]) for k in spec.sparse_keys}
    means, stds = {}, {}
    for key in spec.dense_keys:
        x = frame[key].to_numpy(np.float64)
        means[key] = float(x.mean())
        stds[key] = float(x.std())
    return Preprocessor(spec, vocabularies, means, stds)
