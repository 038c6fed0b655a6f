"""Fuzzing (hypothesis): CSV ingest and the serving request builder.

CSV: every file is either refused with a DataValidationError naming it, or read into exactly
the rows and values an independent reading of the documented rules gives (which rows are
kept, each kept value, each dropped row's reason, the first bad row's number and column).
Requests: built or refused with a RequestError naming the problem; nothing else escapes; the
builder accepts exactly the rows its contract allows and carries their values unchanged.
"""
import base64
import csv
import io
import json
import math
import re

import numpy as np
import pandas as pd
import tensorflow as tf
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from schemas import config as config_lib
from schemas import features
from serving import client
from transform.ingest import prepare, readers, validate

SPEC = features.DatasetSpec(
    name="fuzz", sparse_keys=("user", "item", "code"), dense_keys=("price",),
    label_keys={"ctr": "click", "cvr": "conversion"}, funnel=True, user_key="user",
    timestamp_key="ts", sparse_dtypes={"user": "int", "item": "string", "code": "auto"})
COLUMNS = list(SPEC.columns)  # click, conversion, user, item, code, price, ts

# ------------------------------------------------------------------ the rules, read directly
INT_TEXT = re.compile(r"\s*[+-]?[0-9]+(\.0*)?\s*")
CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]*)(\.0+)?")
NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
NOT_FINITE_WORDS = {sign + word for sign in ("", "+", "-") for word in ("nan", "inf", "infinity")}
F32_MAX = float(np.finfo(np.float32).max)


def _int(cell):
    """The integer a cell holds (``17.0`` is 17), or None."""
    if not INT_TEXT.fullmatch(cell):
        return None
    value = int(cell.strip().split(".")[0])
    return value if -2 ** 63 <= value < 2 ** 63 else None


def _auto_is_int(cells):
    return all(c == "" or (CANONICAL_INT.fullmatch(c) and _int(c) is not None) for c in cells)


def _cell(cell, key, kind):
    """``(reason or None, typed value)`` of one cell of ``key``."""
    if key in SPEC.dense_keys:
        text = cell.strip()
        if text == "":
            return None, math.nan
        if text.lower() in NOT_FINITE_WORDS:
            return "not_finite", None
        if not NUMBER.fullmatch(text):
            return "not_a_number", None
        x = float(text)
        if not math.isfinite(x) or abs(x) > F32_MAX:
            return "not_finite", None
        return None, np.float32(x)
    if kind == "string":
        if "\n" in cell or "\r" in cell or "\x00" in cell:
            return "line_break", None
        return None, cell or None
    required = key not in SPEC.id_keys  # labels, timestamp
    if not required and cell.strip() == "":
        return None, None
    value = _int(cell)
    return ("not_an_integer", None) if value is None else (None, value)


def expected_rows(rows, kinds):
    """Per row: ``(reason, column, values)``: the first reason of a bad row (the order of
    ``validate.REASONS``) and its column, or ``(None, None, typed values)``."""
    out = []
    for row in rows:
        cells = dict(zip(COLUMNS, row))
        parsed = {k: _cell(cells[k], k, kinds[k]) for k in COLUMNS}
        flags = [(r, k) for k, (r, _) in parsed.items() if r]
        if not flags:
            values = {k: v for k, (_, v) in parsed.items()}
            flags += [("label_not_binary", k) for k in SPEC.label_columns
                      if values[k] not in (0, 1)]
            if values["conversion"] == 1 and values["click"] == 0:
                flags.append(("conversion_without_click", "conversion"))
            if values["ts"] < 0:
                flags.append(("negative_timestamp", "ts"))
        if flags:
            first = min(validate.REASONS.index(r) for r, _ in flags)
            column = next(k for r, k in flags if validate.REASONS.index(r) == first)
            out.append((validate.REASONS[first], column, None))
        else:
            out.append((None, None, {k: v for k, (_, v) in parsed.items()}))
    return out


def ingest(path, skip, chunk_rows):
    """What ``prepare`` does before writing: headers, dtype resolution, typed chunks."""
    data_cfg = config_lib.DataConfig(adapter="csv", path=str(path), skip_bad_rows=skip)
    sources = prepare.check_headers(data_cfg, SPEC)
    spec = prepare.resolve_dtypes(data_cfg, SPEC, sources, chunk_rows)
    chunks = [validate.type_chunk(text, spec, str(path), offset, skip)
              for offset, text in readers.iter_chunks(str(path), "csv", spec.columns,
                                                      chunk_rows)]
    return spec, chunks


# ------------------------------------------------------------------ cells and files
# Any text but NUL (Python's csv writer cannot write it without an escape character).
any_text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                   max_size=8)
junk = st.one_of(
    st.integers(-2 ** 70, 2 ** 70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "nan", "-NaN", "inf", "+Infinity", "1.0", "3.5", "1e39", "1e400",
                     "-1e39", "3.4e38", "x", "True", "0x10", "1,5", '"', "\n", "a\r\nb", "0",
                     "17.", "007", "+5", " 3 ", "1_000", "٣", "１", "\u00a02", ".5", "5.", "-0"]),
    any_text)


def weighted(*choices):
    """One of ``(weight, strategy)`` pairs, drawn in proportion to the weights (hypothesis'
    own ``one_of`` and integer draws favour some branches and the bounds)."""
    index = [i for i, (weight, _) in enumerate(choices) for _ in range(weight)]
    return st.sampled_from(index).flatmap(lambda i: choices[i][1])


def mostly(valid, edges=(), junk_in=12):
    """``valid``; one of the ``edges`` (cells near a rule's boundary) about once in six
    draws and any junk cell once in ``junk_in``."""
    choices = [(junk_in - 1, valid), (1, junk)]
    if edges:
        choices.append(((junk_in - 1) // 4, st.sampled_from(list(edges))))
    return weighted(*choices)


INT_EDGES = ["٣", "１", "17.", "1e3", "0x10", str(2 ** 63), str(-2 ** 63 - 1), " 5 ", "\t7",
             "+0", "1.5", "--1", "0.0", "", "1 2"]
FLOAT_EDGES = ["1e39", "-1e39", "1e400", "3.4028235e38", "3.4028236e38", "nan", "-NaN",
               "inf", "-Infinity", "1_000", "٣", "1,5", ".5", "5.", "-0", " ", "1e-46", "0x1p3"]


# click, conversion: mostly a valid funnel pair (a conversion implies a click)
pairs = st.sampled_from([("0", "0"), ("1", "0"), ("1", "1"), (" 1", "1.0"), ("+1", "0"),
                         ("-0", "0.00"), ("0", "1")])
labels = weighted((11, pairs), (1, st.tuples(junk, junk)))
int_id = mostly(st.one_of(st.integers(-2 ** 63, 2 ** 63 - 1).map(str),
                          st.sampled_from(["", "17.0", "17", "007", str(2 ** 60 + 1), " 5 "])),
                INT_EDGES)
text = st.one_of(any_text, st.sampled_from(["", "a b", "?", "x, y", "Not in universe"]))
code = mostly(st.one_of(st.integers(-2 ** 63, 2 ** 63 - 1).map(str),
                        st.sampled_from(["", "1", "17.0", "02139", str(2 ** 63)])),
              INT_EDGES + ["-0", "0.00", "00"], junk_in=40)
price = mostly(st.one_of(st.floats(width=32, allow_nan=False, allow_infinity=False).map(repr),
                         st.sampled_from(["", "0.5", "-2", " 7 ", "1e-50", "3.4e38"])),
               FLOAT_EDGES)
timestamp = mostly(st.integers(0, 2 ** 62).map(str), INT_EDGES + ["-1"])
CELLS = {"user": int_id, "item": text, "code": code, "price": price, "ts": timestamp}
csv_row = st.builds(lambda pair, cells: {"click": pair[0], "conversion": pair[1], **cells},
                    labels, st.fixed_dictionaries(CELLS))
header = weighted((6, st.permutations(COLUMNS)),
                  (3, st.permutations(COLUMNS + ["extra", "gt_x"])),
                  (1, st.lists(st.sampled_from(COLUMNS + ["extra", ""]), max_size=8)))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(columns=header,
       rows=weighted((1, st.just([])), (19, st.lists(csv_row, min_size=1, max_size=10))),
       skip=st.booleans(), chunk_rows=st.integers(1, 5),
       ragged=weighted((9, st.just([])), (1, st.lists(st.tuples(
           st.integers(0, 9), st.sampled_from([-1, 1])), min_size=1, max_size=1))),
       raw=weighted((9, st.none()), (1, st.binary(max_size=40))))
def test_csv_ingest_keeps_exactly_the_valid_values(tmp_path_factory, columns, rows, skip,
                                                   chunk_rows, ragged, raw):
    path = tmp_path_factory.mktemp("fuzz") / "data.csv"
    lines = [[r.get(c, "1") for c in columns] for r in rows]
    ragged = [(i, d) for i, d in ragged if i < len(lines) and len(columns) > 1]
    for i, delta in ragged:  # one field more or less than the header
        lines[i] = lines[i] + ["9"] if delta > 0 else lines[i][:-1]
    if raw is not None:  # arbitrary bytes, e.g. a binary file given as CSV
        path.write_bytes(raw)
    else:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(columns)
        writer.writerows(lines)
        path.write_bytes(buf.getvalue().encode("utf-8"))
    valid_header = raw is None and sorted(set(columns)) == sorted(columns) and \
        set(COLUMNS) <= set(columns)
    try:
        spec, chunks = ingest(path, skip, chunk_rows)
    except validate.DataValidationError as e:
        message = str(e)
        assert message.startswith(f"{path}: "), message  # every message names the file
        if not valid_header:
            event("refused: header or bytes")
            return
        if not rows:
            assert message.endswith("no data rows (header only)"), message
            return
        if ragged:
            first_ragged = ragged[0][0] + 1
            match = re.match(rf"{re.escape(str(path))}: data row (\d+) \(line \d+\)(.*)",
                             message)
            assert match, message
            if "malformed CSV" in match.group(2):
                assert int(match.group(1)) == first_ragged, message
                event("refused: ragged row")
                return
            assert not skip and int(match.group(1)) < first_ragged, message
            rows = rows[:first_ragged - 1]  # the row error is about a row before it
        kinds = {k: SPEC.dtype(k) for k in COLUMNS}
        kinds["code"] = "int" if _auto_is_int([r["code"] for r in rows]) else "string"
        bad = [(i, reason, column) for i, (reason, column, _) in
               enumerate(expected_rows([[r[c] for c in COLUMNS] for r in rows], kinds))
               if reason]
        assert not skip and bad, message
        i, _, column = bad[0]
        assert message.startswith(f"{path}: data row {i + 1} (line {i + 2}), column "
                                  f"{column!r}: expected "), message
        event("refused: bad row")
        return
    assert valid_header and rows and not ragged, "a file that should be refused was read"
    kinds = {k: SPEC.dtype(k) for k in COLUMNS}
    kinds["code"] = "int" if _auto_is_int([r["code"] for r in rows]) else "string"
    assert spec.sparse_dtypes["code"] == kinds["code"]
    expected = expected_rows([[r[c] for c in COLUMNS] for r in rows], kinds)
    reasons = [reason for reason, _, _ in expected if reason]
    assert skip or not reasons
    dropped = {}
    for reason in reasons:
        dropped[reason] = dropped.get(reason, 0) + 1
    got_dropped = {}
    for chunk in chunks:
        for reason, count in chunk.dropped.items():
            got_dropped[reason] = got_dropped.get(reason, 0) + count
    assert got_dropped == dropped
    assert sum(c.rows_read for c in chunks) == len(rows)
    frame = pd.concat([c.frame for c in chunks], ignore_index=True)
    kept = [values for reason, _, values in expected if reason is None]
    assert len(frame) == len(kept)
    event(f"read: {'some' if kept else 'no'} rows kept, {'some' if reasons else 'none'} dropped")
    for key in COLUMNS:
        got = frame[key].tolist()
        want = [values[key] for values in kept]
        for g, w in zip(got, want):
            if key in SPEC.dense_keys:
                assert (math.isnan(g) and math.isnan(w)) or (
                    np.float32(g) == w and np.signbit(g) == np.signbit(w)), (key, g, w)
            elif w is None:
                assert g is None or g is pd.NA, (key, g)
            elif isinstance(w, str):
                assert isinstance(g, str) and g == w, (key, g, w)
            else:  # an exact integer, never a float that happens to be equal
                assert isinstance(g, (int, np.integer)) and int(g) == w, (key, g, w)


# The request builder: int64 and string ids, float32 values, optional features (None = missing).
REQUEST_SPEC = features.DatasetSpec(
    name="fuzz", sparse_keys=("user", "shop", "city"), dense_keys=("price", "age"),
    label_keys={"ctr": "click"}, sparse_dtypes={"user": "int", "shop": "int", "city": "string"},
    optional_keys=("shop", "city", "age"))
TYPES = client.feature_types_from_spec(REQUEST_SPEC)
OPTIONAL = REQUEST_SPEC.optional_keys
FLOAT32_MAX = float(np.finfo(np.float32).max)

value = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                  st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
                  st.sampled_from(["\ud800", "a\udfff", "Not in universe", "?", "a,b", ""]),
                  st.lists(st.integers(0, 3), max_size=3), st.just(10**400),
                  st.integers(-5, 5).map(np.int64), st.floats(-1, 1).map(np.float32),
                  st.sampled_from([np.float64("nan"), np.float32("inf"), 1e39, FLOAT32_MAX,
                                   -FLOAT32_MAX, 2**63 - 1, -2**63, 2**63]))
legal = {"int64": st.one_of(st.integers(-2**63, 2**63 - 1), st.integers(-5, 5).map(np.int64)),
         "string": st.one_of(st.text(max_size=6), st.integers(-5, 5)),
         "float32": st.one_of(st.floats(-FLOAT32_MAX, FLOAT32_MAX, width=64),
                              st.floats(width=32, allow_nan=False, allow_infinity=False)
                              .map(np.float32), st.integers(-10, 10))}
complete_row = st.fixed_dictionaries(
    {k: st.one_of(legal[kind], legal[kind], value) for k, kind in TYPES.items()},
    optional={"click": value, "other": value})
valid_row = st.fixed_dictionaries(
    {k: st.one_of(legal[kind], st.none()) if k in OPTIONAL else legal[kind]
     for k, kind in TYPES.items()}, optional={"click": value})
row = st.one_of(complete_row, complete_row, complete_row,
                st.dictionaries(st.sampled_from(list(TYPES) + ["click", "other"]), value,
                                max_size=6))


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def _legal(v, kind: str, optional: bool) -> bool:
    """The request builder's contract for one value (written independently of it)."""
    v = _plain(v)
    if v is None:
        return optional
    if isinstance(v, bool):
        return False
    if kind == "int64":
        return isinstance(v, int) and -2**63 <= v < 2**63
    if kind == "string":
        if isinstance(v, int):
            return True
        return isinstance(v, str) and not any(0xD800 <= ord(c) <= 0xDFFF for c in v)
    return isinstance(v, (int, float)) and abs(v) <= FLOAT32_MAX and v == v


def _want(v, kind: str):
    """The value a request must carry for ``v`` (None: missing)."""
    v = _plain(v)
    if v is None:
        return None
    return int(v) if kind == "int64" else str(v) if kind == "string" else float(np.float32(v))


def _example_values(serialized: bytes):
    feats = tf.train.Example.FromString(serialized).features.feature
    out = {}
    for key, kind in TYPES.items():
        if key not in feats:
            out[key] = None
        elif kind == "int64":
            out[key] = list(feats[key].int64_list.value)
        elif kind == "string":
            out[key] = [b.decode("utf-8") for b in feats[key].bytes_list.value]
        else:
            out[key] = list(feats[key].float_list.value)
    return out


def _raw_fill(want, kind):
    return want if want is not None else ("" if kind == "string" else None)


def _check_request_builders(rows, signature):
    """Every builder accepts ``rows`` exactly when the contract allows, and then carries each
    value unchanged (float32-rounded numbers, ids as given, strings as UTF-8, missing optional
    features absent from the example / NaN or "" in predict_raw)."""
    valid = bool(rows) and all(k in r and _legal(r[k], kind, k in OPTIONAL)
                               for r in rows for k, kind in TYPES.items())
    want = [{k: _want(r[k], kind) for k, kind in TYPES.items()} for r in rows] if valid else None
    # predict_raw: no missing int64 id; over REST (JSON) no missing dense value (NaN) either.
    raw_ok = valid and all(w[k] is not None for w in want for k, kind in TYPES.items()
                           if kind == "int64")
    rest_raw_ok = raw_ok and all(w[k] is not None for w in want for k, kind in TYPES.items()
                                 if kind == "float32")

    def attempt(build, should_pass):
        try:
            out = build()
        except client.RequestError as e:
            text = str(e)
            assert not should_pass, f"refused valid rows {rows!r}: {text}"
            assert ("row" in text or "request" in text or "feature" in text) and \
                len(text) < 400, text
            return None
        assert should_pass, f"accepted invalid rows {rows!r}"
        return out

    examples = attempt(lambda: client.serialize_examples(rows, TYPES, OPTIONAL), valid)
    if examples is not None:
        assert [_example_values(e) for e in examples] == [
            {k: None if v is None else [v] for k, v in w.items()} for w in want]
    rest = attempt(lambda: client.rest_examples_payload(rows, TYPES, optional=OPTIONAL), valid)
    if rest is not None:
        json.dumps(rest)
        assert [_example_values(base64.b64decode(i["examples"]["b64"]))
                for i in rest["instances"]] == [_example_values(e) for e in examples]
    payload = attempt(lambda: client.rest_raw_payload(rows, TYPES, optional=OPTIONAL),
                      rest_raw_ok)
    if payload is not None:
        json.dumps(payload, allow_nan=False)
        assert sorted(payload["inputs"]) == sorted(TYPES)
        for key, kind in TYPES.items():
            got = payload["inputs"][key]
            if kind == "float32":  # JSON carries the number; the server reads it as float32
                got = [float(np.float32(v)) for v in got]
            assert got == [_raw_fill(w[key], kind) for w in want], key
    request = attempt(lambda: client.grpc_request(rows, TYPES, "m", signature_name=signature,
                                                  optional=OPTIONAL),
                      raw_ok if signature == "predict_raw" else valid)
    if request is None:
        return
    if signature == "serving_default":
        assert [_example_values(e) for e in tf.make_ndarray(request.inputs["examples"])] == \
            [_example_values(e) for e in examples]
        return
    for key, kind in TYPES.items():
        got = tf.make_ndarray(request.inputs[key]).tolist()
        if kind == "string":
            assert got == [(w[key] or "").encode("utf-8") for w in want]
        elif kind == "float32":
            np.testing.assert_array_equal(
                got, [np.nan if w[key] is None else w[key] for w in want])
        else:
            assert got == [w[key] for w in want]


SIGNATURES = st.sampled_from(["serving_default", "predict_raw"])


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(row, max_size=4), signature=SIGNATURES)
def test_request_builder_accepts_or_names_the_problem(rows, signature):
    _check_request_builders(rows, signature)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(valid_row, min_size=1, max_size=4), signature=SIGNATURES)
def test_request_builder_keeps_the_values_of_valid_rows(rows, signature):
    _check_request_builders(rows, signature)
