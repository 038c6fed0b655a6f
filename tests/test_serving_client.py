"""Request payloads (REST, gRPC) from raw rows, and the send path against a local server."""
import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import tensorflow as tf

from schemas import features
from serving import client
from serving.signatures import PREDICT_RAW, SERVING_DEFAULT
from tests import fixtures

TYPES = client.feature_types_from_spec(fixtures.TINY_SPEC)
ROWS = [{"user": 3, "item": 7, "price": 9.5, "click": 1},
        {"user": np.int64(4), "item": 1, "price": np.float32(11.25)}]
TEXT_SPEC = features.DatasetSpec(
    name="census", sparse_keys=("education", "region"), dense_keys=("age",),
    label_keys={"income": "income_50k"}, sparse_dtypes={"education": "string",
                                                       "region": "string"},
    optional_keys=("education", "age"))
TEXT_TYPES = client.feature_types_from_spec(TEXT_SPEC)
OPTIONAL = TEXT_SPEC.optional_keys
TEXT_ROWS = [{"education": "Some college, no degree", "region": "?", "age": None},
             {"education": None, "region": "West, coast", "age": 41.5},
             {"education": "", "region": "Not in universe", "age": np.float64(18.0)}]


def test_feature_types_follow_the_spec():
    assert TYPES == {"user": "int64", "item": "int64", "price": "float32"}
    assert TEXT_TYPES == {"education": "string", "region": "string", "age": "float32"}


def _example(serialized: bytes):
    return tf.train.Example.FromString(serialized).features.feature


def test_string_ids_and_missing_optional_values_in_examples():
    rows = client.serialize_examples(TEXT_ROWS, TEXT_TYPES, OPTIONAL)
    first, second, third = (_example(r) for r in rows)
    assert first["education"].bytes_list.value == [b"Some college, no degree"]
    assert first["region"].bytes_list.value == [b"?"]
    assert "age" not in first  # None: the optional feature is left out, as in training data
    assert "education" not in second and second["age"].float_list.value == [41.5]
    assert third["education"].bytes_list.value == [b""]  # "" is the missing text anyway
    payload = client.rest_examples_payload(TEXT_ROWS, TEXT_TYPES, optional=OPTIONAL)
    assert [tf.train.Example.FromString(base64.b64decode(i["examples"]["b64"]))
            for i in payload["instances"]] == [tf.train.Example.FromString(r) for r in rows]


def test_string_ids_may_be_given_as_integers_and_keep_their_text():
    row = {"education": 7, "region": np.int64(12), "age": 1.0}
    feats = _example(client.serialize_examples([row], TEXT_TYPES)[0])
    assert feats["education"].bytes_list.value == [b"7"]
    assert feats["region"].bytes_list.value == [b"12"]


def test_predict_raw_over_grpc_fills_missing_values_with_nan_and_empty_text():
    req = client.grpc_request(TEXT_ROWS, TEXT_TYPES, "m", signature_name=PREDICT_RAW,
                              optional=OPTIONAL)
    assert req.inputs["education"].dtype == tf.string.as_datatype_enum
    assert tf.make_ndarray(req.inputs["education"]).tolist() == [
        b"Some college, no degree", b"", b""]
    assert tf.make_ndarray(req.inputs["region"]).tolist() == [b"?", b"West, coast",
                                                               b"Not in universe"]
    age = tf.make_ndarray(req.inputs["age"])
    assert age.dtype == np.float32 and np.isnan(age[0]) and age[1:].tolist() == [41.5, 18.0]


def test_predict_raw_over_rest_carries_missing_text_but_not_missing_numbers():
    rows = [dict(r, age=30.0) for r in TEXT_ROWS]
    payload = client.rest_raw_payload(rows, TEXT_TYPES, optional=OPTIONAL)
    assert payload["inputs"]["education"] == ["Some college, no degree", "", ""]
    with pytest.raises(client.RequestError, match=r"row 0: feature 'age': predict_raw over "
                                                  r"REST cannot carry a missing dense value"):
        client.rest_raw_payload(TEXT_ROWS, TEXT_TYPES, optional=OPTIONAL)


def test_predict_raw_cannot_carry_a_missing_int64_id():
    with pytest.raises(client.RequestError, match=r"row 1: feature 'item': predict_raw "
                                                  r"cannot carry a missing int64 id"):
        client.grpc_request([ROWS[0], dict(ROWS[0], item=None)], TYPES, "m", PREDICT_RAW,
                            optional=("item",))
    feats = _example(client.serialize_examples([dict(ROWS[0], item=None)], TYPES,
                                               optional=("item",))[0])
    assert sorted(feats) == ["price", "user"]  # serving_default can: the feature is absent


def test_none_for_a_required_feature_is_refused():
    with pytest.raises(client.RequestError,
                       match=r"row 1: feature 'region' is required \(the model never saw it "
                             r"missing\), got None"):
        client.serialize_examples([TEXT_ROWS[0], dict(TEXT_ROWS[1], region=None)],
                                  TEXT_TYPES, OPTIONAL)


@pytest.mark.parametrize("value, shown", [
    (float("nan"), "nan"), (float("inf"), "inf"), (-float("inf"), "-inf"), (1e308, "1e+308"),
    (-1e39, "-1e+39"), (np.float64("nan"), "nan"), (np.float64(1e300), "1e+300"),
    (10**400, "1" + "0" * 79 + "...(401 chars)"),  # used to escape as OverflowError
], ids=["nan", "inf", "-inf", "1e308", "-1e39", "np-nan", "np-1e300", "10**400"])
@pytest.mark.parametrize("build", [
    client.serialize_examples, client.rest_raw_payload,
    lambda r, t: client.grpc_request(r, t, "m", signature_name=PREDICT_RAW)])
def test_non_finite_and_out_of_float32_values_are_refused_naming_row_and_feature(
        build, value, shown):
    rows = [ROWS[0], dict(ROWS[1], price=value)]
    with pytest.raises(client.RequestError) as err:
        build(rows, TYPES)
    assert str(err.value) == (f"row 1: feature 'price' must be a finite float32 number, "
                              f"got {shown}")


def test_the_largest_float32_is_accepted():
    biggest = float(np.finfo(np.float32).max)
    req = client.grpc_request([dict(ROWS[0], price=-biggest)], TYPES, "m",
                              signature_name=PREDICT_RAW)
    assert tf.make_ndarray(req.inputs["price"]).tolist() == [-biggest]


@pytest.mark.parametrize("value, kind", [("7" * 10_000, "str"), (10**9_999, "int")],
                         ids=["text", "integer"])
def test_a_ten_thousand_character_id_is_echoed_cut_short(value, kind):
    with pytest.raises(client.RequestError) as err:
        client.serialize_examples([dict(ROWS[0], item=value)], TYPES)
    text = str(err.value)
    assert text.startswith("row 0: feature 'item' ")
    assert len(text) < 160, text  # the value is quoted to about 80 characters
    assert ("(10002 chars)" if kind == "str" else "<an integer of about 10000 digits>") in text


def test_text_that_is_not_unicode_is_refused():
    with pytest.raises(client.RequestError, match=r"row 0: feature 'region' must be valid "
                                                  r"Unicode text"):
        client.serialize_examples([dict(TEXT_ROWS[0], region="a\ud800")], TEXT_TYPES,
                                  OPTIONAL)


def test_rest_examples_payload_is_b64_serialized_examples_without_extra_keys():
    payload = client.rest_examples_payload(ROWS, TYPES)
    assert payload["signature_name"] == SERVING_DEFAULT
    assert len(payload["instances"]) == 2
    json.dumps(payload)  # JSON-able as is
    ex = tf.train.Example.FromString(base64.b64decode(payload["instances"][1]["examples"]["b64"]))
    feats = ex.features.feature
    assert sorted(feats) == ["item", "price", "user"]  # the label "click" is not sent
    assert feats["user"].int64_list.value == [4]
    assert feats["price"].float_list.value == [pytest.approx(11.25)]


def test_rest_raw_payload_is_columnar():
    payload = client.rest_raw_payload(ROWS, TYPES)
    assert payload == {"signature_name": PREDICT_RAW,
                       "inputs": {"user": [3, 4], "item": [7, 1], "price": [9.5, 11.25]}}
    json.dumps(payload)


def test_grpc_requests_for_both_signatures():
    req = client.grpc_request(ROWS, TYPES, "funnelrank", version=17)
    assert req.model_spec.name == "funnelrank" and req.model_spec.version.value == 17
    assert req.model_spec.signature_name == SERVING_DEFAULT
    examples = tf.make_ndarray(req.inputs["examples"])
    assert examples.shape == (2,)
    assert tf.train.Example.FromString(examples[0]).features.feature["item"].int64_list.value \
        == [7]
    raw = client.grpc_request(ROWS, TYPES, "funnelrank", signature_name=PREDICT_RAW)
    assert not raw.model_spec.HasField("version")
    assert raw.inputs["user"].dtype == tf.int64.as_datatype_enum
    assert raw.inputs["price"].dtype == tf.float32.as_datatype_enum
    np.testing.assert_array_equal(tf.make_ndarray(raw.inputs["item"]), [7, 1])


@pytest.mark.parametrize("build", [client.rest_examples_payload, client.rest_raw_payload,
                                   lambda r, t: client.grpc_request(r, t, "m")])
def test_missing_feature_is_named(build):
    with pytest.raises(client.RequestError, match=r"row 1: missing feature 'price'"):
        build([ROWS[0], {"user": 1, "item": 2}], TYPES)


@pytest.mark.parametrize("row, message", [
    ({"user": "3", "item": 1, "price": 1.0}, r"row 0: feature 'user' must be int64, got str '3'"),
    ({"user": 3, "item": 1.5, "price": 1.0}, r"feature 'item' must be int64, got float 1.5"),
    ({"user": 3, "item": True, "price": 1.0}, r"feature 'item' must be int64, got bool"),
    ({"user": 3, "item": 1, "price": "cheap"}, r"feature 'price' must be float32, got str"),
    ({"user": 3, "item": 2**63, "price": 1.0},  # found by tests/test_fuzz.py
     r"row 0: feature 'item' value 9223372036854775808 does not fit in int64"),
    ({"user": -2**63 - 1, "item": 1, "price": 1.0}, r"feature 'user' value -9223372036854775809"),
])
def test_wrong_type_is_named(row, message):
    with pytest.raises(client.RequestError, match=message):
        client.rest_examples_payload([row], TYPES)


def test_empty_request_is_refused():
    with pytest.raises(client.RequestError, match="no rows"):
        client.rest_raw_payload([], TYPES)


def test_rest_url():
    assert client.rest_url("localhost:8501", "funnelrank") == \
        "http://localhost:8501/v1/models/funnelrank:predict"
    assert client.rest_url("https://h", "m", version=3) == \
        "https://h/v1/models/m/versions/3:predict"


class _Handler(BaseHTTPRequestHandler):
    received = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.received.append((self.path, body))
        if self.path.startswith("/v1/models/slow"):
            time.sleep(1.0)  # bounded: longer than the client's timeout below
            status, answer = 200, {"predictions": []}
        elif self.path.startswith("/v1/models/bad"):
            status, answer = 400, {"error": "Feature: item (data type: int64) is required"}
        elif "inputs" in body:
            status, answer = 200, {"outputs": {"ctr": [0.5, 0.25], "cvr": [0.1, 0.2]}}
        else:
            status, answer = 200, {"predictions": [{"ctr": 0.5, "cvr": 0.1},
                                                   {"ctr": 0.25, "cvr": 0.2}]}
        data = json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_send_rest_row_and_columnar_answers(server):
    _Handler.received.clear()
    got = client.send_rest(client.rest_url(server, "ok"), client.rest_examples_payload(ROWS, TYPES))
    np.testing.assert_allclose(got["ctr"], [0.5, 0.25])
    path, body = _Handler.received[-1]
    assert path == "/v1/models/ok:predict" and body["signature_name"] == SERVING_DEFAULT
    got = client.send_rest(client.rest_url(server, "ok"), client.rest_raw_payload(ROWS, TYPES))
    np.testing.assert_allclose(got["cvr"], [0.1, 0.2])


def test_send_rest_quotes_the_server_error(server):
    with pytest.raises(client.ServingError, match=r"HTTP 400: Feature: item .*required"):
        client.send_rest(client.rest_url(server, "bad"), client.rest_raw_payload(ROWS, TYPES))


def test_send_rest_times_out(server):
    t0 = time.perf_counter()
    with pytest.raises(client.ServingTimeout, match=r"no answer within 0.2s"):
        client.send_rest(client.rest_url(server, "slow"), client.rest_raw_payload(ROWS, TYPES),
                         timeout=0.2)
    assert time.perf_counter() - t0 < 0.9


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_send_rest_connection_refused_is_a_serving_error():
    with pytest.raises(client.ServingError, match="cannot reach the server"):
        client.send_rest(client.rest_url(f"127.0.0.1:{_closed_port()}", "m"),
                         client.rest_raw_payload(ROWS, TYPES), timeout=1.0)


def test_send_grpc_unreachable_is_a_serving_error():
    request = client.grpc_request(ROWS, TYPES, "m")
    t0 = time.perf_counter()
    with pytest.raises(client.ServingError, match=r"127\.0\.0\.1:\d+: gRPC (UNAVAILABLE|DEADLINE)"):
        client.send_grpc(f"127.0.0.1:{_closed_port()}", request, timeout=1.0)
    assert time.perf_counter() - t0 < 5
