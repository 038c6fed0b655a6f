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

from serving import client
from serving.signatures import PREDICT_RAW, SERVING_DEFAULT
from tests import fixtures

TYPES = client.feature_types_from_spec(fixtures.TINY_SPEC)
ROWS = [{"user": 3, "item": 7, "price": 9.5, "click": 1},
        {"user": np.int64(4), "item": 1, "price": np.float32(11.25)}]


def test_feature_types_follow_the_spec():
    assert TYPES == {"user": "int64", "item": "int64", "price": "float32"}


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
