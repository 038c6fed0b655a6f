"""Where the train step's time goes: the in-memory ideal step under variants (issue 9).

The "ideal" of ``benchmarks/throughput.py`` (the train step on 24 batches of 2048 cached in
memory: no input pipeline) for MMoE and PLE, each variant in its own process:

* ``production``: as ``funnelrank train`` runs it (issue 18: no strategy on one device, no
  training-time AUCs, ``FusedAdam``, ``train.steps_per_execution`` steps per call, TF's
  intra-op pool at ``train.intra_op_threads``);
* ``tf_default_threads``: TF's own thread pools (one thread per core for each op);
* ``one_step_per_call``: ``train.steps_per_execution: 1`` (Keras' default);
* ``keras_adam``: tf-keras' Adam (about ten ops per weight) instead of ``FusedAdam``;
* ``before_issue18_round2``: the three above together (the step of issue 18's first round);
* ``no_strategy``: TF's default strategy (the same as ``production`` on one device);
* ``no_train_auc``: without the per-head AUC metrics (the train step no longer updates them
  by default);
* ``xla``: the production step compiled with XLA (``train.jit_compile``);
* ``cpu_replicas_2``: MirroredStrategy over 2 logical CPU devices (``--cpu-replicas 2``).

Each runs 20 warm-up calls, then 5 blocks of 40 steps; ``--rounds`` repeats the whole list
(the processes of a round one after the other, so that a slow spell of a shared machine hits
every variant); the table gives the median over rounds of each process's median block as
examples/second and the change against ``production``. Writes
``benchmarks/results/step_variants.json``.

Usage::

    .venv/bin/python benchmarks/step_variants.py [--rows 200000] [--models mmoe,ple]
        [--variants production,tf_default_threads,...] [--rounds 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("production", "tf_default_threads", "one_step_per_call", "keras_adam",
            "before_issue18_round2", "no_strategy", "no_train_auc", "xla", "cpu_replicas_2")
ROUND1 = ("tf_default_threads", "before_issue18_round2")  # TF's own thread pools
ONE_STEP = ("one_step_per_call", "before_issue18_round2")
KERAS_ADAM = ("keras_adam", "before_issue18_round2")


def measure(variant: str, model_name: str, data: str, batch: int) -> dict:
    """One variant's median examples/s (runs in a fresh process: see :func:`main`)."""
    if variant == "cpu_replicas_2":
        from trainer.strategy import configure_cpu_replicas

        configure_cpu_replicas(2)
    if variant in ROUND1:
        from trainer.strategy import configure_threads

        configure_threads(0, 0)
    else:
        from benchmarks.speed_model import configure_threads_as_trained

        configure_threads_as_trained(model_name)  # before TF's runtime starts, as the CLI does
    import numpy as np
    import tensorflow as tf

    from benchmarks.speed_model import speed_config, steps_per_call, timed_steps
    from trainer.data import from_arrays
    from transform.ingest import synthetic
    from trainer.model import FeatureInfo
    from trainer.session import build_model, compile_model
    from trainer.strategy import make_strategy

    loaded = np.load(data)
    vocab = json.loads(str(loaded["vocab"]))
    arrays = {k: loaded[k] for k in loaded.files if k != "vocab"}
    spec = synthetic.spec()
    info = FeatureInfo(vocab, spec.dense_keys)
    overrides = {"train.jit_compile": variant == "xla"}
    if variant in ONE_STEP:
        overrides["train.steps_per_execution"] = 1
    cfg = speed_config(model_name, batch, overrides)
    strategy = tf.distribute.get_strategy() if variant == "no_strategy" else make_strategy()
    with strategy.scope():
        model = build_model(cfg, info)
        if variant == "no_train_auc":
            model.aucs = {}
        compile_model(model, cfg)
        if variant in KERAS_ADAM:
            model.compile(optimizer=tf.keras.optimizers.Adam(cfg.train.learning_rate),
                          steps_per_execution=steps_per_call(cfg, strategy))
    cached = from_arrays(arrays, info.input_names, spec, batch, shuffle=True, seed=1,
                         drop_remainder=True).take(24).cache().repeat()
    iterator = iter(strategy.experimental_distribute_dataset(cached))
    step, spe = model.make_train_function(), steps_per_call(cfg, strategy)
    timed_steps(step, iterator, 20 * spe, spe)  # warm-up: 20 calls
    blocks = []
    for _ in range(5):
        timed = timed_steps(step, iterator, 40, spe)
        blocks.append(timed.steps * batch / timed.seconds)
    return {"variant": variant, "model": model_name, "replicas": strategy.num_replicas_in_sync,
            "examples_per_sec": statistics.median(blocks), "blocks": blocks}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--models", default="mmoe,ple")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=1)
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
    runs = []
    for r in range(args.rounds):
        for model in args.models.split(","):
            for variant in args.variants.split(","):
                print(f"round {r + 1}: {model} {variant} ...", file=sys.stderr, flush=True)
                runs.append(result_of([sys.executable, os.path.abspath(__file__), "--one",
                                       variant, model, "--work", args.work, "--batch",
                                       str(args.batch)], f"{model} {variant}"))
    results = []
    for model in args.models.split(","):
        for variant in args.variants.split(","):
            mine = [r for r in runs if r["model"] == model and r["variant"] == variant]
            results.append({**mine[0], "examples_per_sec": statistics.median(
                r["examples_per_sec"] for r in mine),
                "rounds": [r["examples_per_sec"] for r in mine]})
    report = {"benchmark": "step_variants", "rows": args.rows, "batch": args.batch,
              "steps_per_block": 40, "blocks": 5, "rounds": args.rounds, "results": results}
    from funnelrank.commands.bench import write_report

    write_report(args.out, report)
    print(f"\nIdeal train step at batch {args.batch}, median of 5 blocks of 40 steps, median "
          f"of {args.rounds} round(s)\n")
    print("| model | variant | replicas | examples / s | each round | vs production |")
    print("|---|---|---:|---:|---|---:|")
    for r in results:
        base = [b["examples_per_sec"] for b in results
                if b["model"] == r["model"] and b["variant"] == "production"]
        change = f"{r['examples_per_sec'] / base[0] - 1:+.1%}" if base else "n/a"
        rounds = ", ".join(f"{v:.0f}" for v in r["rounds"])
        print(f"| {r['model']} | {r['variant']} | {r['replicas']} | "
              f"{r['examples_per_sec']:.0f} | {rounds} | {change} |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
