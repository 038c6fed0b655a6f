"""Start-up: the first epoch (tracing the train and test steps) against the next ones (issue 18).

One process per setting, since TensorFlow's thread pools are fixed once its runtime starts:
builds ``configs/<model>.yaml`` as the speed benchmarks do (the peers' model), fits 3 epochs
of ``--rows`` synthetic rows with validation on the same rows, and reports each epoch's
seconds and the first epoch's extra time over the fastest later one.

Usage::

    .venv/bin/python benchmarks/startup.py [--model mmoe] [--rows 40000]
        [--steps-per-execution 8] [--intra-op-threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mmoe")
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--steps-per-execution", type=int, default=None,
                        help="default: the config's train.steps_per_execution")
    parser.add_argument("--intra-op-threads", type=int, default=None,
                        help="default: the config's train.intra_op_threads (0: TF's)")
    parser.add_argument("--out", default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    import funnelrank  # noqa: F401  selects Keras 2 before TensorFlow is imported
    from benchmarks.speed_model import epoch_timer, speed_config, synthetic_rows

    overrides = {}
    if args.steps_per_execution is not None:
        overrides["train.steps_per_execution"] = args.steps_per_execution
    if args.intra_op_threads is not None:
        overrides["train.intra_op_threads"] = args.intra_op_threads
    cfg = speed_config(args.model, args.batch, overrides)
    from trainer.strategy import configure_threads

    configure_threads(cfg.train.intra_op_threads, cfg.train.inter_op_threads)

    from trainer.data import from_arrays
    from trainer.session import build_model, compile_model

    data = synthetic_rows(args.rows)
    spec, info, keep = data.spec, data.info, data.columns
    model = compile_model(build_model(cfg, info), cfg)
    times = []
    model.fit(from_arrays(keep, info.input_names, spec, args.batch, shuffle=True, seed=1),
              validation_data=from_arrays(keep, info.input_names, spec, args.batch),
              epochs=3, verbose=0, callbacks=[epoch_timer(times)])
    result = {"benchmark": "startup", "model": args.model, "rows": args.rows,
              "batch": args.batch, "steps_per_execution": cfg.train.steps_per_execution,
              "intra_op_threads": cfg.train.intra_op_threads, "epoch_seconds": times,
              "first_epoch_extra_seconds": times[0] - min(times[1:])}
    print(f"{args.model}: first epoch {times[0]:.1f} s, then "
          f"{', '.join(f'{t:.2f}' for t in times[1:])} s (steps per call "
          f"{cfg.train.steps_per_execution}, intra-op threads {cfg.train.intra_op_threads})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
