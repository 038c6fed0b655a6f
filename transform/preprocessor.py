"""In-process preprocessing for ``funnelrank train``: what tf.Transform does, in NumPy.

Same semantics as ``transform.preprocessing.preprocessing_fn`` (a test holds the two equal):
categorical values as text (a missing value is ``""``, an entry of its own), vocabularies
ordered by decreasing frequency (ties: decreasing byte order of the text) keeping values seen
at least ``spec.min_counts`` times, ``NUM_OOV_BUCKETS`` OOV id after the vocabulary, or
FarmHash buckets (``spec.hash_buckets``, the same TF op as Transform); dense z-scores over the
present values with population variance (a constant column is only centred), missing -> 0;
labels and ADM masks as float32. Fitted on the train split only.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Dict, List

import numpy as np
import pandas as pd

from schemas import features
from schemas.errors import UserError
from transform.preprocessing import NUM_OOV_BUCKETS


class PreprocessingError(UserError, ValueError):
    """The train split cannot be preprocessed (e.g. a dense column without a finite mean)."""


def texts(column: pd.Series) -> np.ndarray:
    """Object array of the text of each categorical value (missing -> ``""``)."""
    if column.dtype.name == "Int64":
        out = column.astype(str).to_numpy(dtype=object)
        out[column.isna().to_numpy()] = features.MISSING_TEXT
        return out
    if column.dtype.kind in "iu":
        return column.astype(str).to_numpy(dtype=object)
    values = column.to_numpy(dtype=object).copy()
    values[pd.isna(column).to_numpy()] = features.MISSING_TEXT
    return values


def hash_buckets(text: np.ndarray, buckets: int) -> np.ndarray:
    """FarmHash bucket of each text, exactly as ``tf.strings.to_hash_bucket_fast``."""
    import tensorflow as tf

    return tf.strings.to_hash_bucket_fast(tf.constant(text.astype(str).tolist() or [""])[
        :len(text)], buckets).numpy().astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Preprocessor:
    """Fitted vocabularies and dense statistics.

    Attributes:
      spec: The dataset spec it was fitted for.
      vocabularies: Categorical column -> vocabulary (value text, most frequent first);
        hashed columns have none.
      means, stds: Dense feature -> mean and standard deviation (0 for constant columns).
    """

    spec: features.DatasetSpec
    vocabularies: Dict[str, List[str]]
    means: Dict[str, float]
    stds: Dict[str, float]

    @property
    def vocab_sizes(self) -> Dict[str, int]:
        """Categorical model input -> embedding rows needed (vocabulary plus OOV, or buckets)."""
        sizes = {k: len(v) + NUM_OOV_BUCKETS for k, v in self.vocabularies.items()}
        sizes.update(self.spec.hash_buckets)
        return {k: sizes[k] for k in self.spec.sparse_keys}

    def ids(self, key: str, column: pd.Series) -> np.ndarray:
        """``[N]`` int64 ids of a categorical column."""
        text = texts(column)
        if key in self.spec.hash_buckets:
            return hash_buckets(text, self.spec.hash_buckets[key])
        vocab = self.vocabularies[key]
        index = pd.Index(vocab, dtype=object).get_indexer(text)
        return np.where(index < 0, len(vocab), index).astype(np.int64)

    def transform(self, frame: pd.DataFrame) -> Dict[str, np.ndarray]:
        """``<key>_xf`` -> ``[N, 1]`` arrays, as the Transform graph would give."""
        out: Dict[str, np.ndarray] = {}
        for key in self.spec.id_keys:
            out[features.transformed_name(key)] = self.ids(key, frame[key]).reshape(-1, 1)
        for key in self.spec.dense_keys:
            x = frame[key].to_numpy(np.float64) - self.means[key]
            if self.stds[key] > 0:
                x = x / self.stds[key]
            out[features.transformed_name(key)] = np.nan_to_num(
                x, nan=0.0).astype(np.float32).reshape(-1, 1)
        for key in self.spec.label_columns + self.spec.adm_keys:
            out[features.transformed_name(key)] = (
                frame[key].to_numpy(np.float32).reshape(-1, 1))
        return out

    def to_json(self) -> str:
        return json.dumps({"spec": features.spec_to_dict(self.spec),
                           "vocabularies": self.vocabularies, "means": self.means,
                           "stds": self.stds})

    @classmethod
    def from_json(cls, text: str) -> "Preprocessor":
        """Reads :meth:`to_json`'s text.

        Raises:
          PreprocessingError: Not JSON, or not a preprocessor (truncated file, other JSON).
        """
        try:
            d = json.loads(text)
            pre = cls(features.spec_from_dict(d["spec"]), d["vocabularies"], d["means"],
                      d["stds"])
        except (ValueError, KeyError, TypeError) as e:
            raise PreprocessingError(f"not a preprocessor.json written by funnelrank train "
                                     f"({type(e).__name__}: {str(e)[:120]})") from None
        bad = [k for k in pre.spec.dense_keys
               if not (math.isfinite(pre.means.get(k, math.nan))
                       and math.isfinite(pre.stds.get(k, math.nan)))]
        if bad:
            raise PreprocessingError(f"preprocessor.json: dense feature(s) {bad} have no finite "
                                     f"mean/std")
        return pre


def vocabulary(column: pd.Series, min_count: int = 1) -> List[str]:
    """Texts seen at least ``min_count`` times, by decreasing count (ties: decreasing bytes)."""
    counts = pd.Series(texts(column)).value_counts(sort=False)
    counts = counts[counts >= min_count]
    keys = [str(k).encode() for k in counts.index]
    order = sorted(range(len(keys)), key=lambda i: (-counts.iloc[i], _neg_bytes(keys[i])))
    return [str(counts.index[i]) for i in order]


def _neg_bytes(b: bytes):
    """Sort key giving decreasing byte order."""
    return tuple(-c for c in b) + (1,)


def fit(frame: pd.DataFrame, spec: features.DatasetSpec) -> Preprocessor:
    """Fits vocabularies and z-score statistics on ``frame`` (the train split).

    Raises:
      PreprocessingError: A dense column whose present values have no finite mean or
        standard deviation (every value missing, or values whose sum overflows).
    """
    vocabularies = {k: vocabulary(frame[k], spec.min_counts.get(k, 1))
                    for k in spec.id_keys if k not in spec.hash_buckets}
    means, stds = {}, {}
    for key in spec.dense_keys:
        x = frame[key].to_numpy(np.float64)
        x = x[~np.isnan(x)]
        with np.errstate(all="ignore"):
            mean, std = (float(x.mean()), float(x.std())) if len(x) else (math.nan, math.nan)
        if not (math.isfinite(mean) and math.isfinite(std)):
            raise PreprocessingError(
                f"dense feature {key!r}: the train split gives no finite mean/std (mean={mean}, "
                f"std={std}, {len(x)} present values); check the column's values")
        means[key], stds[key] = mean, std
    return Preprocessor(spec, vocabularies, means, stds)
