"""Loads an export as TF Serving would and replays its warmup requests (standalone script).

Run as a file (``python serving/serve_check.py MODEL_DIR``) in a fresh interpreter: it
imports only TensorFlow and tensorflow-serving-api, never this project, so it proves the
SavedModel is self-contained. It loads with the ``serve`` tag, prints every signature's
inputs and outputs (dtype, shape), replays each ``PredictionLog`` of
``assets.extra/tf_serving_warmup_requests`` through its signature, checks the outputs are
finite probabilities, and prints the latency per request.

Exit status: 0 when all passed; 1 when a check failed (no warmup file, outputs that are not
probabilities); 2 when ``MODEL_DIR`` cannot be read at all (missing, no SavedModel, a truncated
or corrupt ``saved_model.pb``, variables or warmup file): one line on stderr naming the path.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

WARMUP = os.path.join("assets.extra", "tf_serving_warmup_requests")
EXIT_UNREADABLE = 2
MAX_DETAIL_CHARS = 160


class UnreadableModel(Exception):
    """``MODEL_DIR`` is not a loadable SavedModel (the message names the path)."""


def _first_line(error: BaseException) -> str:
    """The first line of an error's text, cut to ``MAX_DETAIL_CHARS`` (TF errors run long)."""
    text = (str(error).strip().splitlines() or [""])[0]
    text = text if len(text) <= MAX_DETAIL_CHARS else text[:MAX_DETAIL_CHARS] + "..."
    return f"{type(error).__name__}: {text}"


def _resolve(model_dir: str) -> str:
    if not os.path.isdir(model_dir):
        raise UnreadableModel(f"{model_dir}: not a directory")
    if os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        return model_dir
    versions = sorted(int(n) for n in os.listdir(model_dir) if n.isdigit()
                      and os.path.exists(os.path.join(model_dir, n, "saved_model.pb")))
    if not versions:
        raise UnreadableModel(f"{model_dir}: holds no saved_model.pb and no version "
                              f"directories holding one")
    return os.path.join(model_dir, str(versions[-1]))


def _describe(spec) -> str:
    shape = [d if d is not None else -1 for d in spec.shape.as_list()]
    return f"{spec.dtype.name}{shape}"


def check(model_dir: str, repeats: int = 20) -> dict:
    """Loads ``model_dir`` (or its newest version), replays the warmup file, returns a report.

    Raises:
      UnreadableModel: No SavedModel there, or one (or its warmup file) that cannot be read.
    """
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    model_dir = _resolve(model_dir)
    report = {"model_dir": model_dir, "signatures": {}, "replayed": [], "ok": True}
    path = os.path.join(model_dir, WARMUP)
    if not os.path.exists(path):
        report["ok"] = False
        report["error"] = f"no warmup file at {path}"
        return report
    # Loading fails in many ways on damaged files: a truncated saved_model.pb raises OSError,
    # a truncated variables index DataLossError, a truncated data shard IndexError (seen with
    # TF 2.16), a bad warmup record DataLossError or DecodeError. Each is reported as an
    # unreadable model, naming the file and the error's first line.
    try:
        loaded = tf.saved_model.load(model_dir, tags=["serve"])
    except Exception as e:
        raise UnreadableModel(f"{model_dir}: not a loadable SavedModel "
                              f"({_first_line(e)})") from None
    for name, fn in sorted(loaded.signatures.items()):
        inputs = fn.structured_input_signature[1]
        report["signatures"][name] = {
            "inputs": {k: _describe(v) for k, v in sorted(inputs.items())},
            "outputs": {k: _describe(v) for k, v in sorted(fn.structured_outputs.items())}}
    try:
        records = [prediction_log_pb2.PredictionLog.FromString(record.numpy())
                   for record in tf.data.TFRecordDataset(path)]
    except Exception as e:
        raise UnreadableModel(f"{path}: not a file of PredictionLog records "
                              f"({_first_line(e)})") from None
    for i, log in enumerate(records):
        request = log.predict_log.request
        sig_name = request.model_spec.signature_name or "serving_default"
        if sig_name not in loaded.signatures:
            report["ok"] = False
            report["error"] = f"warmup record {i} calls unknown signature {sig_name!r}"
            return report
        fn = loaded.signatures[sig_name]
        feeds = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        try:
            outputs = fn(**feeds)  # first call: traced graph warm-up
        except (tf.errors.OpError, TypeError, ValueError) as e:  # bad inputs for the signature
            report["ok"] = False
            report["error"] = f"warmup record {i} fails in {sig_name}: {_first_line(e)}"
            return report
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            outputs = fn(**feeds)
            times.append(time.perf_counter() - t0)
        values = {k: v.numpy() for k, v in outputs.items()}
        batch = int(next(iter(feeds.values())).shape[0])
        finite = all(np.all(np.isfinite(v)) and np.all((v >= 0) & (v <= 1))
                     and v.shape[0] == batch for v in values.values())
        report["ok"] &= bool(finite)
        report["replayed"].append({
            "record": i, "signature": sig_name, "batch": batch, "outputs": sorted(values),
            "finite_probabilities": bool(finite),
            "latency_ms_p50": float(np.percentile(times, 50) * 1e3),
            "latency_ms_max": float(np.max(times) * 1e3)})
    if not report["replayed"]:
        report["ok"] = False
        report["error"] = f"warmup file {path} holds no records"
    return report


def format_report(report: dict) -> str:
    lines = [f"model: {report['model_dir']}"]
    for name, sig in report["signatures"].items():
        lines.append(f"signature {name}:")
        for k, v in sig["inputs"].items():
            lines.append(f"  input  {k}: {v}")
        for k, v in sig["outputs"].items():
            lines.append(f"  output {k}: {v}")
    for r in report["replayed"]:
        lines.append(f"warmup record {r['record']}: {r['signature']} batch {r['batch']} -> "
                     f"{','.join(r['outputs'])}; latency p50 {r['latency_ms_p50']:.2f} ms, "
                     f"max {r['latency_ms_max']:.2f} ms; "
                     f"{'ok' if r['finite_probabilities'] else 'NOT probabilities'}")
    if "error" in report:
        lines.append(f"error: {report['error']}")
    lines.append("serve-check: " + ("OK" if report["ok"] else "FAILED"))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", help="also write the report as JSON here")
    args = parser.parse_args(argv)
    try:
        report = check(args.model_dir, args.repeats)
    except UnreadableModel as e:
        print(f"serve-check: error: {e}", file=sys.stderr)
        return EXIT_UNREADABLE
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
