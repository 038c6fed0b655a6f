"""Serving latency of the exported default MMoE: one request of 100 candidates, one CPU thread.

Builds the model of ``configs/synthetic_mmoe.yaml`` (model section unchanged) with
``funnelrank train``'s code path (``funnelrank.commands.train``) on generated synthetic rows, so the
vocabulary sizes are those of the synthetic data, exports it with
``serving.export.export_from_preprocessor`` and then times the SavedModel in a fresh
interpreter that imports only TensorFlow, with ``tf.config.threading`` inter/intra op
parallelism = 1: ``--calls`` calls of each signature on a batch of ``--batch`` candidates
after ``--warmup`` untimed calls. Prints a markdown table and writes
``benchmarks/results/serving_latency.json``.

Usage::

    .venv/bin/python benchmarks/serving_latency.py [--rows 200000] [--calls 1000] [--batch 100]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "serving_latency.json")

MEASURE = textwrap.dedent("""
    import json, sys, time
    import numpy as np, tensorflow as tf
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    model_dir, inputs, calls, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    d = np.load(inputs, allow_pickle=True)
    m = tf.saved_model.load(model_dir, tags=["serve"])
    feeds = {
        "serving_default": {"examples": tf.constant(list(d["examples"]))},
        "predict_raw": {k[4:]: tf.constant(d[k]) for k in d.files if k.startswith("raw_")},
    }
    out = {}
    for name, feed in feeds.items():
        fn = m.signatures[name]
        for _ in range(warmup):
            fn(**feed)
        times = np.empty(calls)
        for i in range(calls):
            t0 = time.perf_counter()
            fn(**feed)["ctr"].numpy()
            times[i] = time.perf_counter() - t0
        out[name] = {"p50_ms": float(np.percentile(times, 50) * 1e3),
                     "p99_ms": float(np.percentile(times, 99) * 1e3),
                     "mean_ms": float(times.mean() * 1e3),
                     "min_ms": float(times.min() * 1e3)}
    print(json.dumps(out))
""")


def build_export(rows: int, work: str) -> dict:
    """Trains the default MMoE on ``rows`` synthetic rows and exports it; returns metadata."""
    sys.path.insert(0, ROOT)
    import funnelrank  # noqa: F401  selects Keras 2 before TensorFlow is imported
    from funnelrank.commands import serving as cli_commands
    from funnelrank.commands import train as train_local
    from schemas import config as config_lib

    cfg = config_lib.load(os.path.join(ROOT, "configs", "synthetic_mmoe.yaml"),
                          {"data.generate_rows": rows, "pipeline.root": work})
    train_dir = os.path.join(work, "train")
    t0 = time.perf_counter()
    metrics = train_local.train(cfg, train_dir)
    base = os.path.join(work, "serving")
    cli_commands.export_main(argparse.Namespace(model=train_dir, out=base, version=1,
                                                name="funnelrank"))
    with open(os.path.join(train_dir, "preprocessor.json")) as f:
        vocab_sizes = {k: len(v) + 1 for k, v in json.load(f)["vocabularies"].items()}
    return {"cfg": cfg, "export_dir": os.path.join(base, "1"), "vocab_sizes": vocab_sizes,
            "ctr_auc": metrics["heads"]["ctr"]["auc"],
            "build_seconds": time.perf_counter() - t0}


def candidates(batch: int, path: str) -> None:
    """Saves ``batch`` generated rows as serialized examples and raw columns to ``path``."""
    import numpy as np

    from serving import client
    from transform.ingest import synthetic

    spec = synthetic.spec()
    types = client.feature_types_from_spec(spec)
    frame = synthetic.generate(batch, seed=123)
    arrays = {"examples": np.array(client.serialize_examples(frame.to_dict("records"), types),
                                   dtype=object)}
    for key, kind in types.items():
        arrays["raw_" + key] = frame[key].to_numpy().astype(kind)
    np.savez(path, **arrays)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        built = build_export(args.rows, work)
        inputs = os.path.join(work, "candidates.npz")
        candidates(args.batch, inputs)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        proc = subprocess.run([sys.executable, "-c", MEASURE, built["export_dir"], inputs,
                               str(args.calls), str(args.warmup)], capture_output=True,
                              text=True, env=env, cwd=work, timeout=1200)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            return proc.returncode
        timings = json.loads(proc.stdout.strip().splitlines()[-1])
    from schemas import config as config_lib

    result = {
        "benchmark": "serving_latency",
        "batch": args.batch, "calls": args.calls, "warmup_calls": args.warmup,
        "threads": {"inter_op": 1, "intra_op": 1},
        "model": config_lib.to_dict(built["cfg"])["model"],
        "vocab_sizes": built["vocab_sizes"], "train_rows": args.rows,
        "ctr_auc_eval": built["ctr_auc"],
        "signatures": timings}
    from funnelrank.commands.bench import write_report

    write_report(args.out, result)
    print(f"\nServing latency, default MMoE, batch {args.batch}, 1 CPU thread, "
          f"{args.calls} calls\n")
    print("| signature | p50 ms | p99 ms | mean ms |")
    print("|---|---:|---:|---:|")
    for name, t in timings.items():
        print(f"| {name} | {t['p50_ms']:.2f} | {t['p99_ms']:.2f} | {t['mean_ms']:.2f} |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
