"""Beam throughput of the data preparation: ExampleGen, ADM, StatisticsGen, Transform (issue 9).

Runs the KAML pipeline (``configs/kaml.yaml``: it has the ADM Beam component) through Transform
only (``create_pipeline(..., through_transform_only=True)``) on ``--rows`` generated rows, once
per Beam setting, and reads each component's wall time from ML Metadata:

* ``in_memory x1``: ``--direct_running_mode=in_memory --direct_num_workers=1`` (the default);
* ``multi_processing x2``: ``--direct_running_mode=multi_processing --direct_num_workers=2``.

On Dataflow/Flink/Spark the same components run with the runner's ``pipeline.beam_args``
instead. Writes ``benchmarks/results/beam_throughput.json``.

Usage::

    .venv/bin/python benchmarks/beam_throughput.py [--rows 1000000]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {
    "in_memory x1": ["--direct_running_mode=in_memory", "--direct_num_workers=1"],
    "multi_processing x2": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "kaml.yaml"))
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--work", default=os.path.join(ROOT, "work", "bench", "beam"))
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                      "beam_throughput.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    import funnelrank  # noqa: F401  selects Keras 2 before TensorFlow is imported
    from pipeline import local_runner
    from schemas import config as config_lib

    runs = {}
    for setting in args.settings.split(","):
        root = os.path.join(args.work, setting.replace(" ", "_"))
        if os.path.isdir(root):
            shutil.rmtree(root)
        cfg = config_lib.load(args.config, {
            "data.generate_rows": args.rows, "pipeline.root": root,
            "pipeline.beam_args": SETTINGS[setting]})
        print(f"running {setting} on {args.rows} rows", file=sys.stderr)
        runs[setting] = local_runner.run(cfg, through_transform_only=True)
    report = {"benchmark": "beam_throughput", "rows": args.rows,
              "config": os.path.relpath(args.config, ROOT), "runs": runs}
    from funnelrank.commands.bench import write_report

    write_report(args.out, report)
    settings = list(runs)
    components = [c for c in next(iter(runs.values()))["components"]]
    print(f"\nData preparation on {args.rows} synthetic rows (seconds; rows/s)\n")
    print("| component | " + " | ".join(settings) + " |")
    print("|---|" + "---:|" * len(settings))
    for name in components + ["(generate + validate CSV)", "(whole run)"]:
        cells = []
        for setting in settings:
            run = runs[setting]
            seconds = {"(generate + validate CSV)": run["prepare_seconds"],
                       "(whole run)": run["seconds"]}.get(name, run["components"].get(name))
            cells.append("n/a" if seconds is None else
                         f"{seconds:.0f} s ({args.rows / max(seconds, 1e-9):,.0f}/s)")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
