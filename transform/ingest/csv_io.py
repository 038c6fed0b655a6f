"""Fast CSV writing of numeric frames (Arrow's multi-threaded writer, no quoting).

Arrow 10 quotes every text cell; numbers never contain quotes, commas or line breaks, so
the quotes are simply removed from the written bytes.

Float columns always carry a decimal point or exponent (``0.0``, not ``0``), so a float
column never reads back as integers: TFX CsvExampleGen infers column types from the text,
and a dense column that happened to hold only whole numbers would otherwise turn into INT.
"""
from __future__ import annotations

import io
import os

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

_BATCH_ROWS = 200_000


def _float_text(values: pa.Array) -> pa.Array:
    text = pc.cast(values, pa.string())
    has_point = pc.match_substring_regex(text, r"[.eEnN]")  # 0.5, 1e+20, nan, inf
    return pc.if_else(has_point, text, pc.binary_join_element_wise(text, ".0", ""))


def write_frame(frame: pd.DataFrame, path: str) -> str:
    """Writes ``frame`` (numeric columns only) to ``path`` with a plain header line.

    The file is written to ``<path>.tmp`` and renamed, so a reader never sees half a file.

    Args:
      frame: Integer and float columns; the index is not written.
      path: Destination CSV (its directory must exist); overwritten.

    Returns:
      ``path``.
    """
    arrays = []
    for name in frame.columns:
        column = frame[name]
        if column.dtype.kind == "f":
            arrays.append(_float_text(pa.array(column.to_numpy())))
        elif column.dtype.kind in "iub":
            arrays.append(pa.array(column.to_numpy().astype("int64")))
        else:
            raise TypeError(f"column {name!r} has non-numeric dtype {column.dtype}")
    table = pa.Table.from_arrays(arrays, names=[str(c) for c in frame.columns])
    tmp = path + ".tmp"
    options = pa_csv.WriteOptions(include_header=False)
    with open(tmp, "wb") as f:
        f.write((",".join(table.column_names) + "\n").encode())
        for start in range(0, max(table.num_rows, 1), _BATCH_ROWS):
            buffer = io.BytesIO()
            pa_csv.write_csv(table.slice(start, _BATCH_ROWS), buffer, options)
            f.write(buffer.getvalue().replace(b'"', b""))
    os.replace(tmp, path)
    return path
