"""Dataset adapters: turn a configured data source into validated, normalised CSV splits.

``prepare`` is the single entry point for the TFX pipeline and the fast in-process trainer:

* the adapter (``data_cfg.adapter``: ``synthetic`` or ``ali_ccp``) picks the
  :class:`schemas.features.DatasetSpec`;
* ``data_cfg.path = None`` (synthetic only) generates ``data_cfg.generate_rows`` rows with
  ``data_cfg.seed`` and ``data_cfg.num_actions`` into ``<work_dir>/raw/impressions.csv``;
* a path is a CSV file or a directory. A directory with ``*train*.csv`` and ``*test*.csv``
  files (optionally ``*val*.csv``) is already split: train -> ``train``; with val files
  val -> ``eval`` and test -> ``test``; without, test -> ``eval``. Otherwise all ``*.csv``
  in it (or the single file) form one split ``all`` and ``hash_split`` is True (the
  pipeline splits by hash);
* every input is validated (:mod:`transform.ingest.validate`) and re-written to
  ``<work_dir>/prepared/<split>/<name>.csv`` with exactly ``spec.columns`` in canonical
  order: ground truth (``gt_*``) is dropped, integers are written as integers and dense
  values always with a decimal point (so CsvExampleGen infers INT/FLOAT as the schemas in
  ``schemas/`` say). ``<work_dir>/prepared`` is replaced on every call (idempotent).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import os
import shutil
from typing import Dict, List

import numpy as np
import pandas as pd

from schemas import features
from transform.ingest import csv_io, synthetic, validate

ADAPTERS = ("synthetic", "ali_ccp")
PREPARED_DIR = "prepared"
RAW_DIR = "raw"


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """Normalised CSV splits ready for CsvExampleGen or :func:`load_frames`.

    Attributes:
      spec: Dataset spec of the columns.
      splits: Split name (``train``/``eval``/``test`` or ``all``) -> prepared CSV paths.
      hash_split: True when the data came unsplit (one split ``all``).
      rows: Split name -> rows written (after dropping bad rows).
      stats: Source file -> its validation statistics.
      root: ``<work_dir>/prepared``; split ``s`` lives in ``<root>/<s>/``.
    """

    spec: features.DatasetSpec
    splits: Dict[str, List[str]]
    hash_split: bool
    rows: Dict[str, int]
    stats: Dict[str, validate.ValidationStats]
    root: str

    @property
    def total_stats(self) -> validate.ValidationStats:
        """Statistics summed over every source file."""
        total = validate.ValidationStats()
        for s in self.stats.values():
            total.merge(s)
        return total


def spec_for(data_cfg) -> features.DatasetSpec:
    """The dataset spec of ``data_cfg.adapter`` (synthetic uses ``data_cfg.num_actions``).

    Raises:
      ValueError: Unknown adapter.
    """
    if data_cfg.adapter == "synthetic":
        return features.synthetic_spec(data_cfg.num_actions)
    if data_cfg.adapter == "ali_ccp":
        return features.ali_ccp_spec()
    raise ValueError(f"unknown data adapter {data_cfg.adapter!r}; expected one of "
                     f"{list(ADAPTERS)}")


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatch(name.lower(), pattern)


def find_splits(path: str) -> Dict[str, List[str]]:
    """Source CSVs by split name for a file or directory (see the module docstring).

    Raises:
      FileNotFoundError: ``path`` does not exist, or a directory holds no ``*.csv``.
      ValueError: A pre-split directory has CSVs that match no split or several.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"data path does not exist: {path}")
    if os.path.isfile(path):
        return {"all": [path]}
    names = sorted(n for n in os.listdir(path)
                   if _matches(n, "*.csv") and os.path.isfile(os.path.join(path, n)))
    if not names:
        raise FileNotFoundError(f"no *.csv files in data directory {path}")
    by_role = {role: [n for n in names if _matches(n, f"*{role}*.csv")]
               for role in ("train", "val", "test")}
    if not (by_role["train"] and by_role["test"]):
        return {"all": [os.path.join(path, n) for n in names]}
    for n in names:
        roles = [r for r, files in by_role.items() if n in files]
        if len(roles) != 1:
            raise ValueError(
                f"{os.path.join(path, n)}: in a directory split into train/val/test files each "
                f"*.csv must match exactly one of *train*, *val*, *test*; it matches {roles}")
    if by_role["val"]:
        mapping = {"train": "train", "val": "eval", "test": "test"}
    else:
        mapping = {"train": "train", "test": "eval"}
    return {split: [os.path.join(path, n) for n in by_role[role]]
            for role, split in mapping.items()}


def _prepare_file(source: str, dest: str, spec: features.DatasetSpec,
                  skip_bad_rows: bool) -> validate.ValidationStats:
    stats = validate.ValidationStats()
    chunks = list(validate.iter_valid_chunks(source, spec, skip_bad_rows, stats))
    frame = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(
        {k: np.zeros(0, np.float64 if k in spec.dense_keys else np.int64)
         for k in spec.columns})
    csv_io.write_frame(frame[list(spec.columns)], dest)
    return stats


def prepare(data_cfg, work_dir: str) -> PreparedData:
    """Generates or locates the data, validates it and writes normalised CSV splits.

    Args:
      data_cfg: A :class:`trainer.config.DataConfig` (adapter, path, generate_rows,
        num_actions, seed, skip_bad_rows).
      work_dir: Working directory; ``raw/`` (generated data) and ``prepared/`` go under it.

    Returns:
      The :class:`PreparedData`.

    Raises:
      ValueError: Unknown adapter, or no path for a non-synthetic adapter.
      FileNotFoundError: The path does not exist or its directory has no CSV.
      transform.ingest.validate.DataValidationError: An input file is invalid (the message
        names the file).
    """
    spec = spec_for(data_cfg)
    if data_cfg.path is None:
        if data_cfg.adapter != "synthetic":
            raise ValueError(f"data.path is required for adapter {data_cfg.adapter!r}")
        source = synthetic.write_csv(os.path.join(work_dir, RAW_DIR), data_cfg.generate_rows,
                                     seed=data_cfg.seed, num_actions=data_cfg.num_actions)
        sources = {"all": [source]}
    else:
        sources = find_splits(data_cfg.path)
    hash_split = list(sources) == ["all"]

    root = os.path.join(work_dir, PREPARED_DIR)
    if os.path.isdir(root):
        shutil.rmtree(root)
    splits: Dict[str, List[str]] = {}
    rows: Dict[str, int] = {}
    stats: Dict[str, validate.ValidationStats] = {}
    for split, files in sources.items():
        os.makedirs(os.path.join(root, split), exist_ok=True)
        used = set()
        for source in files:
            name = os.path.splitext(os.path.basename(source))[0]
            while name in used:  # same basename from two places: keep both
                name += "_"
            used.add(name)
            dest = os.path.join(root, split, name + ".csv")
            file_stats = _prepare_file(source, dest, spec, data_cfg.skip_bad_rows)
            stats[source] = file_stats
            splits.setdefault(split, []).append(dest)
            rows[split] = rows.get(split, 0) + file_stats.rows_kept
    return PreparedData(spec=spec, splits=splits, hash_split=hash_split, rows=rows,
                        stats=stats, root=root)


def load_frames(prepared: PreparedData) -> Dict[str, pd.DataFrame]:
    """Reads the prepared splits into memory.

    Args:
      prepared: What :func:`prepare` returned.

    Returns:
      Split name -> frame with ``spec.columns``: int64 for ``spec.integer_keys``, float32
      for dense keys.
    """
    spec = prepared.spec
    dtypes = {k: np.int64 for k in spec.integer_keys}
    dtypes.update({k: np.float32 for k in spec.dense_keys})
    frames = {}
    for split, paths in prepared.splits.items():
        parts = [pd.read_csv(p, dtype=dtypes, usecols=list(spec.columns)) for p in paths]
        frames[split] = pd.concat(parts, ignore_index=True)[list(spec.columns)]
    return frames


def describe_drops(prepared: PreparedData) -> str:
    """One line: rows read and kept, and the rows dropped per reason (``skip_bad_rows``)."""
    total = prepared.total_stats
    line = f"validated {total.rows_read} rows, kept {total.rows_kept}"
    if total.dropped:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(total.dropped.items()))
        line += f", dropped {total.rows_dropped} ({reasons})"
    return line
