"""Where the train step's time goes: the in-memory ideal step under variants (issue 9).

The "ideal" of ``benchmarks/throughput.py`` (the train step on 24 batches of 2048 cached in
memory: no input pipeline) for MMoE and PLE, each variant in its own process:

* ``production``: as ``funnelrank train`` runs it (MirroredStrategy, streaming AUC per head);
* ``no_strategy``: TF's default strategy instead of MirroredStrategy over one device;
* ``no_train_auc``: without the per-head streaming AUCs of the train step (a diagnosis: the
  production step always tracks them);
* ``xla``: the production step compiled with XLA (``train.jit_compile``);
* ``cpu_replicas_2``: MirroredStrategy over 2 logical CPU devices (``--cpu-replicas 2``).

Each runs 20 warm-up steps, then 5 blocks of 40 steps; the table gives the median block as
examples/second and the change against ``production``. Writes
``benchmarks/results/step_variants.json``.

Usage::

    .venv/bin/python benchmarks/step_variants.py [--rows 200000] [--models mmoe,ple]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("production", "no_strategy", "no_train_auc", "xla", "cpu_replicas_2")


def measure(variant: str, model_name: str, data: str, batch: int) -> dict:
    """One variant's median examples/s (runs in a fresh process: see :func:`main`)."""
    if variant == "cpu_replicas_2":
        from trainer.strategy import configure_cpu_replicas

        configure_cpu_replicas(2)
    import numpy as np
    import tensorflow as tf

    from benchmarks.speed_model import speed_config
    from trainer.data import from_arrays
    from transform.ingest import synthetic
    from trainer.model import FeatureInfo
    from trainer.session import build_model
    from trainer.strategy import make_strategy

    loaded = np.load(data)
    vocab = json.loads(str(loaded["vocab"]))
    arrays = {k: loaded[k] for k in loaded.files if k != "vocab"}
    spec = synthetic.spec()
    info = FeatureInfo(vocab, spec.dense_keys)
    cfg = speed_config(model_name, batch)
    strategy = tf.distribute.get_strategy() if variant == "no_strategy" else make_strategy()
    with strategy.scope():
        model = build_model(cfg, info)
        if variant == "no_train_auc":
            model.aucs = {}
        model.compile(optimizer=tf.keras.optimizers.Adam(cfg.train.learning_rate),
                      jit_compile=variant == "xla")
    cached = from_arrays(arrays, info.input_names, spec, batch, shuffle=True, seed=1,
                         drop_remainder=True).take(24).cache().repeat()
    iterator = iter(strategy.experimental_distribute_dataset(cached))
    step = model.make_train_function()
    for _ in range(20):
        logs = step(iterator)
    float(logs["loss"])
    blocks = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(40):
            logs = step(iterator)
        float(logs["loss"])
        blocks.append(40 * batch / (time.perf_counter() - t0))
    return {"variant": variant, "model": model_name, "replicas": strategy.num_replicas_in_sync,
            "examples_per_sec": statistics.median(blocks), "blocks": blocks}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--models", default="mmoe,ple")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--work", default=os.path.join(ROOT, "work", "bench", "steps"))
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                      "step_variants.json"))
    parser.add_argument("--one", nargs=2, metavar=("VARIANT", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    import funnelrank  # noqa: F401  selects Keras 2 before TensorFlow is imported

    data = os.path.join(args.work, "transformed.npz")
    if args.one:
        print("RESULT " + json.dumps(measure(args.one[0], args.one[1], data, args.batch)))
        return 0
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; expected some of {list(VARIANTS)}")
    os.makedirs(args.work, exist_ok=True)
    import runpy

    import numpy as np

    from funnelrank.commands.bench import result_of

    # The same preprocessed rows as benchmarks/throughput.py, saved once for the children.
    export_data = runpy.run_path(os.path.join(ROOT, "benchmarks", "throughput.py"))["export_data"]
    pre, arrays, _ = export_data(args.rows, os.path.join(args.work, "peer_data.npz"))
    np.savez(data, vocab=json.dumps(pre.vocab_sizes), **arrays)
    results = []
    for model in args.models.split(","):
        for variant in args.variants.split(","):
            print(f"{model} {variant} ...", file=sys.stderr, flush=True)
            results.append(result_of([sys.executable, os.path.abspath(__file__), "--one",
                                      variant, model, "--work", args.work, "--batch",
                                      str(args.batch)], f"{model} {variant}"))
    report = {"benchmark": "step_variants", "rows": args.rows, "batch": args.batch,
              "steps_per_block": 40, "blocks": 5, "results": results}
    from funnelrank.commands.bench import write_report

    write_report(args.out, report)
    print(f"\nIdeal train step at batch {args.batch}, median of 5 blocks of 40 steps\n")
    print("| model | variant | replicas | examples / s | vs production |")
    print("|---|---|---:|---:|---:|")
    for r in results:
        base = [b["examples_per_sec"] for b in results
                if b["model"] == r["model"] and b["variant"] == "production"]
        change = f"{r['examples_per_sec'] / base[0] - 1:+.1%}" if base else "n/a"
        print(f"| {r['model']} | {r['variant']} | {r['replicas']} | "
              f"{r['examples_per_sec']:.0f} | {change} |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
