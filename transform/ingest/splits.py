"""Which rows train, validate and evaluate: decided once, when the data is prepared.

``funnelrank train`` and ``funnelrank run`` both read the prepared splits, so they train and
evaluate on the same rows of the same files.

Splits:

* ``train``: the rows the model learns from;
* ``validation``: early stopping and model selection (never reported as the result);
* ``eval``: the held-out rows every reported metric (metrics.json, TFMA) is computed on.

Sources: a single file, or a directory whose files carry no split name, is split by a hash
of each row's values: ``data.eval_percent`` of the rows go to ``eval``, then
``data.validation_percent`` of the rest to ``validation``. A directory whose files are named
``*train*``, ``*val*`` and ``*test*`` keeps them: train -> ``train``, val -> ``validation``,
test -> ``eval``; without val files, ``validation`` is carved from train by hash. Identical
rows always land in the same split.
"""
from __future__ import annotations

import fnmatch
import os
from typing import Dict, List

import numpy as np
import pandas as pd

from schemas.errors import UserError
from transform.ingest.readers import has_extension

TRAIN, VALIDATION, EVAL = "train", "validation", "eval"
SPLITS = (TRAIN, VALIDATION, EVAL)
ALL = "all"
ROLES = {"train": TRAIN, "val": VALIDATION, "test": EVAL}
_SALT = 0x5EED_0F_5A1D


class SplitError(UserError, ValueError):
    """The files of a data directory do not form train/val/test splits."""


def find_sources(path: str, fmt: str) -> Dict[str, List[str]]:
    """Data files by split: ``{"all": [...]}`` (hash split) or ``{"train", "eval"[,
    "validation"]}`` for a directory of named splits.

    Raises:
      FileNotFoundError: ``path`` does not exist, or the directory has no data file.
      SplitError: Named files that do not form splits (a val or train without test, a test
        without train, a file matching no split or several), naming the files.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"data path does not exist: {path}")
    if os.path.isfile(path):
        return {ALL: [path]}
    names = sorted(n for n in os.listdir(path)
                   if has_extension(n, fmt) and os.path.isfile(os.path.join(path, n)))
    if not names:
        raise FileNotFoundError(f"no {fmt} data files in directory {path}")
    roles = {n: [r for r in ROLES if fnmatch.fnmatch(n.lower(), f"*{r}*")] for n in names}
    if not any(roles.values()):
        return {ALL: [os.path.join(path, n) for n in names]}
    unmatched = [n for n, r in roles.items() if len(r) != 1]
    if unmatched:
        raise SplitError(f"{path}: in a directory split into train/val/test files each file "
                         f"must name exactly one of train, val, test; these do not: "
                         f"{[(n, roles[n]) for n in unmatched]}")
    by_split: Dict[str, List[str]] = {}
    for name, (role,) in roles.items():
        by_split.setdefault(ROLES[role], []).append(os.path.join(path, name))
    if TRAIN not in by_split or EVAL not in by_split:
        have = sorted(os.path.basename(p) for files in by_split.values() for p in files)
        raise SplitError(f"{path}: split files need at least one *train* and one *test* file "
                         f"(val is optional); found {have}. Put the files in separate "
                         f"directories or rename them")
    return by_split


def row_hash(frame: pd.DataFrame) -> np.ndarray:
    """uint64 hash of each row's values (the same rows give the same hashes)."""
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def _bucket(hashes: np.ndarray, salt: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        mixed = ((hashes ^ np.uint64(salt)) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(33)
    return mixed % np.uint64(100)


def assign(frame: pd.DataFrame, source_split: str, eval_percent: int,
           validation_percent: int, carve_validation: bool) -> np.ndarray:
    """Split name of every row of a chunk from ``source_split`` (``all`` or a named split).

    Args:
      frame: The typed rows.
      source_split: ``all`` (hash into the three splits) or the split the file named.
      eval_percent: Share (1-99) of ``all`` rows that go to eval.
      validation_percent: Share (1-99) of train rows that go to validation when carved.
      carve_validation: Carve validation from train (no val files).

    Returns:
      Object array of split names.
    """
    out = np.full(len(frame), TRAIN if source_split == ALL else source_split, dtype=object)
    if source_split not in (ALL, TRAIN):
        return out
    hashes = row_hash(frame)
    if source_split == ALL:
        out[_bucket(hashes, 0) < eval_percent] = EVAL
    if carve_validation:
        out[(out == TRAIN) & (_bucket(hashes, _SALT) < validation_percent)] = VALIDATION
    return out
