"""Fused experts and a fused embedding table against the per-expert / per-feature forms (issue 18).

The in-memory training step of ``benchmarks/step_variants.py`` (24 cached batches, Keras
``make_train_function``) for MMoE and PLE with the sizes of ``configs/mmoe.yaml`` /
``configs/ple.yaml``, in four forms: experts per expert or fused (``backbone_args.fused_experts``)
x embeddings per feature or in one table (``model.embedding_fused``). All forms are built in ONE
process and timed in interleaved blocks (the order rotates every block), so a busy machine slows
them alike; the table gives each form's median block and the median over blocks of its ratio to
the per-expert/per-feature form in the same block. On a shared machine the wall-clock numbers
move with the other processes' load; the process CPU time per block (all of TensorFlow's
threads) moves much less, so the table also gives examples per CPU-second and its median block
ratio.

The step runs under TF's default strategy without the per-head training AUCs (the step issue 18
asks for on one device); ``--production`` times it under ``trainer.strategy.make_strategy()``
with the AUCs instead. Writes ``benchmarks/results/fused_variants.json``.

Usage::

    .venv/bin/python benchmarks/fused_variants.py [--rows 200000] [--models mmoe,ple]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# form -> (fused_experts, fused embedding table)
FORMS = {"per_expert+per_feature": (False, False), "fused_experts+per_feature": (True, False),
         "per_expert+fused_table": (False, True), "fused_experts+fused_table": (True, True)}
BASE = "per_expert+per_feature"


def build_step(model_name: str, form: str, arrays, info, spec, batch: int, production: bool):
    """(train function, iterator) of one form, built and traced."""
    import tensorflow as tf

    from schemas import config as config_lib
    from benchmarks.speed_model import speed_config, steps_per_call
    from trainer.data import from_arrays
    from trainer.session import build_model, compile_model
    from trainer.strategy import make_strategy

    experts, table = FORMS[form]
    raw = config_lib.to_dict(speed_config(model_name, batch))
    raw["model"]["backbone_args"] = {**raw["model"]["backbone_args"], "fused_experts": experts}
    raw["model"]["embedding_fused"] = table
    cfg = config_lib.from_dict(raw)
    strategy = make_strategy() if production else tf.distribute.get_strategy()
    with strategy.scope():
        model = build_model(cfg, info)
        if not production:
            model.aucs = {}
        compile_model(model, cfg)
    cached = from_arrays(arrays, info.input_names, spec, batch, shuffle=True, seed=1,
                         drop_remainder=True).take(24).cache().repeat()
    iterator = iter(strategy.experimental_distribute_dataset(cached))
    return model.make_train_function(), iterator, steps_per_call(cfg, strategy)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--models", default="mmoe,ple")
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--steps", type=int, default=40, help="steps per block")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--production", action="store_true")
    parser.add_argument("--work", default=os.path.join(ROOT, "work", "bench", "fused"))
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                      "fused_variants.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    import funnelrank  # noqa: F401  selects Keras 2 before TensorFlow is imported
    from benchmarks.speed_model import configure_threads_as_trained, timed_steps

    configure_threads_as_trained()  # before TF's runtime starts, as `funnelrank train` does
    import runpy

    from funnelrank.commands.bench import write_report
    from trainer.model import FeatureInfo

    os.makedirs(args.work, exist_ok=True)
    export_data = runpy.run_path(os.path.join(ROOT, "benchmarks", "throughput.py"))["export_data"]
    pre, arrays, spec = export_data(args.rows, os.path.join(args.work, "peer_data.npz"))
    info = FeatureInfo(pre.vocab_sizes, spec.dense_keys)
    results = []
    for model_name in args.models.split(","):
        steps = {}
        for form in FORMS:
            print(f"{model_name} {form}: building ...", file=sys.stderr, flush=True)
            steps[form] = build_step(model_name, form, arrays, info, spec, args.batch,
                                     args.production)
            step, iterator, spe = steps[form]
            timed_steps(step, iterator, args.warmup * spe, spe)  # warm-up: --warmup calls
        forms = list(FORMS)
        blocks = {form: [] for form in forms}
        cpu_blocks = {form: [] for form in forms}
        for b in range(args.blocks):
            for form in forms[b % len(forms):] + forms[:b % len(forms)]:
                step, iterator, spe = steps[form]
                timed = timed_steps(step, iterator, args.steps, spe)
                examples = timed.steps * args.batch
                blocks[form].append(examples / timed.seconds)
                cpu_blocks[form].append(examples / timed.cpu_seconds)
        for form in forms:
            ratio = lambda got: statistics.median(v / base for v, base in zip(got[form],
                                                                              got[BASE]))
            results.append({"model": model_name, "form": form,
                            "examples_per_sec": statistics.median(blocks[form]),
                            "ratio_to_base": ratio(blocks),
                            "examples_per_cpu_sec": statistics.median(cpu_blocks[form]),
                            "cpu_ratio_to_base": ratio(cpu_blocks),
                            "blocks": blocks[form], "cpu_blocks": cpu_blocks[form]})
    report = {"benchmark": "fused_variants", "rows": args.rows, "batch": args.batch,
              "steps_per_block": args.steps, "blocks": args.blocks,
              "step": "production" if args.production else "default strategy, no train AUC",
              "results": results}
    write_report(args.out, report)
    print(f"\nTrain step at batch {args.batch} ({report['step']}), median of {args.blocks} "
          f"interleaved blocks of {args.steps} steps\n")
    print(f"| model | form | examples / s | vs {BASE} | examples / CPU-s | vs {BASE} |")
    print("|---|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['model']} | {r['form']} | {r['examples_per_sec']:.0f} | "
              f"{r['ratio_to_base'] - 1:+.1%} | {r['examples_per_cpu_sec']:.0f} | "
              f"{r['cpu_ratio_to_base'] - 1:+.1%} |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
