"""Fuzzing (hypothesis): the CSV validator and the serving request builder either accept the
input or fail with their own error naming the problem; nothing else ever escapes. The request
builder accepts exactly the rows its contract allows and carries their values unchanged."""
import base64
import csv
import io
import json

import numpy as np
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import features
from serving import client
from transform.ingest import validate

SPEC = features.DatasetSpec(name="fuzz", sparse_keys=("user", "item"), dense_keys=("price",),
                            label_keys={"ctr": "click", "cvr": "conversion"}, funnel=True,
                            user_key="user", timestamp_key="ts")

cell = st.one_of(
    st.integers(-3, 3).map(str), st.integers(-2**70, 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "1.0", "3.5", "1e400", "x", "True",
                     "0x10", "1,5", '"', "\n", "0"]),
    st.text(max_size=6))
header = st.one_of(
    st.just(list(SPEC.columns)),
    st.permutations(list(SPEC.columns)),
    st.lists(st.sampled_from(list(SPEC.columns) + ["extra", "gt_x", ""]), max_size=8))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(columns=header, rows=st.lists(st.lists(cell, min_size=0, max_size=9), max_size=12),
       skip=st.booleans(), raw=st.one_of(st.none(), st.binary(max_size=40)))
def test_csv_validation_accepts_or_names_the_problem(tmp_path_factory, columns, rows, skip, raw):
    path = tmp_path_factory.mktemp("fuzz") / "data.csv"
    if raw is not None:  # arbitrary bytes, e.g. a binary file given as CSV
        path.write_bytes(raw)
    else:
        buf = io.StringIO()
        writer = csv.writer(buf, escapechar="\\")
        writer.writerow(columns)
        writer.writerows(rows)
        path.write_text(buf.getvalue())
    try:
        stats = validate.validate_csv(str(path), SPEC, skip_bad_rows=skip)
    except validate.DataValidationError as e:
        assert str(path) in str(e)  # every message names the file
    else:
        assert stats.rows_kept + stats.rows_dropped == stats.rows_read
        assert skip or stats.rows_dropped == 0


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
