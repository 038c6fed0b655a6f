"""Training and inference throughput of funnelrank vs DeepCTR and torch-rechub (issue 9).

The same synthetic rows (generated with seed 7, preprocessed by ``transform.preprocessor``: vocab
ids and z-scored dense values) go to three implementations of the same architecture sizes
(``configs/mmoe.yaml`` and ``configs/ple.yaml``: experts, expert and tower widths, embedding
dim 8, 9 sparse + 4 dense features), batch 2048, Adam, BCE on two heads:

* funnelrank: ``model.fit`` over ``trainer.data.from_arrays`` (the ``funnelrank train`` input
  path) with the strategy, thread pools and compiled step the training session uses
  (``trainer.session.compile_model``), and the "ideal" (the same train function on 24 batches
  cached in memory: no input pipeline; its calls run ``train.steps_per_execution`` steps each);
* DeepCTR 0.9.3 (TensorFlow 2.10, the newest it imports under; Keras ``fit`` on the in-memory
  arrays, its usual use);
* DeepCTR again with TF's intra-op pool as funnelrank sets it (``train.intra_op_threads``,
  ``--peer-threads both``, the default; ``default`` runs only the peers' own setting);
* torch-rechub 0.9.0 (PyTorch 2.13 CPU; plain DataLoader loop over in-memory tensors).

Each peer is installed by this script into its own throwaway venv under ``--venv-dir``
(default ``work/peers``; never a project dependency) and runs in its own process on the shared
``data.npz``. Training throughput is rows / median epoch time over ``--epochs`` epochs, the first
(tracing) epoch excluded; inference is the forward pass on in-memory batches. The whole
measurement is repeated ``--repeats`` times (default 3), implementations interleaved within a
run; the report's ``results`` hold each implementation's median over the runs (every run's
value under ``runs``) and ``ratios`` our median-run speed against each peer.
Writes ``benchmarks/results/throughput.json`` and the plot ``throughput.png`` beside it.

Usage::

    .venv/bin/python benchmarks/throughput.py [--rows 200000] [--models mmoe,ple]
        [--peers deepctr,torch-rechub] [--epochs 3] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = {
    "deepctr": {"python": "3.10", "script": "deepctr_throughput.py",
                "install": [["-m", "pip", "install", "-q", "tensorflow-cpu==2.10.1",
                             "numpy==1.23.5", "deepctr==0.9.3", "h5py==3.7.0"]]},
    "torch-rechub": {"python": "3.11", "script": "torch_rechub_throughput.py",
                     "install": [["-m", "pip", "install", "-q", "torch==2.13.0"],
                                 ["-m", "pip", "install", "-q", "torch-rechub==0.9.0"]]},
}


def _interpreter(version: str) -> str:
    """A Python ``version`` interpreter: pyenv's newest ``<version>.x``, else on the PATH."""
    pyenv = os.path.expanduser("~/.pyenv/versions")
    if os.path.isdir(pyenv):
        found = sorted(n for n in os.listdir(pyenv) if n.startswith(version + "."))
        if found:
            return os.path.join(pyenv, found[-1], "bin", "python")
    path = shutil.which(f"python{version}")
    if path:
        return path
    raise SystemExit(f"no Python {version} interpreter found for the peer venv")


def ensure_venv(name: str, venv_dir: str) -> str:
    """Creates (once) the peer's throwaway venv; returns its python."""
    peer = PEERS[name]
    home = os.path.join(venv_dir, name)
    python = os.path.join(home, "bin", "python")
    stamp = os.path.join(home, ".installed")
    if not os.path.exists(stamp):
        print(f"installing {name} into {home} (once)", file=sys.stderr)
        subprocess.run([_interpreter(peer["python"]), "-m", "venv", home], check=True)
        for args in peer["install"]:
            subprocess.run([python] + args, check=True)
        open(stamp, "w").close()
    return python


def export_data(rows: int, path: str):
    """Generates and preprocesses the rows; writes them with the architecture to ``path``."""
    import numpy as np

    from schemas import config as config_lib
    from schemas import features
    from benchmarks.speed_model import synthetic_rows

    data = synthetic_rows(rows)
    spec, pre, arrays = data.spec, data.pre, data.arrays
    models = {}
    for name in ("mmoe", "ple"):
        cfg = config_lib.load(os.path.join(ROOT, "configs", f"{name}.yaml"))
        models[name] = {**dict(cfg.model.backbone_args),
                        "tower_units": list(cfg.model.tower_units)}
    meta = {"sparse": list(spec.sparse_keys), "dense": list(spec.dense_keys),
            "vocab": pre.vocab_sizes, "embedding_dim": 8, "models": models}
    out = {k: arrays[features.transformed_name(k)].reshape(-1) for k in spec.feature_keys}
    out["click"] = arrays["click_xf"].reshape(-1)
    out["ctcvr"] = (arrays["click_xf"] * arrays["conversion_xf"]).reshape(-1)
    np.savez(path, meta=json.dumps(meta), **out)
    return pre, arrays, spec


def measure_ours(model_name: str, arrays, pre, spec, batch: int, epochs: int):
    """funnelrank's fit over the arrays pipeline, the cached-batch ideal, and inference."""
    import numpy as np
    import tensorflow as tf

    from benchmarks.speed_model import epoch_timer, speed_config, steps_per_call, timed_steps
    from trainer.data import from_arrays
    from trainer.model import FeatureInfo
    from trainer.session import build_model, compile_model
    from trainer.strategy import make_strategy

    info = FeatureInfo(pre.vocab_sizes, spec.dense_keys)
    cfg = speed_config(model_name, batch)  # the peers' model (equal parameter counts)
    strategy = make_strategy()
    with strategy.scope():
        model = build_model(cfg, info)
        compile_model(model, cfg)
    times = []
    ds = from_arrays(arrays, info.input_names, spec, batch, shuffle=True, seed=1)
    model.fit(ds, epochs=epochs, verbose=0, callbacks=[epoch_timer(times)])
    rows = len(arrays["click_xf"])
    train = rows / float(np.median(times[1:]))
    cached = from_arrays(arrays, info.input_names, spec, batch, shuffle=True, seed=1,
                         drop_remainder=True).take(24).cache().repeat()
    iterator = iter(strategy.experimental_distribute_dataset(cached))
    step, spe = model.make_train_function(), steps_per_call(cfg, strategy)
    timed_steps(step, iterator, 20 * spe, spe)  # warm-up: 20 calls
    timed = timed_steps(step, iterator, 120, spe)
    ideal = timed.steps * batch / timed.seconds
    forward = tf.function(lambda x: model.network(x, training=False))
    batches = [x for x, _ in from_arrays(arrays, info.input_names, spec, batch,
                                         drop_remainder=True).take(24)]  # one shape, one trace
    for x in batches[:3]:
        forward(x)
    t0 = time.perf_counter()
    for _ in range(3):
        for x in batches:
            out = forward(x)
    float(out["ctr"][0])
    infer = 3 * len(batches) * batch / (time.perf_counter() - t0)
    params = int(sum(np.prod(w.shape) for w in model.network.trainable_weights))
    tf.keras.backend.clear_session()
    return {"peer": "funnelrank (this project, TF " + tf.__version__ + ")", "model": model_name,
            "train_examples_per_sec": train, "ideal_train_examples_per_sec": ideal,
            "inference_examples_per_sec": infer, "trainable_parameters": params,
            "epoch_seconds": times}


def median_runs(runs):
    """Each implementation's median over the runs, and our speed against every peer.

    Args:
      runs: One list of result rows (``model``, ``peer``, examples/s) per run.

    Returns:
      ``(results, ratios)``: per (model, implementation) the first run's row with the median
      training / ideal / inference examples/s and every run's values under ``runs``; per
      (model, peer) the ratio of our median-run value to the peer's, and the per-run ratios
      (ours / peer within the same run).
    """
    import numpy as np

    keys = ("train_examples_per_sec", "ideal_train_examples_per_sec",
            "inference_examples_per_sec")
    rows = {}
    for results in runs:
        for r in results:
            rows.setdefault((r["model"], r["peer"]), []).append(r)
    merged = []
    for group in rows.values():
        row = dict(group[0])
        row["runs"] = {k: [g[k] for g in group] for k in keys if k in group[0]}
        row.update({k: float(np.median(v)) for k, v in row["runs"].items()})
        merged.append(row)
    ratios = []
    ours = [r for r in merged if r["peer"].startswith("funnelrank")]
    for mine in ours:
        for other in merged:
            if other["model"] != mine["model"] or other is mine:
                continue
            per_run = {k: [a / b for a, b in zip(mine["runs"][k], other["runs"][k])]
                       for k in ("train_examples_per_sec", "inference_examples_per_sec")}
            ratios.append({"model": mine["model"], "peer": other["peer"],
                           "train": mine["train_examples_per_sec"] /
                           other["train_examples_per_sec"],
                           "inference": mine["inference_examples_per_sec"] /
                           other["inference_examples_per_sec"],
                           "train_runs": per_run["train_examples_per_sec"],
                           "inference_runs": per_run["inference_examples_per_sec"]})
    return merged, ratios


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--models", default="mmoe,ple")
    parser.add_argument("--peers", default="deepctr,torch-rechub")
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peer-threads", choices=("default", "both"), default="both",
                        help="both: DeepCTR also with funnelrank's train.intra_op_threads")
    parser.add_argument("--venv-dir", default=os.path.join(ROOT, "work", "peers"))
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                      "throughput.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    import funnelrank  # noqa: F401  selects Keras 2 before TensorFlow is imported
    from benchmarks.speed_model import configure_threads_as_trained, speed_config
    from funnelrank.commands.bench import result_of

    configure_threads_as_trained()  # before TF's runtime starts, as `funnelrank train` does
    intra = speed_config("mmoe", args.batch).train.intra_op_threads

    os.makedirs(args.venv_dir, exist_ok=True)
    data = os.path.join(args.venv_dir, "data.npz")
    pre, arrays, spec = export_data(args.rows, data)
    peers = [p for p in args.peers.split(",") if p]
    pythons = {p: ensure_venv(p, args.venv_dir) for p in peers}
    runs = []
    for run in range(args.repeats):
        print(f"run {run + 1}/{args.repeats}", file=sys.stderr, flush=True)
        results = []
        for model in args.models.split(","):
            results.append(measure_ours(model, arrays, pre, spec, args.batch, args.epochs))
            for peer in peers:
                script = os.path.join(ROOT, "benchmarks", "peers", PEERS[peer]["script"])
                env = {k: v for k, v in os.environ.items()
                       if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")}
                settings = [{}]
                if peer == "deepctr" and args.peer_threads == "both" and intra:
                    settings.append({"PEER_INTRA_OP_THREADS": str(intra)})
                for extra in settings:
                    results.append(result_of(
                        [pythons[peer], script, data, model, str(args.batch), str(args.epochs)],
                        f"{peer} {model}", env={**env, **extra}, cwd=args.venv_dir))
        runs.append(results)
    results, ratios = median_runs(runs)
    report = {"benchmark": "throughput", "rows": args.rows, "batch": args.batch,
              "epochs": args.epochs, "repeats": args.repeats, "results": results, "ratios": ratios,
              "every_run": runs}
    from funnelrank.commands.bench import write_report

    write_report(args.out, report)
    from funnelrank.commands.plots import throughput_plot

    png = throughput_plot(report, os.path.splitext(args.out)[0] + ".png")
    print(f"\nThroughput, {args.rows} synthetic rows, batch {args.batch}, 2 CPU cores\n")
    print(f"Median of {args.repeats} run(s); every run's value in brackets.\n")
    print("| model | implementation | train examples/s | inference examples/s | parameters |")
    print("|---|---|---:|---:|---:|")
    for r in results:
        ideal = r.get("ideal_train_examples_per_sec")
        extra = f" (ideal, no input: {ideal:.0f})" if ideal else ""
        train_runs = ", ".join(f"{v:.0f}" for v in r["runs"]["train_examples_per_sec"])
        infer_runs = ", ".join(f"{v:.0f}" for v in r["runs"]["inference_examples_per_sec"])
        print(f"| {r['model']} | {r['peer']} | {r['train_examples_per_sec']:.0f} "
              f"[{train_runs}]{extra} | {r['inference_examples_per_sec']:.0f} [{infer_runs}] | "
              f"{r['trainable_parameters']} |")
    if ratios:
        print("\n| model | ours vs | training (per run) | inference (per run) |")
        print("|---|---|---|---|")
        for q in ratios:
            print(f"| {q['model']} | {q['peer']} | {q['train']:.2f}x "
                  f"({', '.join(f'{v:.2f}' for v in q['train_runs'])}) | {q['inference']:.2f}x "
                  f"({', '.join(f'{v:.2f}' for v in q['inference_runs'])}) |")
    print(f"\nwrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
