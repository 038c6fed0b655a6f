"""Fuzzing (hypothesis): the CSV validator and the serving request builder either accept the
input or fail with their own error naming the problem; nothing else ever escapes."""
import csv
import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import features
from serving import client
from transform.ingest import validate

SPEC = features.DatasetSpec(name="fuzz", sparse_keys=("user", "item"), dense_keys=("price",),
                            click_key="click", conversion_key="conversion", user_key="user",
                            timestamp_key="ts", passthrough_keys=("ts",))
TYPES = client.feature_types_from_spec(SPEC)

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


value = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                  st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
                  st.lists(st.integers(0, 3), max_size=3),
                  st.integers(-5, 5).map(np.int64), st.floats(-1, 1).map(np.float32))
row = st.dictionaries(st.sampled_from(list(TYPES) + ["click", "other"]), value, max_size=6)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(row, max_size=4), signature=st.sampled_from(["serving_default",
                                                                   "predict_raw"]))
def test_request_builder_accepts_or_names_the_problem(rows, signature):
    builders = [lambda: client.serialize_examples(rows, TYPES),
                lambda: client.rest_raw_payload(rows, TYPES),
                lambda: client.rest_examples_payload(rows, TYPES),
                lambda: client.grpc_request(rows, TYPES, "m", signature_name=signature)]
    for build in builders:
        try:
            out = build()
        except client.RequestError as e:
            text = str(e)
            assert "row" in text or "request" in text or "feature" in text, text
        else:
            assert out is not None and rows  # an empty request is refused, never built
