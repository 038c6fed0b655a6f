"""Row validation and typing of raw data against a :class:`schemas.features.DatasetSpec`.

Readers (:mod:`transform.ingest.readers`) hand over chunks of text cells (CSV as written;
Parquet values printed exactly); this module turns them into typed columns, so every value
is parsed once, by one set of rules, whatever the file format:

* labels (every ``label_keys`` and action label column): ``0`` or ``1``; never missing;
* ``timestamp`` (and an ``ad_task`` column that is not a feature): integers; never missing;
* sparse ``int`` columns: integers parsed as integers (``17`` and ``17.0`` are the id 17;
  ``2**60 + 1`` stays itself, never rounded through a float), within int64; an empty cell is
  a missing value;
* sparse ``string`` columns: the exact UTF-8 text (spaces, ``?``, commas inside quotes are
  kept); an empty cell is a missing value; a line break or a NUL character inside a value
  is refused (tf.Transform's vocabulary files hold one value per line, and NUL stands for the
  missing value in them: ``transform.preprocessing.VOCAB_MISSING``);
* dense columns: numbers that are finite in float32 (``1e39`` overflows float32 and is
  refused, so is ``nan``/``inf`` written out); an empty cell is a missing value.

Row checks, in the order used to pick a dropped row's reason (one reason per row):

* ``not_a_number``: a dense value that does not parse as a number.
* ``not_finite``: a dense value that is NaN, +-inf, or beyond float32's range.
* ``not_an_integer``: a label, timestamp or integer id that is not an integer (or, for
  labels and timestamps, is empty).
* ``line_break``: a categorical value with a line break (or a NUL character).
* ``label_not_binary``: a label outside {0, 1}.
* ``conversion_without_click``: funnel data only: the conversion label, or a per-action label,
  is 1 where the click label is 0.
* ``negative_timestamp``: the timestamp is < 0.

Messages name the file, the 1-based data row and its line (for files without quoted line
breaks), the column, what was expected and the value found (cut to ~80 characters).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import numpy as np
import pandas as pd

from schemas import checks, features
from schemas.errors import UserError

REASONS = ("not_a_number", "not_finite", "not_an_integer", "line_break", "label_not_binary",
           "conversion_without_click", "negative_timestamp")
FLOAT32_MAX = float(np.finfo(np.float32).max)
# ASCII digits only: ``\d`` also matches other scripts' digits ("٣" would be the id 3).
_INT_PATTERN = r"\s*[+-]?[0-9]+(?:\.0*)?\s*"
# Decimal number syntax (what float() reads, less underscores and non-ASCII digits).
_NUMBER_PATTERN = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NOT_FINITE_WORDS = [sign + word for sign in ("", "+", "-") for word in ("nan", "inf", "infinity")]


class DataValidationError(UserError, ValueError):
    """An input file does not match its dataset spec; the message says where and why."""


@dataclasses.dataclass
class ValidationStats:
    """What validating one or more files found.

    Attributes:
      rows_read: Data rows read (header excluded).
      rows_kept: Rows that passed every check.
      dropped: Reason (see ``REASONS``) -> rows dropped for it (only with ``skip_bad_rows``).
      missing: Column -> cells that were empty (missing values of features).
      files: Files validated, in order.
    """

    rows_read: int = 0
    rows_kept: int = 0
    dropped: Dict[str, int] = dataclasses.field(default_factory=dict)
    missing: Dict[str, int] = dataclasses.field(default_factory=dict)
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
        for column, count in other.missing.items():
            self.missing[column] = self.missing.get(column, 0) + count
        self.files.extend(other.files)
        return self


def file_error(path: str, what: str) -> DataValidationError:
    return DataValidationError(f"{path}: {what}")


def row_error(path: str, row: int, column: str, expected: str, found: str
              ) -> DataValidationError:
    """A bad cell: the file, the 1-based data row and (for CSV) the line it starts on."""
    from transform.ingest.readers import describe_row  # readers imports this module

    return DataValidationError(f"{path}: {describe_row(path, row)}, column {column!r}: "
                               f"expected {expected}, found {found}")


def describe_value(text: str) -> str:
    """How a cell is quoted in a message (empty cells named, long ones cut)."""
    return "an empty value" if text == "" else checks.short_repr(text)


def check_header(path: str, header: List[str], spec: features.DatasetSpec,
                 extra_columns: str = "ignore") -> List[str]:
    """Checks a header against ``spec``; returns the columns no role names (ignored unless
    ``extra_columns == "error"``; ground truth ``gt_*`` is never reported).

    Raises:
      DataValidationError: Empty or duplicate names, missing columns, or (``error``) extra ones.
    """
    if not header or not any(header):
        raise file_error(path, "empty header line (expected a header line and data rows)")
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise file_error(path, f"duplicate column(s) {duplicates}")
    missing = [c for c in spec.columns if c not in header]
    if missing:
        raise file_error(path, f"missing column(s) {missing} named in the config "
                               f"(data.features / data.labels); the file has {header[:20]}"
                               f"{' ...' if len(header) > 20 else ''}")
    extra = [h for h in header
             if h not in spec.columns and not h.startswith(features.GROUND_TRUTH_PREFIX)]
    if extra and extra_columns == "error":
        raise file_error(path, f"column(s) {extra} have no role in the config "
                               f"(data.extra_columns: error)")
    return extra


def integer_like(text: pd.Series) -> np.ndarray:
    """Cells that are integers (``17``, ``-3``, ``17.0``) as text."""
    return text.str.fullmatch(_INT_PATTERN).to_numpy(dtype=bool)


def _fits_int64(digits: str) -> bool:
    """Whether integer text fits int64; more than 19 significant digits never does (and is not
    given to ``int``, which refuses text past 4300 digits with a ``ValueError``)."""
    if len(digits.lstrip("+-").lstrip("0")) > 19:
        return False
    return -2 ** 63 <= int(digits) < 2 ** 63


def _parse_ints(text: pd.Series) -> Tuple[np.ndarray, np.ndarray]:
    """``(values int64, ok)``: exact integer parse of text cells (no float round trip)."""
    ok = integer_like(text)
    values = np.zeros(len(text), dtype=np.int64)
    if ok.any():
        digits = text[ok].str.strip().str.replace(r"\.0*$", "", regex=True)
        try:
            values[ok] = digits.to_numpy().astype(np.int64)
        except (OverflowError, ValueError):  # beyond int64 (ValueError: past Python's
            # 4300-digit limit on str -> int): find them one by one
            fits = np.array([_fits_int64(d) for d in digits], dtype=bool)
            where = np.flatnonzero(ok)
            values[where[fits]] = np.array([int(d) for d, f in zip(digits, fits) if f],
                                           np.int64)
            ok[where[~fits]] = False
    return values, ok


def _parse_floats(text: pd.Series) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values float64, not_a_number, not_finite)``; empty cells are NaN and neither.

    Numbers (``_NUMBER_PATTERN``) are parsed correctly rounded by Arrow, about twice as fast
    as ``pandas.to_numeric``, which is off by up to one unit in the last place: it read
    ``3.4028234663852886e+38`` (float32's largest value, as float64 prints it) as beyond it,
    and ``1e400`` as not a number. ``nan``/``inf``/``infinity`` (any case, signed) are not
    finite; anything else is not a number.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    stripped = text.str.strip()
    cells = pa.array(stripped.to_numpy(dtype=object), pa.string())
    is_number = pc.match_substring_regex(cells, f"^{_NUMBER_PATTERN}$").to_numpy(
        zero_copy_only=False)
    values = np.full(len(text), np.nan)
    if is_number.any():
        numbers = pc.filter(cells, pa.array(is_number))
        values[is_number] = pc.cast(pc.replace_substring_regex(numbers, r"^\+", ""),
                                    pa.float64()).to_numpy()
    empty = (stripped == "").to_numpy()
    words = stripped.str.lower().isin(_NOT_FINITE_WORDS).to_numpy()
    not_number = ~is_number & ~empty & ~words
    not_finite = words | (is_number & (~np.isfinite(values) | (np.abs(values) > FLOAT32_MAX)))
    return values, not_number, not_finite


@dataclasses.dataclass
class Chunk:
    """One chunk typed: ``columns`` holds every spec column (kept rows only).

    Int columns are int64 arrays (sparse ints with missing values: pandas ``Int64``), string
    columns object arrays (``None`` = missing), dense columns float32 (NaN = missing).
    """

    frame: pd.DataFrame
    rows_read: int
    dropped: Dict[str, int]
    missing: Dict[str, int]


def type_chunk(text: pd.DataFrame, spec: features.DatasetSpec, path: str, row_offset: int,
               skip_bad_rows: bool) -> Chunk:
    """Validates and types one chunk of text cells.

    Args:
      text: Text cells (``str``; empty string = empty cell) with at least ``spec.columns``.
      spec: The dataset spec; every sparse dtype must be resolved (``int`` or ``string``).
      path: File name for messages.
      row_offset: Data rows of the file before this chunk.
      skip_bad_rows: Drop bad rows (counted per reason) instead of raising on the first.

    Raises:
      DataValidationError: A bad row (unless ``skip_bad_rows``), naming file, row, column,
        the expectation and the value.
    """
    n = len(text)
    checks_: List[Tuple[np.ndarray, str, str, str]] = []  # (rows, reason, column, expected)
    values: Dict[str, object] = {}
    missing: Dict[str, int] = {}
    labels = set(spec.label_columns)
    for key in spec.columns:
        raw = text[key]
        kind = spec.dtype(key)
        if kind == "float":
            x, not_number, not_finite = _parse_floats(raw)
            if not_number.any():
                checks_.append((not_number, "not_a_number", key, "a number"))
            if not_finite.any():
                checks_.append((not_finite, "not_finite",
                                key, "a number finite in float32 (|x| <= 3.4e38)"))
            empty = np.isnan(x) & ~not_number & ~not_finite
            missing[key] = int(empty.sum())
            values[key] = np.where(not_finite | not_number, 0.0, x).astype(np.float32)
        elif kind == features.STRING:
            empty = (raw == "").to_numpy()
            breaks = raw.str.contains(r"[\r\n\x00]", regex=True).to_numpy()
            if breaks.any():
                checks_.append((breaks, "line_break", key,
                                "a value without line breaks or NUL characters"))
            missing[key] = int(empty.sum())
            values[key] = np.where(empty, None, raw.to_numpy(dtype=object))
        elif kind == features.INT:
            ints, ok = _parse_ints(raw)
            empty = (raw.str.strip() == "").to_numpy()
            required = key in labels or key not in spec.id_keys
            bad = ~ok if required else (~ok & ~empty)
            if bad.any():
                checks_.append((bad, "not_an_integer", key, "an integer"))
            if required:
                values[key] = ints
            else:
                missing[key] = int(empty.sum())
                values[key] = pd.array(np.where(empty, 0, ints), dtype="Int64")
                values[key][empty] = pd.NA
        else:
            raise ValueError(f"type_chunk: the dtype of {key!r} is {kind!r}; resolve it first")
    parsed_ok = np.ones(n, dtype=bool)
    for mask, *_ in checks_:
        parsed_ok &= ~mask
    for key in spec.label_columns:
        bad = parsed_ok & (values[key] != 0) & (values[key] != 1)
        if bad.any():
            checks_.append((bad, "label_not_binary", key, "0 or 1"))
    if spec.funnel:
        click = values[spec.click_key]
        for key in (spec.conversion_key,) + spec.action_label_keys:
            bad = parsed_ok & (values[key] == 1) & (click == 0)
            if bad.any():
                checks_.append((bad, "conversion_without_click", key,
                                f"0 because {spec.click_key!r} is 0 (conversion implies click)"))
    if spec.timestamp_key is not None:
        bad = parsed_ok & (np.asarray(values[spec.timestamp_key]) < 0)
        if bad.any():
            checks_.append((bad, "negative_timestamp", spec.timestamp_key, "a timestamp >= 0"))

    bad_rows = np.zeros(n, dtype=bool)
    for mask, *_ in checks_:
        bad_rows |= mask
    dropped: Dict[str, int] = {}
    if bad_rows.any():
        if not skip_bad_rows:
            first = int(np.argmax(bad_rows))
            for mask, _, key, expected in sorted(
                    checks_, key=lambda c: REASONS.index(c[1])):
                if mask[first]:
                    raise row_error(path, row_offset + first + 1, key, expected,
                                    describe_value(str(text[key].iloc[first])))
        assigned = np.zeros(n, dtype=bool)
        for reason in REASONS:
            mask = np.zeros(n, dtype=bool)
            for m, r, _, _ in checks_:
                if r == reason:
                    mask |= m
            mask &= ~assigned
            if mask.any():
                dropped[reason] = int(mask.sum())
            assigned |= mask
    keep = ~bad_rows
    frame = pd.DataFrame({k: (v[keep] if not bad_rows.any() else v[keep])
                          for k, v in values.items()}, columns=list(spec.columns))
    if bad_rows.any():
        missing = {k: int(pd.isna(frame[k]).sum()) for k in missing}
    return Chunk(frame=frame.reset_index(drop=True), rows_read=n, dropped=dropped,
                 missing={k: v for k, v in missing.items() if v})


_CANONICAL_INT = r"-?(?:0|[1-9][0-9]*)(?:\.0+)?"


def sparse_kinds(text: pd.DataFrame, keys) -> Dict[str, bool]:
    """Per sparse column of ``keys``: True when every non-empty cell of ``text`` is a plain
    integer within int64 (used to resolve ``dtype: auto``). Leading zeros (``02139``) or a
    sign (``+5``) make the column a string column: those values are codes, not numbers."""
    out = {}
    for key in keys:
        raw = text[key]
        empty = (raw == "").to_numpy()
        canonical = raw.str.fullmatch(_CANONICAL_INT).to_numpy(dtype=bool)
        if not (canonical | empty).all():
            out[key] = False
            continue
        _, ok = _parse_ints(raw)
        out[key] = bool((ok | empty).all())
    return out
