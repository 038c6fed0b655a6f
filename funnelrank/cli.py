"""``funnelrank`` command line: generate, prepare, train, bench, run, export, serve-check,
compile-kubeflow."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import List, Optional

from schemas._env import ensure_legacy_keras

ensure_legacy_keras()

DEFAULT_CONFIG = "configs/synthetic_mmoe.yaml"


def _load_config(args, overrides=None):
    from schemas import config as config_lib

    return config_lib.load(args.config, overrides)


def cmd_generate(args) -> int:
    from transform.ingest import synthetic

    t0 = time.perf_counter()
    path = synthetic.write_csv(args.out, args.rows, seed=args.seed, num_actions=args.actions)
    print(f"wrote {args.rows} rows to {path} in {time.perf_counter() - t0:.1f}s")
    return 0


def cmd_prepare(args) -> int:
    from transform.ingest import adapters

    overrides = {"data.path": args.data} if args.data else {}
    if args.skip_bad_rows:
        overrides["data.skip_bad_rows"] = True
    cfg = _load_config(args, overrides)
    prepared = adapters.prepare(cfg.data, os.path.join(cfg.pipeline.root, "data"))
    print(f"prepared {prepared.rows} under {os.path.join(cfg.pipeline.root, 'data', 'prepared')}")
    print(adapters.describe_drops(prepared))
    return 0


def cmd_train(args) -> int:
    from funnelrank.commands import train as train_local
    from trainer.strategy import configure_cpu_replicas

    configure_cpu_replicas(args.cpu_replicas)
    overrides = {}
    if args.data:
        overrides["data.path"] = args.data
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    if args.seed is not None:
        overrides["train.seed"] = args.seed
    if args.rows is not None:
        overrides["data.generate_rows"] = args.rows
    if args.skip_bad_rows:
        overrides["data.skip_bad_rows"] = True
    cfg = _load_config(args, overrides)
    out = args.out or os.path.join("work", "train", cfg.name)
    train_local.train(cfg, out)
    print(f"metrics: {os.path.join(out, train_local.METRICS_FILE)}")
    return 0


def cmd_run(args) -> int:
    from pipeline import local_runner

    overrides = {"pipeline.root": args.root} if args.root else {}
    if args.data:
        overrides["data.path"] = args.data
    if args.rows is not None:
        overrides["data.generate_rows"] = args.rows
    if args.skip_bad_rows:
        overrides["data.skip_bad_rows"] = True
    cfg = _load_config(args, overrides)
    result = local_runner.run(cfg)
    print(json.dumps(result["evaluation"], indent=2, sort_keys=True))
    for head, m in sorted(result["evaluation"].items()):
        if "auc" in m:
            print(f"evaluation {head} AUC: {m['auc']:.4f}")
    for head, m in sorted((result.get("trainer") or {}).get("heads", {}).items()):
        gauc = m.get("gauc")
        if gauc is not None and gauc == gauc:  # not NaN
            print(f"trainer eval split {head} GAUC: {gauc:.4f} (AUC {m['auc']:.4f})")
    if result["pushed_model"]:
        print(f"pushed model: {result['pushed_model']}")
    else:
        print(f"model NOT pushed: the Evaluator did not bless it (ctr AUC must exceed "
              f"eval.min_ctr_auc={cfg.eval.min_ctr_auc})")
    print(f"pipeline wall time: {result['seconds']:.0f}s")
    return 0 if result["pushed_model"] else 3


def cmd_bench(args) -> int:
    if args.throughput:
        return _throughput(args)
    if not args.grid:
        raise SystemExit("funnelrank bench: give --grid GRID.yaml or --throughput")
    from funnelrank.commands import bench

    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    only = [label.strip() for label in args.runs.split(";")] if args.runs else None
    grid = bench.load_grid(args.grid, rows=args.rows, seeds=seeds, only=only)
    bench.run_grid(grid, args.out or os.path.join("benchmarks", "results", grid.name))
    return 0


def _throughput(args) -> int:
    """``bench --throughput``: runs ``benchmarks/throughput.py`` (needs the source checkout:
    the peers' scripts live beside it)."""
    import runpy

    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks", "throughput.py")
    if not os.path.exists(script):
        raise SystemExit(f"funnelrank bench --throughput needs the source checkout: {script} "
                         "does not exist (install with `pip install -e .` from a clone)")
    argv = []  # each option left out keeps the script's default
    if args.rows:
        argv += ["--rows", str(args.rows)]
    if args.out:
        argv += ["--out", args.out]
    if args.peers is not None:
        argv += ["--peers", args.peers]
    if args.peer_venvs:
        argv += ["--venv-dir", args.peer_venvs]
    if args.models:
        argv += ["--models", args.models]
    return runpy.run_path(script)["main"](argv)


def cmd_export(args) -> int:
    from funnelrank.commands import serving as cli_commands

    return cli_commands.export_main(args)


def cmd_serve_check(args) -> int:
    from funnelrank.commands import serving as cli_commands

    return cli_commands.serve_check_main(args)


def cmd_compile_kubeflow(args) -> int:
    from pipeline import kubeflow_runner

    cfg = _load_config(args)
    path = kubeflow_runner.compile_pipeline(cfg, args.out)
    print(f"wrote Kubeflow V2 pipeline spec to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="funnelrank", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="write a synthetic impression log")
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--actions", type=int, default=5, help="conversion actions")
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser("prepare", help="validate and normalise data for the pipeline")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--data", help="CSV file or directory (overrides data.path)")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="drop invalid rows (counted and reported per reason) instead of failing")
    p.set_defaults(fn=cmd_prepare)

    p = sub.add_parser("train", help="fast in-process training without TFX")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--data", help="CSV file or directory (overrides data.path)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, help="overrides train.seed")
    p.add_argument("--rows", type=int, help="synthetic rows to generate (data.generate_rows)")
    p.add_argument("--out", help="output directory (default work/train/<name>)")
    p.add_argument("--cpu-replicas", type=int, default=1,
                   help="split the CPU into N logical devices for MirroredStrategy")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="drop invalid rows (counted and reported per reason) instead of failing")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("run", help="run the TFX pipeline locally (Beam DirectRunner)")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--data", help="CSV file or directory (overrides data.path)")
    p.add_argument("--rows", type=int, help="synthetic rows to generate (data.generate_rows)")
    p.add_argument("--root", help="work directory (overrides pipeline.root)")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="drop invalid rows (counted and reported per reason) instead of failing")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("bench", help="run a grid of fast-path trainings, seeds averaged; or "
                       "--throughput: examples/s of MMoE and PLE beside DeepCTR, torch-rechub")
    p.add_argument("--grid", help="grid YAML (see trainer/bench.py)")
    p.add_argument("--throughput", action="store_true",
                   help="training/inference examples/s at batch 2048 against the peers, each "
                        "installed in its own throwaway venv (benchmarks/throughput.py)")
    p.add_argument("--peers", help="with --throughput: comma-separated peers "
                                   "(default deepctr,torch-rechub; '' for none)")
    p.add_argument("--models", help="with --throughput: comma-separated configs/<name>.yaml "
                                    "models (default mmoe,ple)")
    p.add_argument("--peer-venvs", help="with --throughput: where the peers' venvs and the "
                                        "shared data file go (default work/peers)")
    p.add_argument("--rows", type=int, help="override the grid's synthetic rows "
                                            "(--throughput: default 200000)")
    p.add_argument("--seeds", help="comma-separated train seeds (override the grid's)")
    p.add_argument("--runs", help="only these runs: labels separated by ';'")
    p.add_argument("--out", help="results directory (default benchmarks/results/<name>); "
                                  "--throughput: the JSON file")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("export", help="export `funnelrank train` output for TF Serving")
    p.add_argument("--model", required=True,
                   help="`funnelrank train` output directory (model/ and preprocessor.json)")
    p.add_argument("--out", required=True,
                   help="base directory; the export goes to OUT/<version>/")
    p.add_argument("--version", type=int, help="version number (default: unix seconds)")
    p.add_argument("--name", default="funnelrank", help="model name in OUT/models.config")
    p.add_argument("--warmup-csv", help="CSV whose first rows become the warmup requests")
    p.add_argument("--base-path", help="OUT as the server sees it (e.g. /models/funnelrank)")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("serve-check", help="load an export as TF Serving does, replay warmup")
    p.add_argument("model_dir", help="a version directory or a base directory of versions")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per warmup request")
    p.add_argument("--json", help="also write the report as JSON here")
    p.set_defaults(fn=cmd_serve_check)

    p = sub.add_parser("compile-kubeflow", help="compile the pipeline for Kubeflow V2")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--out", required=True, help="output JSON file")
    p.set_defaults(fn=cmd_compile_kubeflow)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from schemas.config import ConfigError
    from trainer.errors import TrainingDivergedError
    from transform.ingest.validate import DataValidationError

    errors = (ConfigError, DataValidationError, FileNotFoundError, TrainingDivergedError)
    if args.command == "run":
        from pipeline.anomaly_gate import DataAnomaliesError

        errors += (DataAnomaliesError,)
    try:
        return args.fn(args)
    except errors as e:
        print(f"funnelrank {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
