"""``funnelrank`` command line: generate, prepare, train, bench, run, export, serve-check,
compile-kubeflow.

Exit status: 0 success; 2 bad input (config, data, paths, model directories: one message on
stderr naming what and where); 3 ``run`` finished but the Evaluator did not bless the model
(nothing pushed); 1 ``serve-check`` found a failing check; 143 stopped by SIGTERM after a
checkpoint (run the same command to resume).
Any other failure prints a traceback: that is a bug, please report it.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Dict, List, Optional

from schemas._env import ensure_legacy_keras

ensure_legacy_keras()

DEFAULT_CONFIG = "configs/synthetic_mmoe.yaml"
EXIT_BAD_INPUT, EXIT_NOT_BLESSED, EXIT_PREEMPTED = 2, 3, 143


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("funnelrank")
    except Exception:  # not installed (a source tree on PYTHONPATH)
        return "unknown (not installed)"


def _overrides(args) -> Dict[str, object]:
    """``--set`` assignments and the shorthand options, as ``section.key`` -> value."""
    from schemas import config as config_lib

    out = config_lib.parse_set(getattr(args, "set", None) or [])
    shorthands = {"data": "data.path", "epochs": "train.epochs", "seed": "train.seed",
                  "rows": "data.generate_rows", "root": "pipeline.root"}
    for attr, key in shorthands.items():
        value = getattr(args, attr, None)
        if value is not None:
            out[key] = os.path.abspath(value) if attr == "data" else value
    if getattr(args, "skip_bad_rows", False):
        out["data.skip_bad_rows"] = True
    return out


def _load_config(args, check: bool = True):
    """The config of ``--config`` with the overrides applied, checked before any data work."""
    from schemas import config as config_lib

    cfg = config_lib.load(args.config, _overrides(args))
    if check:
        from trainer.preflight import check_experiment

        check_experiment(cfg)
    return cfg


def cmd_generate(args) -> int:
    import time

    from schemas import checks
    from schemas.config import ConfigError
    from transform.ingest import synthetic

    checks.check_positive_int("--rows", args.rows, error=ConfigError)
    checks.check_positive_int("--actions", args.actions, error=ConfigError)
    checks.check_seed("--seed", args.seed, error=ConfigError)
    checks.check_number("--missing-rate", args.missing_rate, low=0.0, high=1.0, high_open=True,
                        error=ConfigError)
    t0 = time.perf_counter()
    path = synthetic.write_csv(args.out, args.rows, seed=args.seed, num_actions=args.actions,
                               mode=args.mode, string_ids=args.string_ids,
                               missing_rate=args.missing_rate)
    print(f"wrote {args.rows} rows to {path} in {time.perf_counter() - t0:.1f}s")
    return 0


def cmd_prepare(args) -> int:
    from schemas import features
    from transform.ingest import prepare

    cfg = _load_config(args)
    spec = features.spec_from_config(cfg.data, cfg.funnel)
    prepared = prepare.prepare(cfg.data, spec, f"{cfg.pipeline.root}/data")
    print(f"prepared {prepared.rows} rows under {prepared.root}"
          + (" (the same content as before: kept as it was)" if prepared.reused else ""))
    print(prepare.describe_drops(prepared))
    return 0


def cmd_train(args) -> int:
    from funnelrank.commands import train
    from trainer.strategy import configure_cpu_replicas, configure_threads

    configure_cpu_replicas(args.cpu_replicas)
    cfg = _load_config(args)
    # Before the data step runs TF ops: the thread pools are fixed once the runtime starts.
    configure_threads(cfg.train.intra_op_threads, cfg.train.inter_op_threads)
    out = args.out or os.path.join("work", "train", cfg.name)
    _refuse_file(out, "--out")
    if args.baseline:
        import yaml

        from funnelrank.commands import baseline
        from schemas.config import ConfigError
        from trainer import baselines

        try:
            extra = yaml.safe_load(args.baseline_args) if args.baseline_args else {}
        except yaml.YAMLError as e:
            raise ConfigError(f"--baseline-args: not valid YAML: {e}") from None
        if not isinstance(extra, dict):
            raise ConfigError(f"--baseline-args: expected a mapping, got {extra!r}")
        baseline.run(cfg, baselines.parse({**extra, "name": args.baseline}, "--baseline-args"),
                     os.path.join(out, args.baseline) if not args.out else out)
        return 0
    train.train(cfg, out, warm_start_from=args.warm_start)
    print(f"metrics: {os.path.join(out, train.METRICS_FILE)}")
    return 0


def cmd_run(args) -> int:
    from pipeline import local_runner
    from trainer.strategy import configure_threads

    cfg = _load_config(args)
    # The in-process Trainer (LocalDagRunner) trains with them only when set before any
    # component starts TF's runtime.
    configure_threads(cfg.train.intra_op_threads, cfg.train.inter_op_threads)
    result = local_runner.run(cfg, progress=not args.quiet)
    for head, m in sorted(result["evaluation"].items()):
        if "auc" in m:
            print(f"evaluation {head} AUC: {m['auc']:.4f}")
    for head, m in sorted((result.get("trainer") or {}).get("heads", {}).items()):
        gauc = m.get("gauc")
        if gauc is not None and gauc == gauc:  # not NaN
            print(f"trainer eval split {head} GAUC: {gauc:.4f} (AUC {m['auc']:.4f})")
    ok = bool(result["pushed_model"])
    if result["pushed_model"]:
        print(f"pushed model: {result['pushed_model']}")
    elif "Pusher" in result.get("cached", ()):
        # Nothing changed since a run whose Trainer, Evaluator and Pusher TFX reused.
        ok = result["blessed"]
        print(f"nothing new to push: the model, its evaluation and its push came from the "
              f"cache (an earlier run with the same data and settings; "
              f"{'blessed' if ok else 'NOT blessed'}); the newest pushed "
              f"model: {result['last_pushed_model']}")
    else:
        print(f"model NOT pushed: the Evaluator did not bless it (its {result['bless_head']} AUC "
              f"must exceed eval.min_auc={cfg.eval.min_auc} and not drop more than "
              f"eval.max_auc_drop={cfg.eval.max_auc_drop} below the last blessed model's)")
    print(f"pipeline wall time: {result['seconds']:.0f}s; full log: {result['log_file']}")
    return 0 if ok else EXIT_NOT_BLESSED


def cmd_bench(args) -> int:
    if args.throughput:
        return _throughput(args)
    from schemas.config import ConfigError

    if not args.grid:
        raise ConfigError("funnelrank bench: give --grid GRID.yaml or --throughput")
    from funnelrank.commands import bench

    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    only = [label.strip() for label in args.runs.split(";")] if args.runs else None
    grid = bench.load_grid(args.grid, rows=args.rows, seeds=seeds, only=only)
    out = args.out or os.path.join("benchmarks", "results", grid.name)
    if args.report:
        bench.report_stored(grid, out)
    else:
        from funnelrank.commands.run_cache import RunCache

        cache = None if args.no_cache else RunCache(args.cache_dir)
        bench.run_grid(grid, out, cache=cache)
    return 0


def _throughput(args) -> int:
    """``bench --throughput``: runs ``benchmarks/throughput.py`` (needs the source checkout:
    the peers' scripts live beside it)."""
    import runpy

    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks", "throughput.py")
    if not os.path.exists(script):
        raise FileNotFoundError(f"funnelrank bench --throughput needs the source checkout: "
                                f"{script} does not exist (install with `pip install -e .` "
                                f"from a clone)")
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
    if args.repeats:
        argv += ["--repeats", str(args.repeats)]
    return runpy.run_path(script)["main"](argv)


def cmd_export(args) -> int:
    from funnelrank.commands import serving

    return serving.export_main(args)


def cmd_serve_check(args) -> int:
    from funnelrank.commands import serving

    return serving.serve_check_main(args)


def cmd_compile_kubeflow(args) -> int:
    from pipeline import kubeflow_runner

    cfg = _load_config(args)
    path = kubeflow_runner.compile_pipeline(cfg, args.out, image=args.image)
    print(f"wrote Kubeflow V2 pipeline spec to {path}")
    return 0


def _refuse_file(path: str, option: str) -> None:
    from schemas.errors import UserError

    if os.path.isfile(path):
        raise UserError(f"{option} {path}: is an existing file; give a directory")
    parent = os.path.dirname(os.path.abspath(path))
    while parent != os.path.dirname(parent):
        if os.path.isfile(parent):  # mkdir would fail with a bare "[Errno 20] Not a directory"
            raise UserError(f"{option} {path}: {parent} is a file, not a directory")
        parent = os.path.dirname(parent)


def _config_options(p: argparse.ArgumentParser, data: bool = True) -> None:
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help="experiment file, or the name of a shipped config (e.g. mmoe)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override one config value (YAML), e.g. --set train.epochs=3; repeat")
    if data:
        p.add_argument("--data", help="data file or directory (overrides data.path)")
        p.add_argument("--skip-bad-rows", action="store_true",
                       help="drop invalid rows (counted and reported per reason) instead of "
                            "failing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="funnelrank", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"funnelrank {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, with the libraries' own (TFX, Beam, absl) output")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="console log level (default INFO; WARNING for `run`, whose full "
                             "log goes to <root>/logs/)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="warnings, errors and the result only (no progress lines)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="write a synthetic impression log")
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--actions", type=int, default=5, help="conversion actions")
    p.add_argument("--mode", choices=["default", "hard", "clean"], default="default",
                   help="the planted world: default, or hard (rarer ids, user/item biases, a "
                        "segment x category interaction, a bot segment), or clean (default without "
                        "noise clicks)")
    p.add_argument("--string-ids", action="store_true",
                   help="write the ids as text (user_id 12 -> u_12); read such a file with "
                        "adapter: csv")
    p.add_argument("--missing-rate", type=float, default=0.0,
                   help="share of feature cells left empty (missing values), in [0, 1)")
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser("prepare", help="validate, type and split data for both paths")
    _config_options(p)
    p.add_argument("--root", help="work directory, also gs://... (overrides pipeline.root)")
    p.add_argument("--rows", type=int, help="synthetic rows to generate (data.generate_rows)")
    p.set_defaults(fn=cmd_prepare)

    p = sub.add_parser("train", help="fast in-process training without TFX")
    _config_options(p)
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, help="overrides train.seed")
    p.add_argument("--rows", type=int, help="synthetic rows to generate (data.generate_rows)")
    p.add_argument("--out", help="output directory (default work/train/<name>)")
    p.add_argument("--warm-start", metavar="DIR",
                   help="start from the weights of a previous `funnelrank train` output "
                        "(embedding rows follow their vocabulary entries)")
    p.add_argument("--cpu-replicas", type=int, default=1,
                   help="split the CPU into N logical devices for MirroredStrategy")
    p.add_argument("--baseline", help="fit a non-neural baseline per task on the same splits "
                   "instead of the network: logistic or lightgbm (metrics.json, no model)")
    p.add_argument("--baseline-args", help="the baseline's arguments as YAML, e.g. "
                   "'{C: [0.03, 0.1], crosses: [[user_segment, category_id]]}'")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("run", help="run the TFX pipeline locally (Beam DirectRunner)")
    _config_options(p)
    p.add_argument("--rows", type=int, help="synthetic rows to generate (data.generate_rows)")
    p.add_argument("--root", help="work directory (overrides pipeline.root)")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("bench", help="run a grid of fast-path trainings, seeds averaged; or "
                       "--throughput: examples/s of MMoE and PLE beside DeepCTR, torch-rechub")
    p.add_argument("--grid", help="grid YAML (see funnelrank/commands/bench.py)")
    p.add_argument("--throughput", action="store_true",
                   help="training/inference examples/s at batch 2048 against the peers, each "
                        "installed in its own throwaway venv (benchmarks/throughput.py)")
    p.add_argument("--peers", help="with --throughput: comma-separated peers "
                                   "(default deepctr,torch-rechub; '' for none)")
    p.add_argument("--models", help="with --throughput: comma-separated configs/<name>.yaml "
                                    "models (default mmoe,ple)")
    p.add_argument("--repeats", type=int, help="with --throughput: measure this many times, "
                                               "report the median run (default 3)")
    p.add_argument("--peer-venvs", help="with --throughput: where the peers' venvs and the "
                                        "shared data file go (default work/peers)")
    p.add_argument("--rows", type=int, help="override the grid's synthetic rows "
                                            "(--throughput: default 200000)")
    p.add_argument("--seeds", help="comma-separated train seeds (override the grid's)")
    p.add_argument("--runs", help="only these runs: labels separated by ';'")
    p.add_argument("--report", action="store_true",
                   help="with --grid: no training; rebuild the table and the grid's claims "
                        "(paired per-seed differences) from the stored <out>/<name>.json")
    p.add_argument("--out", help="results directory (default benchmarks/results/<name>); "
                                  "--throughput: the JSON file")
    p.add_argument("--cache-dir", default=os.path.join("work", "bench", "cache"),
                   help="with --grid: finished runs are kept here and read back instead of "
                        "trained again when config, data bytes and code are the same "
                        "(default work/bench/cache)")
    p.add_argument("--no-cache", action="store_true",
                   help="with --grid: train every run, read and store nothing in the cache")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("export", help="export `funnelrank train` output for TF Serving")
    p.add_argument("--model", required=True,
                   help="`funnelrank train` output directory (model/, preprocessor.json, "
                        "metrics.json)")
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
    _config_options(p, data=False)
    p.add_argument("--root", help="pipeline root on storage the cluster reads, e.g. "
                                  "gs://bucket/funnelrank (overrides pipeline.root)")
    p.add_argument("--image", help="container image (overrides pipeline.image)")
    p.add_argument("--out", required=True, help="output JSON file")
    p.set_defaults(fn=cmd_compile_kubeflow)
    return parser


def console_level(args) -> str:
    """``--log-level``; else DEBUG with ``-v``, WARNING with ``-q`` and for ``run`` (which
    prints a line per component and keeps the full log in a file), INFO otherwise."""
    if args.log_level:
        return args.log_level
    if args.verbose:
        return "DEBUG"
    return "WARNING" if args.quiet or args.command == "run" else "INFO"


def configure_logging(args) -> None:
    """The console handler at :func:`console_level`; without ``-v`` it shows the project's
    records and only errors of the libraries (``schemas.logs.ProjectOnly``). Python warnings
    go through logging, so they follow the same rule (and reach ``run``'s log file)."""
    from schemas.logs import ProjectOnly

    level = getattr(logging, console_level(args))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        force=True)
    for handler in logging.getLogger().handlers:  # the level stays when a run's log file
        handler.setLevel(level)                    # handler lowers the root's
        if not args.verbose:
            handler.addFilter(ProjectOnly())
    logging.captureWarnings(True)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args)
    from schemas.errors import UserError
    from trainer.errors import TrainingPreempted

    try:
        return args.fn(args)
    except (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
        print(f"funnelrank {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingPreempted as e:
        print(f"funnelrank {args.command}: {e}", file=sys.stderr)
        return EXIT_PREEMPTED


if __name__ == "__main__":
    sys.exit(main())
