"""Requests to a TF Serving model from raw rows, over REST or gRPC.

Rows are dicts ``{feature: value}`` (labels and extra keys are ignored). Each feature has a
type: ``"int64"`` or ``"string"`` for ids, ``"float32"`` for dense values
(:func:`feature_types_from_spec` derives them from a dataset spec). Dense values must be
finite and within float32's range (NaN, inf or 1e308 would be served as garbage). ``None``
marks a missing value of an optional feature (one the model saw missing in training): the
feature is left out of the ``tf.Example`` (NaN or ``""`` in ``predict_raw``). Payloads:

* REST ``serving_default``: ``{"signature_name": ..., "instances": [{"examples": {"b64":
  <serialized tf.Example>}}, ...]}``.
* REST ``predict_raw``: ``{"signature_name": "predict_raw", "inputs": {feature: [values]}}``.
* gRPC: a ``tensorflow_serving.apis.predict_pb2.PredictRequest`` for either signature.

A row that lacks a feature, or holds a value of the wrong type, raises :class:`RequestError`
naming the row, the feature and the value before anything is sent; a server that fails
raises :class:`ServingError` (:class:`ServingTimeout` when it does not answer in time).
"""
from __future__ import annotations

import base64
import math
import numbers
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from schemas.checks import short_repr
from schemas.errors import UserError
from serving.signatures import EXAMPLES_INPUT, PREDICT_RAW, SERVING_DEFAULT

INT64 = "int64"
FLOAT32 = "float32"
STRING = "string"
FLOAT32_MAX = float(np.finfo(np.float32).max)
FeatureTypes = Mapping[str, str]


class RequestError(UserError, ValueError):
    """A row cannot be turned into a request (missing feature, wrong type)."""


class ServingError(RuntimeError):
    """The server could not be reached or answered with an error."""


class ServingTimeout(ServingError):
    """The server did not answer within the timeout."""


def feature_types_from_spec(spec) -> Dict[str, str]:
    """``{feature: "int64" | "string" | "float32"}`` for a ``schemas.features.DatasetSpec``."""
    out = {k: STRING if spec.dtype(k) == "string" else INT64 for k in spec.sparse_keys}
    out.update({k: FLOAT32 for k in spec.dense_keys})
    return out


def _normalise_types(feature_types: FeatureTypes) -> Dict[str, str]:
    out = {}
    for key, kind in feature_types.items():
        name = tf.as_dtype(kind).name if not isinstance(kind, str) else kind
        if name not in (INT64, FLOAT32, STRING):
            raise RequestError(f"feature {key!r}: unsupported type {short_repr(kind)} "
                               f"(expected {INT64!r}, {STRING!r} or {FLOAT32!r})")
        out[key] = name
    return out


def _checked(row: Mapping[str, Any], index: int, key: str, kind: str, optional: bool):
    """The value of ``key`` in a row, checked; ``None`` for a missing optional value."""
    if key not in row:
        raise RequestError(f"row {index}: missing feature {key!r} (every request row needs "
                           f"{kind} {key!r}{'; None marks a missing value' if optional else ''})")
    value = row[key]
    if isinstance(value, np.ndarray) and value.shape in ((), (1,)):
        value = value.reshape(()).item()
    elif isinstance(value, np.generic):
        value = value.item()
    if value is None:
        if optional:
            return None
        raise RequestError(f"row {index}: feature {key!r} is required (the model never saw it "
                           f"missing), got None")
    if kind == INT64:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif kind == STRING:
        ok = isinstance(value, str) or (isinstance(value, numbers.Integral)
                                         and not isinstance(value, bool))
    else:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok:
        raise RequestError(f"row {index}: feature {key!r} must be {kind}, got "
                           f"{type(value).__name__} {short_repr(value)}")
    if kind == INT64 and not -2**63 <= value < 2**63:
        raise RequestError(f"row {index}: feature {key!r} value {short_repr(value)} does not "
                           f"fit in int64")
    # abs() first: a huge int compares exactly, while isfinite() would raise OverflowError.
    if kind == FLOAT32 and not (abs(value) <= FLOAT32_MAX and math.isfinite(value)):
        raise RequestError(f"row {index}: feature {key!r} must be a finite float32 number, "
                           f"got {short_repr(value)}")
    if kind == STRING:
        value = str(value)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate such as '\ud800'
            raise RequestError(f"row {index}: feature {key!r} must be valid Unicode text, "
                               f"got {short_repr(value)}") from None
        return value
    return int(value) if kind == INT64 else float(value)


def _columns(rows: Sequence[Mapping[str, Any]], feature_types: FeatureTypes,
             optional: Sequence[str] = ()) -> Dict[str, list]:
    types = _normalise_types(feature_types)
    if not rows:
        raise RequestError("no rows to send")
    return {key: [_checked(row, i, key, kind, key in optional) for i, row in enumerate(rows)]
            for key, kind in types.items()}


def _raw_columns(rows, feature_types, optional) -> Dict[str, list]:
    """Columns for ``predict_raw``: a missing value is NaN (dense) or ``""`` (string)."""
    types = _normalise_types(feature_types)
    out = _columns(rows, feature_types, optional)
    for key, values in out.items():
        if any(v is None for v in values):
            if types[key] == INT64:
                raise RequestError(f"row {values.index(None)}: feature {key!r}: predict_raw "
                                   f"cannot carry a missing int64 id; use serving_default "
                                   f"(examples) for this row")
            fill = float("nan") if types[key] == FLOAT32 else ""
            out[key] = [fill if v is None else v for v in values]
    return out


def serialize_examples(rows: Sequence[Mapping[str, Any]], feature_types: FeatureTypes,
                       optional: Sequence[str] = ()) -> List[bytes]:
    """Serialized ``tf.Example`` per row, holding only the listed features.

    Args:
      rows: Raw rows (dicts); keys not in ``feature_types`` are ignored.
      feature_types: Feature -> ``"int64"``, ``"string"`` or ``"float32"``.
      optional: Features that may be ``None`` (missing): left out of the example.

    Returns:
      One serialized ``tf.train.Example`` per row.

    Raises:
      RequestError: A row lacks a feature or holds a value of the wrong type, a non-finite
        or out-of-range number, or None for a required feature.
    """
    columns = _columns(rows, feature_types, optional)
    types = _normalise_types(feature_types)
    out = []
    for i in range(len(rows)):
        feats = {}
        for key, kind in types.items():
            value = columns[key][i]
            if value is None:
                continue
            if kind == INT64:
                feats[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
            elif kind == STRING:
                feats[key] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))
            else:
                feats[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        out.append(tf.train.Example(features=tf.train.Features(feature=feats))
                   .SerializeToString())
    return out


def rest_examples_payload(rows: Sequence[Mapping[str, Any]], feature_types: FeatureTypes,
                          signature_name: str = SERVING_DEFAULT,
                          optional: Sequence[str] = ()) -> Dict[str, Any]:
    """REST row-format body for ``serving_default``: base64 serialized examples."""
    return {"signature_name": signature_name,
            "instances": [{EXAMPLES_INPUT: {"b64": base64.b64encode(e).decode("ascii")}}
                          for e in serialize_examples(rows, feature_types, optional)]}


def rest_raw_payload(rows: Sequence[Mapping[str, Any]], feature_types: FeatureTypes,
                     signature_name: str = PREDICT_RAW,
                     optional: Sequence[str] = ()) -> Dict[str, Any]:
    """REST columnar body for ``predict_raw``: ``{"inputs": {feature: [values]}}``."""
    columns = _raw_columns(rows, feature_types, optional)
    for key, values in columns.items():
        missing = [i for i, v in enumerate(values) if isinstance(v, float) and v != v]
        if missing:
            raise RequestError(f"row {missing[0]}: feature {key!r}: predict_raw over REST "
                               f"cannot carry a missing dense value (NaN is not JSON); use "
                               f"serving_default (examples) or gRPC")
    return {"signature_name": signature_name, "inputs": columns}


def grpc_request(rows: Sequence[Mapping[str, Any]], feature_types: FeatureTypes,
                 model_name: str, signature_name: str = SERVING_DEFAULT,
                 version: Optional[int] = None, optional: Sequence[str] = ()):
    """``PredictRequest`` for ``serving_default`` (examples) or ``predict_raw`` (columns).

    Args:
      rows: Raw rows (dicts).
      feature_types: Feature -> ``"int64"``, ``"string"`` or ``"float32"``.
      model_name: Name the server serves the model under.
      signature_name: ``serving_default`` or ``predict_raw``.
      version: Pin a model version; ``None`` lets the server pick the latest.
      optional: Features that may be ``None`` (missing).

    Returns:
      A ``tensorflow_serving.apis.predict_pb2.PredictRequest``.
    """
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    if signature_name == PREDICT_RAW:
        types = _normalise_types(feature_types)
        for key, values in _raw_columns(rows, feature_types, optional).items():
            dtype = object if types[key] == STRING else types[key]
            request.inputs[key].CopyFrom(tf.make_tensor_proto(
                np.asarray(values, dtype=dtype), dtype=tf.as_dtype(
                    tf.string if types[key] == STRING else types[key])))
    else:
        examples = serialize_examples(rows, feature_types, optional)
        request.inputs[EXAMPLES_INPUT].CopyFrom(
            tf.make_tensor_proto(examples, dtype=tf.string, shape=[len(examples)]))
    return request


def rest_url(host: str, model_name: str, version: Optional[int] = None) -> str:
    """``http://host/v1/models/<name>[/versions/<v>]:predict`` (host may carry a scheme)."""
    base = host if "://" in host else f"http://{host}"
    path = f"/v1/models/{model_name}" + (f"/versions/{int(version)}" if version else "")
    return base.rstrip("/") + path + ":predict"


def outputs_by_head(response: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """REST answer (row or columnar format) -> ``{head: [B] array}``."""
    if "outputs" in response:
        return {k: np.asarray(v, np.float32) for k, v in response["outputs"].items()}
    if "predictions" in response:
        preds = response["predictions"]
        if preds and isinstance(preds[0], dict):
            return {k: np.asarray([p[k] for p in preds], np.float32) for k in preds[0]}
        raise ServingError("REST answer has unnamed predictions; expected named heads")
    raise ServingError(f"REST answer has neither 'outputs' nor 'predictions': "
                       f"{str(response)[:200]}")


def send_rest(url: str, payload: Mapping[str, Any], timeout: float = 5.0) -> Dict[str, np.ndarray]:
    """POSTs ``payload`` to TF Serving's REST API and returns ``{head: [B] array}``.

    Args:
      url: Predict URL (:func:`rest_url`).
      payload: Body from :func:`rest_examples_payload` or :func:`rest_raw_payload`.
      timeout: Seconds for connecting and for the answer.

    Raises:
      ServingTimeout: No answer within ``timeout``.
      ServingError: Connection refused, non-200 status (the server's ``error`` text is
        quoted) or an answer that is not JSON.
    """
    import requests

    try:
        resp = requests.post(url, json=payload, timeout=timeout)
    except requests.Timeout as e:
        raise ServingTimeout(f"{url}: no answer within {timeout}s") from e
    except requests.RequestException as e:
        raise ServingError(f"{url}: cannot reach the server: {e}") from e
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code != 200:
        detail = body.get("error") if isinstance(body, dict) else resp.text[:500]
        raise ServingError(f"{url}: HTTP {resp.status_code}: {detail}")
    if not isinstance(body, dict):
        raise ServingError(f"{url}: answer is not a JSON object: {resp.text[:200]!r}")
    return outputs_by_head(body)


def send_grpc(target: str, request, timeout: float = 5.0) -> Dict[str, np.ndarray]:
    """Sends a ``PredictRequest`` to ``target`` (``host:port``); returns ``{head: array}``.

    Raises:
      ServingTimeout: Deadline exceeded.
      ServingError: Any other gRPC failure, with its status code and details.
    """
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            msg = f"{target}: gRPC {getattr(code, 'name', code)}: " \
                  f"{e.details() if hasattr(e, 'details') else e}"
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ServingTimeout(msg) from e
            raise ServingError(msg) from e
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
