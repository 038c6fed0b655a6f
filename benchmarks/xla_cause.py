"""Why ``train.jit_compile`` (XLA) slows training on CPU: the pieces of a ranking model alone.

Plain Keras models, each trained with and without ``jit_compile`` on one cached batch (no input
pipeline): a dense MLP, an embedding lookup whose table trains, the same lookup with a frozen
table (the gather without its gradient), and the embedding + MLP. The train step's median over
5 blocks of 40 steps after 20 warm-up steps. Writes ``benchmarks/results/xla_cause.json``.

Usage::

    .venv/bin/python benchmarks/xla_cause.py [--batch 2048]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURES, VOCAB, DIM = 12, 3000, 8


def _models(tf):
    def head(h):
        return tf.keras.layers.Dense(1, "sigmoid")(h)

    def mlp(h):
        for _ in range(3):
            h = tf.keras.layers.Dense(64, "relu")(h)
        return h

    def lookup(trainable):
        ids = tf.keras.Input((FEATURES,), dtype="int64")
        table = tf.keras.layers.Embedding(VOCAB, DIM, trainable=trainable)
        return ids, tf.keras.layers.Flatten()(table(ids))

    def dense_mlp():
        x = tf.keras.Input((FEATURES * DIM,))
        return tf.keras.Model(x, head(mlp(x)))

    def embedding(trainable=True, deep=False):
        def make():
            ids, h = lookup(trainable)
            return tf.keras.Model(ids, head(mlp(h) if deep else h))
        return make

    return {"MLP 96-64-64-64-1 on dense input": (dense_mlp, "dense"),
            f"embedding {FEATURES} x ({VOCAB}, {DIM}), trained, + logit": (embedding(), "ids"),
            "the same table frozen (gather, no gather gradient)": (embedding(False), "ids"),
            "embedding (trained) + MLP": (embedding(deep=True), "ids")}


def step_ms(tf, make, x, y, jit: bool, warmup: int = 20, steps: int = 40,
            blocks: int = 5) -> float:
    tf.keras.utils.set_random_seed(0)
    model = make()
    model.compile(optimizer=tf.keras.optimizers.Adam(0.001), loss="binary_crossentropy",
                  jit_compile=jit)
    iterator = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
    fn = model.make_train_function()
    for _ in range(warmup):
        fn(iterator)
    times = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(steps):
            logs = fn(iterator)
        float(logs["loss"])
        times.append((time.perf_counter() - t0) / steps * 1e3)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                      "xla_cause.json"))
    args = parser.parse_args(argv)
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, ROOT)
    from funnelrank.commands.bench import write_report

    rng = np.random.default_rng(0)
    inputs = {"dense": tf.constant(rng.normal(size=(args.batch, FEATURES * DIM)), tf.float32),
              "ids": tf.constant(rng.integers(0, VOCAB, size=(args.batch, FEATURES)), tf.int64)}
    y = tf.constant(rng.random((args.batch, 1)) < 0.05, tf.float32)
    rows = []
    print(f"| model (batch {args.batch}) | ms / step | XLA ms / step | XLA change |")
    print("|---|---:|---:|---:|")
    for label, (make, kind) in _models(tf).items():
        plain = step_ms(tf, make, inputs[kind], y, jit=False)
        xla = step_ms(tf, make, inputs[kind], y, jit=True)
        rows.append({"model": label, "ms": plain, "xla_ms": xla, "change": xla / plain - 1})
        print(f"| {label} | {plain:.2f} | {xla:.2f} | {xla / plain - 1:+.0%} |")
    write_report(args.out, {"benchmark": "xla_cause", "batch": args.batch, "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
