"""Training step time of a loss/model variant against its base config, on the same batches.

Measures what an extra loss term costs per optimizer step, e.g. PWiseR against plain BCE
(issue 4 goal: under 10 % at batch 2048)::

    .venv/bin/python benchmarks/step_overhead.py --config configs/mmoe.yaml \\
        --base "BCE=loss.name=esmm" --variant "PWiseR=loss.name=pwiser" --batch 2048

Each variant is ``LABEL=section.key=value[,section.key=value...]`` (values parsed as YAML).
The batches are ``--batches`` fixed batches of generated synthetic rows (preprocessed as
``funnelrank train`` does), cached in memory and cycled, so the input pipeline costs the same
for every variant and almost nothing. Models are built under ``trainer.strategy.make_strategy``
(the production path) and stepped through Keras' own compiled train function. After
``--warmup`` steps each, variants are timed in interleaved blocks of ``--steps`` steps
(``--blocks`` rounds, ABAB...), so drifts of a shared machine hit every variant alike; the
table reports the median block. Writes ``benchmarks/results/step_overhead_<name>.json``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_variant(text: str):
    """``"LABEL=a.b=1,c.d=x"`` -> ``("LABEL", {"a.b": 1, "c.d": "x"})``."""
    import yaml

    label, sep, rest = text.partition("=")
    if not sep or not rest:
        raise SystemExit(f"--variant {text!r}: expected LABEL=section.key=value[,...]")
    overrides = {}
    for item in rest.split(","):
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--variant {text!r}: {item!r} is not section.key=value")
        overrides[key.strip()] = yaml.safe_load(value)
    return label, overrides


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "mmoe.yaml"))
    parser.add_argument("--variant", action="append", required=True,
                        help="LABEL=section.key=value[,...] (repeatable)")
    parser.add_argument("--base", default="base=",
                        help="LABEL[=section.key=value,...]: the base run (default: the "
                             "config as it is)")
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--name", default=None, help="results file suffix (default: labels)")
    args = parser.parse_args(argv)

    sys.path.insert(0, ROOT)
    import funnelrank  # noqa: F401  selects Keras 2 before TensorFlow is imported
    from benchmarks.speed_model import (configure_threads_as_trained, steps_per_call,
                                        timed_steps)

    configure_threads_as_trained()  # before TF's runtime starts, as `funnelrank train` does
    from schemas import config as config_lib
    from schemas import features
    from trainer.data import from_arrays
    from trainer.model import FeatureInfo
    from trainer.session import build_model, compile_model
    from trainer.strategy import make_strategy
    from transform import preprocessor as preprocess
    from transform.ingest import synthetic

    base_label, _, base_rest = args.base.partition("=")
    base = (base_label, parse_variant(args.base)[1] if base_rest else {})
    variants = [base] + [parse_variant(v) for v in args.variant]
    configs = {label: config_lib.load(args.config, {"train.batch_size": args.batch, **ov})
               for label, ov in variants}
    num_actions = configs[base_label].data.num_actions
    spec = synthetic.spec(num_actions)
    frame = synthetic.generate(args.rows, seed=7, num_actions=num_actions)[list(spec.columns)]
    pre = preprocess.fit(frame, spec)
    arrays = pre.transform(frame)
    info = FeatureInfo(pre.vocab_sizes, spec.dense_keys)
    strategy = make_strategy()
    global_batch = args.batch * strategy.num_replicas_in_sync
    ds = from_arrays(arrays, info.input_names, spec, global_batch, shuffle=True, seed=1,
                     drop_remainder=True).take(args.batches).cache().repeat()
    positives = int(arrays[features.transformed_name(spec.conversion_key)].sum())

    steppers = {}
    for label, cfg in configs.items():
        with strategy.scope():
            model = build_model(cfg, info)
            compile_model(model, cfg)  # as TrainingSession.build
        iterator = iter(strategy.experimental_distribute_dataset(ds))
        steppers[label] = (model.make_train_function(), iterator,
                           steps_per_call(cfg, strategy))

    def run(label: str, steps: int) -> float:
        fn, iterator, spe = steppers[label]
        timed = timed_steps(fn, iterator, steps, spe)
        return timed.seconds / timed.steps

    for label in steppers:
        run(label, args.warmup)
    blocks = {label: [] for label in steppers}
    for _ in range(args.blocks):
        for label in steppers:
            blocks[label].append(run(label, args.steps))

    base_ms = statistics.median(blocks[base_label]) * 1e3
    rows = []
    for label, times in blocks.items():
        ms = statistics.median(times) * 1e3
        rows.append({"variant": label, "overrides": dict(variants)[label],
                     "step_ms_median": ms, "step_ms_blocks": [t * 1e3 for t in times],
                     "examples_per_sec": global_batch / ms * 1e3,
                     "overhead_pct": 100.0 * (ms / base_ms - 1.0)})
    name = args.name or "_".join(v[0].lower() for v in variants[1:])
    result = {"benchmark": "step_overhead", "config": os.path.relpath(args.config, ROOT),
              "batch": global_batch, "replicas": strategy.num_replicas_in_sync,
              "batches_cycled": args.batches, "conversions_in_data": positives,
              "rows": args.rows, "steps_per_block": args.steps, "blocks": args.blocks,
              "results": rows}
    out = os.path.join(ROOT, "benchmarks", "results", f"step_overhead_{name}.json")
    from funnelrank.commands.bench import write_report

    write_report(out, result)
    print(f"\nStep time, {result['config']}, batch {global_batch}, median of {args.blocks} "
          f"blocks of {args.steps} steps\n")
    print("| variant | ms / step | examples / s | overhead vs base |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['step_ms_median']:.1f} | {r['examples_per_sec']:.0f} | "
              f"{r['overhead_pct']:+.1f} % |")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
