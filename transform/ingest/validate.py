"""Streaming validation of impression CSVs against a :class:`schemas.features.DatasetSpec`.

The file is read in pandas chunks (C parser, no NA conversion, so the offending text can be
quoted back), which validates a million rows in a few seconds. Structural problems (missing
or empty file, no header, no data rows, missing, duplicate or unknown columns, ragged lines)
always raise :class:`DataValidationError`. Row problems raise too, naming the first bad row,
unless ``skip_bad_rows`` is set: then bad rows are dropped and counted per reason.

Row checks, in the order used to pick a dropped row's reason (one reason per row):

* ``not_a_number``: a dense value that does not parse as a number (or is empty).
* ``not_finite``: a dense value that is NaN or +-inf.
* ``not_an_integer``: an id, label or timestamp that is not an integer (``"3.0"`` counts
  as the integer 3 and is normalised by the adapters; ``"3.5"``, ``"x"`` or empty do not).
* ``label_not_binary``: a label outside {0, 1}.
* ``conversion_without_click``: the conversion label, or a per-action label, is 1 where the
  click label is 0.
* ``negative_timestamp``: the spec's ``timestamp_key`` is < 0.

Columns named ``gt_*`` (ground truth of the synthetic generator) are allowed and ignored.
Row numbers in messages are 1-based data rows; the line number is that plus one (header),
which holds for files without quoted line breaks.
"""
from __future__ import annotations

import csv
import dataclasses
import os
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import pandas as pd

from schemas import features

REASONS = ("not_a_number", "not_finite", "not_an_integer", "label_not_binary",
           "conversion_without_click", "negative_timestamp")
DEFAULT_CHUNK_ROWS = 200_000


class DataValidationError(ValueError):
    """An input file does not match its dataset spec; the message says where and why."""


@dataclasses.dataclass
class ValidationStats:
    """What validating one or more files found.

    Attributes:
      rows_read: Data rows read (header excluded).
      rows_kept: Rows that passed every check.
      dropped: Reason (see ``REASONS``) -> rows dropped for it (only with ``skip_bad_rows``).
      files: Files validated, in order.
    """

    rows_read: int = 0
    rows_kept: int = 0
    dropped: Dict[str, int] = dataclasses.field(default_factory=dict)
    files: List[str] = dataclasses.field(default_factory=list)

    @property
    def rows_dropped(self) -> int:
        return sum(self.dropped.values())

    def merge(self, other: "ValidationStats") -> "ValidationStats":
        """Adds ``other``'s counts to this one (in place) and returns self."""
        self.rows_read += other.rows_read
        self.rows_kept += other.rows_kept
        for reason, count in other.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + count
        self.files.extend(other.files)
        return self


def _fail(path: str, what: str) -> DataValidationError:
    return DataValidationError(f"{path}: {what}")


def _row_error(path: str, row: int, column: str, expected: str, found: str) -> DataValidationError:
    return DataValidationError(
        f"{path}: data row {row} (line {row + 1}), column {column!r}: expected {expected}, "
        f"found {found}")


def read_header(path: str, spec: features.DatasetSpec) -> List[str]:
    """Checks a file's existence and header against ``spec``; returns the header.

    Raises:
      DataValidationError: Missing/empty file, no header, duplicate, missing or unknown columns.
    """
    if not os.path.isfile(path):
        raise _fail(path, "file not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        try:
            header = next(csv.reader(f))
        except StopIteration:
            raise _fail(path, "empty file (expected a header line and data rows)") from None
        except (csv.Error, UnicodeDecodeError) as e:
            raise _fail(path, f"not a UTF-8 text CSV file ({e})") from None
    if not any(header):
        raise _fail(path, "empty header line (expected a header line and data rows)")
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise _fail(path, f"duplicate column(s) {duplicates}")
    missing = [c for c in spec.columns if c not in header]
    if missing:
        raise _fail(path, f"missing column(s) {missing} required by the {spec.name!r} spec")
    extra = [h for h in header
             if h not in spec.columns and not h.startswith(features.GROUND_TRUTH_PREFIX)]
    if extra:
        raise _fail(path, f"unexpected column(s) {extra}, not in the {spec.name!r} spec and not "
                          f"ground truth ({features.GROUND_TRUTH_PREFIX}*)")
    return header


def _found(raw: pd.Series, i: int) -> str:
    value = raw.iloc[i]
    if isinstance(value, str):
        return repr(value) if value != "" else "an empty value"
    return repr(value.item() if hasattr(value, "item") else value)


def _numeric(raw: pd.Series) -> np.ndarray:
    """Float64 values of a column; NaN where the text is not a number."""
    if raw.dtype.kind in "iuf":
        return raw.to_numpy(np.float64)
    if raw.dtype.kind == "b":  # pandas reads True/False as booleans: not numbers here
        return np.full(len(raw), np.nan)
    return pd.to_numeric(raw.str.strip(), errors="coerce").to_numpy(np.float64)


def _check_chunk(chunk: pd.DataFrame, spec: features.DatasetSpec
                 ) -> Tuple[Dict[str, np.ndarray], List[Tuple[np.ndarray, str, str, str]],
                            np.ndarray]:
    """Parses one chunk; returns (values by column, failed checks, bad-row mask).

    Each failed check is ``(row mask, reason, column, expected)``, in ``REASONS`` order.
    """
    n = len(chunk)
    values: Dict[str, np.ndarray] = {}
    checks: List[Tuple[np.ndarray, str, str, str]] = []
    not_number: List[Tuple[np.ndarray, str, str, str]] = []
    not_finite: List[Tuple[np.ndarray, str, str, str]] = []
    not_int: List[Tuple[np.ndarray, str, str, str]] = []
    integer_keys = spec.integer_keys
    for key in spec.columns:
        raw = chunk[key]
        if key in integer_keys and raw.dtype.kind == "i":
            values[key] = raw.to_numpy(np.int64)
            continue
        x = _numeric(raw)
        if key in spec.dense_keys:
            if raw.dtype.kind not in "iuf":
                nan_text = raw.str.strip().str.lower().isin(["nan", "+nan", "-nan"]).to_numpy()
                bad = np.isnan(x) & ~nan_text
                if bad.any():
                    not_number.append((bad, "not_a_number", key, "a number"))
            else:
                bad = np.zeros(n, dtype=bool)
            nonfinite = ~np.isfinite(x) & ~bad
            if nonfinite.any():
                not_finite.append((nonfinite, "not_finite", key, "a finite number"))
            values[key] = x
        else:
            bad = ~np.isfinite(x) | (np.floor(x) != x) | (np.abs(x) > 2.0 ** 62)
            if bad.any():
                not_int.append((bad, "not_an_integer", key, "an integer"))
            values[key] = np.where(bad, 0, x).astype(np.int64)
    checks.extend(not_number + not_finite + not_int)
    parsed_ok = np.ones(n, dtype=bool)
    for mask, _, key, _ in checks:
        parsed_ok &= ~mask

    for key in spec.label_keys:
        bad = parsed_ok & (values[key] != 0) & (values[key] != 1)
        if bad.any():
            checks.append((bad, "label_not_binary", key, "0 or 1"))
    click = values[spec.click_key]
    for key in (spec.conversion_key,) + spec.action_label_keys:
        bad = parsed_ok & (values[key] == 1) & (click == 0)
        if bad.any():
            checks.append((bad, "conversion_without_click", key,
                           f"0 because {spec.click_key!r} is 0 (conversion implies click)"))
    if spec.timestamp_key is not None and spec.timestamp_key in values:
        bad = parsed_ok & (values[spec.timestamp_key] < 0)
        if bad.any():
            checks.append((bad, "negative_timestamp", spec.timestamp_key, "a timestamp >= 0"))

    bad_rows = np.zeros(n, dtype=bool)
    for mask, *_ in checks:
        bad_rows |= mask
    return values, checks, bad_rows


def iter_valid_chunks(path: str, spec: features.DatasetSpec, skip_bad_rows: bool = False,
                      stats: Optional[ValidationStats] = None,
                      chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Yields the valid rows of ``path`` chunk by chunk, normalised.

    Args:
      path: CSV file with a header line.
      spec: Dataset spec the columns must match.
      skip_bad_rows: Drop and count bad rows instead of raising.
      stats: Updated in place (rows read/kept, drops per reason, the file).
      chunk_rows: Rows per chunk.

    Yields:
      Frames with exactly ``spec.columns`` in canonical order (ground truth dropped): int64
      for ``spec.integer_keys``, float64 for dense keys.

    Raises:
      DataValidationError: Structural problems always; row problems unless ``skip_bad_rows``.
    """
    stats = stats if stats is not None else ValidationStats()
    read_header(path, spec)
    stats.files.append(path)
    row_offset = 0
    try:
        reader = pd.read_csv(path, chunksize=chunk_rows, na_filter=False, low_memory=False)
        for chunk in reader:
            n = len(chunk)
            if n == 0:
                continue
            values, checks, bad_rows = _check_chunk(chunk, spec)
            stats.rows_read += n
            if bad_rows.any() and not skip_bad_rows:
                first = int(np.argmax(bad_rows))
                for mask, _, key, expected in checks:
                    if mask[first]:
                        raise _row_error(path, row_offset + first + 1, key, expected,
                                         _found(chunk[key], first))
            if bad_rows.any():
                assigned = np.zeros(n, dtype=bool)
                for reason in REASONS:
                    mask = np.zeros(n, dtype=bool)
                    for m, r, _, _ in checks:
                        if r == reason:
                            mask |= m
                    mask &= ~assigned
                    count = int(mask.sum())
                    if count:
                        stats.dropped[reason] = stats.dropped.get(reason, 0) + count
                    assigned |= mask
            keep = ~bad_rows
            out = pd.DataFrame({k: v[keep] for k, v in values.items()}, columns=spec.columns)
            stats.rows_kept += int(keep.sum())
            row_offset += n
            yield out
    except pd.errors.EmptyDataError:
        raise _fail(path, "empty file (expected a header line and data rows)") from None
    except pd.errors.ParserError as e:
        raise _fail(path, f"malformed CSV: {e}") from None
    except UnicodeDecodeError as e:
        raise _fail(path, f"not a UTF-8 text CSV file ({e})") from None
    if row_offset == 0:
        raise _fail(path, "no data rows (header only)")


def validate_csv(path: str, spec: features.DatasetSpec, skip_bad_rows: bool = False,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS) -> ValidationStats:
    """Validates ``path`` against ``spec`` without keeping the data.

    Args:
      path: CSV file with a header line.
      spec: Dataset spec the columns must match.
      skip_bad_rows: Count bad rows per reason instead of raising on the first.
      chunk_rows: Rows per chunk.

    Returns:
      The :class:`ValidationStats`.

    Raises:
      DataValidationError: The message names the file, and for row problems the 1-based data
        row, its line number, the column, what was expected and what was found.
    """
    stats = ValidationStats()
    for _ in iter_valid_chunks(path, spec, skip_bad_rows, stats, chunk_rows):
        pass
    return stats
