"""Training and inference throughput, and what the input pipeline costs (issue 9).

For each model (default: MMoE and PLE as configured in ``configs/``) at batch 2048 on the same
synthetic rows, preprocessed as ``funnelrank train`` does:

* ``ideal``: the train step on batches already in memory (24 batches cached and cycled: no
  parsing, no shuffling, no copies), the upper bound of any input pipeline;
* ``arrays``: ``trainer.data.from_arrays`` (the ``funnelrank train`` path: shuffle, batch,
  split features/labels, prefetch);
* ``tfrecord``: ``trainer.data.from_transformed`` on gzipped tf.Example TFRecords in the layout
  the Transform component writes (the TFX Trainer path when it streams: files interleaved,
  batch, parallel parse, rows permuted within ``train.shuffle_buffer`` windows, prefetch);
* ``tfrecord_in_memory``: the TFX Trainer with ``train.in_memory``: the same TFRecords parsed
  once by ``trainer.data.load_transformed`` (its time is reported separately), then
  ``from_arrays``;
* ``inference``: the exported network's forward pass alone on in-memory batches.

Each variant runs alone (its iterator the only one alive): ``--warmup`` steps, then
``--blocks`` timed blocks of ``--steps`` steps; the table gives the median block and the best
block as examples/second, and each one's overhead against ``ideal`` (the best block is the
least disturbed by a shared machine).
Writes ``benchmarks/results/input_pipeline.json``.

Usage::

    .venv/bin/python benchmarks/input_pipeline.py [--rows 200000] [--models mmoe,ple]
"""
from __future__ import annotations

import argparse
import os
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
    import tensorflow as tf

    import funnelrank  # noqa: F401  selects Keras 2 before TensorFlow is imported
    from benchmarks.speed_model import configure_threads_as_trained

    configure_threads_as_trained()  # before TF's runtime starts, as `funnelrank train` does
    from benchmarks.speed_model import speed_config, steps_per_call, synthetic_rows, timed_steps
    from trainer.data import from_arrays, from_transformed, load_transformed
    from trainer.session import build_model, compile_model
    from trainer.strategy import make_strategy

    data = synthetic_rows(args.rows)
    spec, info, keep = data.spec, data.info, data.columns
    strategy = make_strategy()
    batch = args.batch * strategy.num_replicas_in_sync
    tmp = tempfile.mkdtemp(prefix="funnelrank-input-")
    t0 = time.perf_counter()
    pattern, feature_spec = write_tfrecords(keep, tmp)
    print(f"wrote {args.rows} transformed rows as TFRecords in {time.perf_counter() - t0:.0f}s",
          file=sys.stderr)
    t0 = time.perf_counter()
    loaded = load_transformed(pattern, feature_spec, sorted(keep))  # train.in_memory
    parse_seconds = time.perf_counter() - t0
    print(f"parsed them into memory (train.in_memory) in {parse_seconds:.1f}s", file=sys.stderr)

    sources = {
        "ideal": lambda: from_arrays(keep, info.input_names, spec, batch, shuffle=True, seed=1,
                                     drop_remainder=True).take(24).cache().repeat(),
        "arrays": lambda: from_arrays(keep, info.input_names, spec, batch, shuffle=True,
                                      seed=1, drop_remainder=True).repeat(),
        "tfrecord": lambda: from_transformed(pattern, feature_spec, info.input_names, spec,
                                             batch, shuffle=True, seed=1).repeat(),
        "tfrecord_in_memory": lambda: from_arrays(loaded, info.input_names, spec, batch,
                                                  shuffle=True, seed=1,
                                                  drop_remainder=True).repeat(),
    }
    results = []
    for name in args.models.split(","):
        cfg = speed_config(name, args.batch)
        with strategy.scope():
            model = build_model(cfg, info)
            compile_model(model, cfg)
        train_fn, spe = model.make_train_function(), steps_per_call(cfg, strategy)
        infer_batches = [x for x, _ in from_arrays(keep, info.input_names, spec, batch)
                         .take(24)]
        forward = tf.function(lambda x: model.network(x, training=False))

        def run(kind: str, steps: int, iterator=None) -> float:
            """Seconds per ``steps`` steps (a train call runs ``spe`` of them)."""
            t = time.perf_counter()
            if kind == "inference":
                for i in range(steps):
                    out = forward(infer_batches[i % len(infer_batches)])
                float(out["ctr"][0])
                return time.perf_counter() - t
            timed = timed_steps(train_fn, iterator, steps, spe)
            return timed.seconds * steps / timed.steps

        # One variant at a time, its iterator the only one alive: an idle iterator's
        # prefetch threads would refill in the background and slow the variant being timed.
        kinds = list(sources) + ["inference"]
        blocks = {kind: [] for kind in kinds}
        for kind in kinds:
            iterator = (None if kind == "inference" else
                        iter(strategy.experimental_distribute_dataset(sources[kind]())))
            run(kind, args.warmup, iterator)
            for _ in range(args.blocks):
                blocks[kind].append(run(kind, args.steps, iterator))
            del iterator
        rate = {k: batch * args.steps / statistics.median(v) for k, v in blocks.items()}
        best = {k: batch * args.steps / min(v) for k, v in blocks.items()}
        for kind in kinds:
            plain = kind in ("ideal", "inference")
            results.append({
                "model": name, "variant": kind, "examples_per_sec": rate[kind],
                "overhead_vs_ideal_pct": (None if plain else
                                          100.0 * (rate["ideal"] / rate[kind] - 1.0)),
                "best_block_examples_per_sec": best[kind],
                "best_block_overhead_vs_ideal_pct": (None if plain else
                                                     100.0 * (best["ideal"] / best[kind] - 1.0)),
                "block_seconds": blocks[kind]})
        tf.keras.backend.clear_session()
    report = {"benchmark": "input_pipeline", "rows": args.rows, "batch": batch,
              "replicas": strategy.num_replicas_in_sync, "steps_per_block": args.steps,
              "blocks": args.blocks, "in_memory_parse_seconds": parse_seconds,
              "results": results}
    from funnelrank.commands.bench import write_report

    write_report(args.out, report)
    print(f"\nThroughput at batch {batch}, {args.rows} synthetic rows, median of "
          f"{args.blocks} blocks of {args.steps} steps\n")
    print("| model | variant | examples / s (median) | overhead | best block | overhead (best) |")
    print("|---|---|---:|---:|---:|---:|")
    for r in results:
        over, best_over = r["overhead_vs_ideal_pct"], r["best_block_overhead_vs_ideal_pct"]
        print(f"| {r['model']} | {r['variant']} | {r['examples_per_sec']:.0f} | "
              f"{'-' if over is None else f'{over:+.1f} %'} | "
              f"{r['best_block_examples_per_sec']:.0f} | "
              f"{'-' if best_over is None else f'{best_over:+.1f} %'} |")
    print(f"\ntrain.in_memory: parsing the {args.rows} rows once took {parse_seconds:.1f}s")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
