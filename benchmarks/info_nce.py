"""Forward and backward time of AdaFTR's in-batch InfoNCE (eq. 13) in isolation.

Times, at b = B anchors of width d, the gradient of the batch mean of
``trainer.losses.contrastive.info_nce_rows`` (the project's) against the same formula with
TensorFlow's ``reduce_logsumexp`` and its autodiff gradient (the code before issue 18's round 4),
and the three ``b x B x d`` matmuls alone (the floor no formula avoids). Variants are timed in
interleaved blocks (``--blocks`` rounds of ``--calls`` calls each) in one process; the table
reports the median block. TF's intra-op pool is set as ``funnelrank train`` sets it
(``train.intra_op_threads``) unless ``--intra-op`` says otherwise. Writes ``--out``
(default ``benchmarks/results/info_nce.json``).

Usage::

    .venv/bin/python benchmarks/info_nce.py [--rows 1024] [--dim 64] [--intra-op N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def variants(tf):
    """name -> ``f(anchor, positive, tau) -> [b]`` with the same gradients (but ``matmuls``)."""
    from trainer.losses.contrastive import info_nce_rows

    def autodiff_logsumexp(anchor, positive, tau):
        scaled = anchor / tf.reshape(tau, [-1, 1])
        logits = tf.matmul(scaled, positive, transpose_b=True)
        return tf.reduce_logsumexp(logits, axis=-1) - tf.reduce_sum(scaled * positive, -1)

    def matmuls(anchor, positive, tau):
        scaled = anchor / tf.reshape(tau, [-1, 1])
        return tf.reduce_sum(tf.matmul(scaled, positive, transpose_b=True), axis=-1) * 1e-3

    return {"info_nce_rows (project)": info_nce_rows,
            "reduce_logsumexp + autodiff": autodiff_logsumexp,
            "the matmuls alone": matmuls}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--intra-op", type=int, default=None,
                        help="TF intra-op threads (default: as funnelrank train sets them)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                      "info_nce.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from benchmarks.speed_model import configure_threads_as_trained
    from funnelrank.commands.bench import write_report
    from trainer.strategy import configure_threads

    if args.intra_op is None:
        configure_threads_as_trained()
    else:
        configure_threads(args.intra_op, 0)
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    anchor = tf.Variable(rng.normal(size=(args.rows, args.dim)).astype("float32") * 0.3)
    positive = tf.Variable(rng.normal(size=(args.rows, args.dim)).astype("float32") * 0.3)
    tau = tf.constant(rng.uniform(0.05, 1.0, size=args.rows).astype("float32"))

    def step_of(fn):
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(fn(anchor, positive, tau))
            return loss, tape.gradient(loss, [anchor, positive])
        return step

    steps = {name: step_of(fn) for name, fn in variants(tf).items()}
    first = [s() for s in steps.values()]  # trace; the first two must agree
    worst = max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(first[0][1], first[1][1]))
    if worst > 1e-5:
        raise SystemExit(f"the InfoNCE variants disagree: max gradient difference {worst}")
    blocks = {name: [] for name in steps}
    for _ in range(args.blocks):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.calls):
                out = step()
            float(out[0])
            blocks[name].append((time.perf_counter() - t0) / args.calls * 1e3)
    rows = [{"variant": name, "ms": statistics.median(v), "blocks_ms": v}
            for name, v in blocks.items()]
    print(f"| b = B = {args.rows}, d = {args.dim} | ms (forward + backward, median block) |")
    print("|---|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['ms']:.2f} |")
    write_report(args.out, {"benchmark": "info_nce", "rows": args.rows, "dim": args.dim,
                            "intra_op": args.intra_op, "max_gradient_difference": worst,
                            "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
