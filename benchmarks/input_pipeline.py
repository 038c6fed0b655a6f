"""Training and inference throughput, and what the input pipeline costs (issue 9).

For each model (default: MMoE and PLE as configured in ``configs/``) at batch 2048 on the same
synthetic rows, preprocessed as ``funnelrank train`` does:

* ``ideal``: the train step on batches already in memory (24 batches cached and cycled: no
  parsing, no shuffling, no copies), the upper bound of any input pipeline;
* ``arrays``: ``trainer.data.from_arrays`` (the ``funnelrank train`` path: shuffle, batch,
  split features/labels, prefetch);
* ``tfrecord``: ``trainer.data.from_transformed`` on gzipped tf.Example TFRecords in the layout
  the Transform component writes (the TFX Trainer path: parallel reads, shuffle, batch, parallel
  parse, prefetch);
* ``inference``: the exported network's forward pass alone on in-memory batches.

Each variant runs ``--warmup`` steps, then ``--blocks`` interleaved timed blocks of ``--steps``
steps; the table gives the median block as examples/second and the overhead against ``ideal``.
Writes ``benchmarks/results/input_pipeline.json``.

Usage::

    .venv/bin/python benchmarks/input_pipeline.py [--rows 200000] [--models mmoe,ple]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_tfrecords(arrays, out_dir: str, shards: int = 4):
    """Transformed arrays -> gzipped tf.Example shards; returns (pattern, feature spec)."""
    import numpy as np
    import tensorflow as tf

    n = len(next(iter(arrays.values())))
    spec = {k: tf.io.FixedLenFeature([1], tf.int64 if v.dtype.kind == "i" else tf.float32)
            for k, v in arrays.items()}
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for shard, rows in enumerate(np.array_split(np.arange(n), shards)):
        path = os.path.join(out_dir, f"transformed-{shard:05d}-of-{shards:05d}.gz")
        with tf.io.TFRecordWriter(path, options) as writer:
            for i in rows:
                feats = {}
                for k, v in arrays.items():
                    x = v[i].reshape(-1)
                    feats[k] = (tf.train.Feature(int64_list=tf.train.Int64List(value=x))
                                if v.dtype.kind == "i" else
                                tf.train.Feature(float_list=tf.train.FloatList(value=x)))
                writer.write(tf.train.Example(features=tf.train.Features(feature=feats))
                             .SerializeToString())
    return os.path.join(out_dir, "transformed-*.gz"), spec


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--models", default="mmoe,ple")
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                      "input_pipeline.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    import funnelrank  # noqa: F401  selects Keras 2 before TensorFlow is imported
    import tensorflow as tf

    from funnelrank.data import synthetic
    from schemas import features
    from trainer import config as config_lib
    from trainer import preprocess
    from trainer.data import from_arrays, from_transformed, label_columns
    from trainer.fit import build_model
    from trainer.model import FeatureInfo
    from trainer.strategy import make_strategy

    spec = features.synthetic_spec()
    frame = synthetic.generate(args.rows, seed=7)[list(spec.columns)]
    pre = preprocess.fit(frame, spec)
    arrays = pre.transform(frame)
    info = FeatureInfo(pre.vocab_sizes, spec.dense_keys)
    keep = {k: arrays[k] for k in list(info.input_names) + list(label_columns(spec))}
    strategy = make_strategy()
    batch = args.batch * strategy.num_replicas_in_sync
    tmp = tempfile.mkdtemp(prefix="funnelrank-input-")
    t0 = time.perf_counter()
    pattern, feature_spec = write_tfrecords(keep, tmp)
    print(f"wrote {args.rows} transformed rows as TFRecords in {time.perf_counter() - t0:.0f}s",
          file=sys.stderr)

    sources = {
        "ideal": lambda: from_arrays(keep, info.input_names, spec, batch, shuffle=True, seed=1,
                                     drop_remainder=True).take(24).cache().repeat(),
        "arrays": lambda: from_arrays(keep, info.input_names, spec, batch, shuffle=True,
                                      seed=1, drop_remainder=True).repeat(),
        "tfrecord": lambda: from_transformed(pattern, feature_spec, info.input_names, spec,
                                             batch, shuffle=True, seed=1).repeat(),
    }
    results = []
    for name in args.models.split(","):
        cfg = config_lib.load(os.path.join(ROOT, "configs", f"{name}.yaml"),
                              {"train.batch_size": args.batch})
        with strategy.scope():
            model = build_model(cfg, info)
            model.compile(optimizer=tf.keras.optimizers.Adam(cfg.train.learning_rate))
        train_fn = model.make_train_function()
        iterators = {k: iter(strategy.experimental_distribute_dataset(make()))
                     for k, make in sources.items()}
        infer_batches = [x for x, _ in from_arrays(keep, info.input_names, spec, batch)
                         .take(24)]
        forward = tf.function(lambda x: model.network(x, training=False))

        def run(kind: str, steps: int) -> float:
            t = time.perf_counter()
            if kind == "inference":
                for i in range(steps):
                    out = forward(infer_batches[i % len(infer_batches)])
                float(out["ctr"][0])
            else:
                for _ in range(steps):
                    logs = train_fn(iterators[kind])
                float(logs["loss"])
            return time.perf_counter() - t

        kinds = list(sources) + ["inference"]
        for kind in kinds:
            run(kind, args.warmup)
        blocks = {kind: [] for kind in kinds}
        for _ in range(args.blocks):
            for kind in kinds:
                blocks[kind].append(run(kind, args.steps))
        rate = {k: batch * args.steps / statistics.median(v) for k, v in blocks.items()}
        for kind in kinds:
            results.append({
                "model": name, "variant": kind, "examples_per_sec": rate[kind],
                "overhead_vs_ideal_pct": (None if kind in ("ideal", "inference") else
                                          100.0 * (rate["ideal"] / rate[kind] - 1.0)),
                "block_seconds": blocks[kind]})
        tf.keras.backend.clear_session()
    report = {"benchmark": "input_pipeline", "rows": args.rows, "batch": batch,
              "replicas": strategy.num_replicas_in_sync, "steps_per_block": args.steps,
              "blocks": args.blocks, "results": results,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "tensorflow": tf.__version__},
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nThroughput at batch {batch}, {args.rows} synthetic rows, median of "
          f"{args.blocks} blocks of {args.steps} steps\n")
    print("| model | variant | examples / s | overhead vs ideal |")
    print("|---|---|---:|---:|")
    for r in results:
        over = r["overhead_vs_ideal_pct"]
        print(f"| {r['model']} | {r['variant']} | {r['examples_per_sec']:.0f} | "
              f"{'-' if over is None else f'{over:+.1f} %'} |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
