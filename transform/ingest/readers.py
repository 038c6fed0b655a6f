"""Readers: CSV and Parquet files as chunks of text cells, the one input of validation.

Both formats give the same thing, so one set of rules (:mod:`transform.ingest.validate`) types
every value: a ``pandas.DataFrame`` of ``str`` per chunk, an empty cell (or a Parquet null) as
``""``.

* CSV (Arrow's reader, every cell read as text, nothing turned into a null): a header line,
  comma separated, ``"`` quoting (commas and line breaks inside quotes are kept); a line
  with more or fewer fields than the header is an error, never shifted or padded.
* Parquet (pyarrow, row group by row group): integers printed exactly, floats printed with
  the shortest text that reads back to the same double, booleans as ``1``/``0``, strings as
  they are. tensorflow-io's Parquet reader is not used: validation needs the rows in Python
  with their row numbers, and pyarrow (already a TFX dependency) streams Parquet row groups.
"""
from __future__ import annotations

import csv
import gzip
import os
import zlib
from typing import Iterator, List, Optional, Sequence, Tuple

import pandas as pd

from schemas.checks import short_repr
from transform.ingest.validate import file_error

# What reading a file can raise besides a parse error: I/O, and a .gz that is not gzip or is
# cut short (gzip raises BadGzipFile, an OSError, EOFError, or zlib.error).
UNREADABLE = (OSError, EOFError, zlib.error)

FORMATS = ("csv", "parquet")
EXTENSIONS = {"csv": (".csv", ".csv.gz"), "parquet": (".parquet", ".pq")}
DEFAULT_CHUNK_ROWS = 200_000


def format_of(path: str, adapter: str) -> str:
    """``csv`` or ``parquet`` for a file of an adapter (presets read CSV)."""
    return "parquet" if adapter == "parquet" else "csv"


def has_extension(name: str, fmt: str) -> bool:
    return name.lower().endswith(EXTENSIONS[fmt])


def read_header(path: str, fmt: str) -> List[str]:
    """Column names of a data file.

    Raises:
      DataValidationError: Missing, empty, binary or unreadable file.
    """
    if not os.path.isfile(path):
        raise file_error(path, "file not found")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.ParquetFile(path).schema_arrow.names)
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for bad files
            raise file_error(path, f"not a readable Parquet file ({type(e).__name__}: "
                                   f"{str(e)[:200]})") from None
    with _open(path) as f:
        try:
            header = next(csv.reader(f))
        except StopIteration:
            raise file_error(path, "empty file (expected a header line and data rows)") from None
        except (csv.Error, UnicodeDecodeError) as e:
            raise file_error(path, f"not a UTF-8 text CSV file ({_utf8_where(path, e)})") \
                from None
        except UNREADABLE as e:  # a .gz that is not (or not whole) gzip
            raise file_error(path, f"not a readable gzip file ({type(e).__name__}: "
                                   f"{e})") from None
    return header


def _utf8_where(path: str, error: Exception) -> str:
    """Where a file stops being UTF-8 text: ``line N, byte 0xe9 at position P of the line``
    (the first such line, found by reading the file line by line as bytes; for the error
    message only), else the reader's own message."""
    try:
        with _open(path, binary=True) as f:
            for number, line in enumerate(f, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as bad:
                    return (f"line {number}, byte 0x{line[bad.start]:02x} at position "
                            f"{bad.start} of the line; re-encode the file as UTF-8")
    except UNREADABLE:
        pass
    return str(error)


def line_of_row(path: str, row: int) -> Optional[int]:
    """The line on which data row ``row`` (1-based, the header not counted) of a CSV file
    starts, blank lines skipped as the reader skips them and quoted line breaks followed;
    None for a Parquet file, or a file that cannot be read that far. For error messages:
    it reads the file up to the row."""
    if path.lower().endswith(".parquet"):
        return None
    try:
        with _open(path) as f:
            reader = csv.reader(line.replace("\0", "") for line in f)  # csv refuses NUL
            end, count = 0, -1  # the header is record 0
            for record in reader:
                start, end = end + 1, reader.line_num
                if record:
                    count += 1
                    if count == row:
                        return start
    except UNREADABLE + (csv.Error, UnicodeDecodeError):
        return None
    return None


def describe_row(path: str, row: int) -> str:
    """``data row N (line L)`` for messages: the 1-based data row and, for a CSV file, the
    line it starts on (:func:`line_of_row`)."""
    line = line_of_row(path, row)
    return f"data row {row}" + ("" if line is None else f" (line {line})")


def _open(path: str, binary: bool = False):
    """A data file opened as UTF-8 text (or bytes), through gzip when it ends in ``.gz``."""
    if binary:
        return (gzip.open if path.lower().endswith(".gz") else open)(path, "rb")
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rt", newline="", encoding="utf-8-sig")
    return open(path, newline="", encoding="utf-8-sig")


def iter_chunks(path: str, fmt: str, columns: Sequence[str],
                chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Tuple[int, pd.DataFrame]]:
    """Yields ``(row_offset, text)`` per chunk: ``text`` holds ``columns`` as ``str``.

    Raises:
      DataValidationError: Malformed CSV (e.g. a line with more fields than the header),
        undecodable text, or no data rows.
    """
    reader = _iter_parquet(path, columns, chunk_rows) if fmt == "parquet" else \
        _iter_csv(path, columns, chunk_rows)
    offset = 0
    for text in reader:
        if len(text):
            yield offset, text
            offset += len(text)
    if offset == 0:
        raise file_error(path, "no data rows (header only)")


def _iter_csv(path: str, columns: Sequence[str], chunk_rows: int):
    """Arrow's CSV reader, one thread (so a bad line's number is known), every cell as text.

    A line with more or fewer fields than the header is an error naming the line: pandas'
    reader (used before) silently dropped the extra fields of a line when reading a subset
    of the columns, and filled a short line's last columns with empty cells (missing values).
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    ragged = []

    def on_ragged(row):  # pyarrow.csv.InvalidRow: expected/actual field counts, line, text
        ragged.append(row)
        return "error"

    try:
        with pa.input_stream(path, compression="detect") as stream:
            reader = pa_csv.open_csv(
                stream,
                read_options=pa_csv.ReadOptions(use_threads=False),
                parse_options=pa_csv.ParseOptions(newlines_in_values=True,
                                                  invalid_row_handler=on_ragged),
                convert_options=pa_csv.ConvertOptions(
                    include_columns=list(columns),
                    column_types={c: pa.string() for c in columns},
                    strings_can_be_null=False, quoted_strings_can_be_null=False))
            pending, count = [], 0
            for batch in reader:
                pending.append(batch)
                count += batch.num_rows
                while count >= chunk_rows:
                    table = pa.Table.from_batches(pending)
                    yield _text_frame(table.slice(0, chunk_rows), columns)
                    rest = table.slice(chunk_rows)
                    pending, count = rest.to_batches(), rest.num_rows
            if count:
                yield _text_frame(pa.Table.from_batches(pending), columns)
    except pa.ArrowInvalid as e:
        if ragged:
            row = ragged[0]
            where = ("" if row.number is None else  # Arrow counts records, the header as 1
                     describe_row(path, row.number - 1) + ": ")
            raise file_error(path, f"{where}malformed CSV: expected {row.expected_columns} "
                                   f"fields (as in the header), found {row.actual_columns}: "
                                   f"{short_repr(row.text)}") from None
        if "UTF8" in str(e) or "UTF-8" in str(e):
            raise file_error(path, f"not a UTF-8 text CSV file ({_utf8_where(path, e)})") \
                from None
        raise file_error(path, f"malformed CSV: {e}") from None
    except OSError as e:  # e.g. a gzip file cut short: "Truncated compressed stream"
        raise file_error(path, f"could not be read to its end ({type(e).__name__}: "
                               f"{e})") from None


def _text_frame(table, columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: table.column(c).to_pandas() for c in columns}, dtype=object)


def _parquet_text(column) -> List[str]:
    """Arrow column -> text cells (nulls ''), exact for integers and doubles."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_boolean(column.type):
        column = pc.cast(column, pa.int8())
    if pa.types.is_floating(column.type):
        return ["" if v is None else repr(float(v)) for v in column.to_pylist()]
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return ["" if v is None else v.decode("utf-8") for v in column.to_pylist()]
    text = pc.cast(column, pa.string()) if not pa.types.is_string(column.type) else column
    return text.fill_null("").to_pylist()


def _iter_parquet(path: str, columns: Sequence[str], chunk_rows: int):
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=list(columns)):
            yield pd.DataFrame({name: _parquet_text(batch.column(name)) for name in columns},
                               dtype=object)
    except UnicodeDecodeError as e:
        raise file_error(path, f"a text column is not UTF-8 ({e})") from None
    except Exception as e:  # ArrowInvalid / ArrowNotImplementedError on unsupported types
        if type(e).__module__.startswith("pyarrow"):
            raise file_error(path, f"cannot read the Parquet file ({type(e).__name__}: "
                                   f"{str(e)[:200]})") from None
        raise
