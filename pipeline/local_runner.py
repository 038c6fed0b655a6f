"""Runs the pipeline locally: LocalDagRunner + Beam DirectRunner (``funnelrank run``)."""
from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import sys
import time
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from pipeline.tfx_api import tfx

from pipeline.common import (PipelinePaths, beam_pipeline_args, pipeline_values, prepare_data,
                             schema_by_content)
from pipeline.pipeline import create_pipeline
from schemas import config as config_lib
from schemas import storage
from transform.ingest.prepare import describe_drops

log = logging.getLogger(__name__)


def _latest(pattern: str) -> Optional[str]:
    """Newest artifact directory matching ``pattern`` (TFX names them by execution id)."""
    found = [p for p in glob.glob(pattern) if os.path.isdir(p)]
    return max(found, key=lambda p: (os.path.getmtime(p), p)) if found else None


def read_evaluation(pipeline_root: str, uri: Optional[str] = None
                    ) -> Dict[str, Dict[str, float]]:
    """Overall-slice metrics per head of the candidate model from the Evaluator output at
    ``uri`` (default: the newest under ``pipeline_root``; the first run has no baseline and
    TFX then drops the model names)."""
    import tensorflow_model_analysis as tfma

    uri = uri or _latest(os.path.join(pipeline_root, "Evaluator", "evaluation", "*"))
    if uri is None:
        raise FileNotFoundError(f"no Evaluator output under {pipeline_root}")
    from pipeline.pipeline import CANDIDATE

    result = tfma.load_eval_result(uri)
    if len(result.config.model_specs) > 1:  # with a baseline, pick the candidate's metrics
        result = tfma.load_eval_result(uri, model_name=CANDIDATE)
    heads: Dict[str, Dict[str, float]] = {}
    for slice_key, by_output in result.slicing_metrics:
        if slice_key:
            continue
        for output, by_sub in by_output.items():
            for _, metric_values in by_sub.items():
                for name, value in metric_values.items():
                    if "doubleValue" in value:
                        heads.setdefault(output, {})[name] = value["doubleValue"]
    return heads


def read_trainer_metrics(pipeline_root: str, uri: Optional[str] = None) -> Dict:
    """The Trainer's own eval-split report (``run_fn``'s metrics.json: AUC, LogLoss, GAUC per
    head, learned recipe state) in its ``model_run`` output at ``uri`` (default: the newest
    under ``pipeline_root``), or {} when the run wrote none."""
    import json

    uri = uri or _latest(os.path.join(pipeline_root, "Trainer", "model_run", "*"))
    path = os.path.join(uri, "metrics.json") if uri else None
    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def open_metadata(metadata_path: str):
    """The run's ML Metadata store (SQLite under the root)."""
    from ml_metadata.metadata_store import metadata_store

    return metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path))


def component_executions(store) -> List[Tuple[str, Any]]:
    """Every execution in ``store``, oldest first, with its component's name (the last part
    of the execution type's dotted name: ``Transform``, ``Trainer``, ...)."""
    types = {t.id: t.name.split(".")[-1] for t in store.get_execution_types()}
    return [(types.get(e.type_id, str(e.type_id)), e)
            for e in sorted(store.get_executions(), key=lambda e: e.id)]


def component_seconds(metadata_path: str) -> Dict[str, float]:
    """Wall seconds of each component's last execution, from the ML Metadata store."""
    return {name: (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000.0
            for name, e in component_executions(open_metadata(metadata_path))}


def blessed(pipeline_root: str, uri: Optional[str] = None) -> bool:
    """Whether the Evaluator's blessing at ``uri`` (default: the newest) blessed the model."""
    uri = uri or _latest(os.path.join(pipeline_root, "Evaluator", "blessing", "*"))
    return bool(uri) and os.path.exists(os.path.join(uri, "BLESSED"))


class RunExecution(NamedTuple):
    """One component's execution in a run, from ML Metadata."""
    state: str  # "COMPLETE", "CACHED", "FAILED", ...
    outputs: Dict[str, str]  # output key -> artifact URI (a cached run's: the reused ones)


def run_executions(metadata_path: str, since_ms: int) -> Dict[str, RunExecution]:
    """Each component's newest execution created at or after ``since_ms`` (epoch ms): its
    state and output URIs. A component TFX took from the cache has a CACHED execution of its
    own whose outputs are the earlier run's artifacts, which need not be the newest
    directories under the pipeline root (run A, run B with other settings, A again)."""
    from ml_metadata.proto import metadata_store_pb2

    store = open_metadata(metadata_path)
    newest = {name: e for name, e in component_executions(store)
              if e.create_time_since_epoch >= since_ms}
    events = store.get_events_by_execution_ids([e.id for e in newest.values()])
    uris = {a.id: a.uri for a in store.get_artifacts_by_id(
        sorted({e.artifact_id for e in events}))}
    keys = {}
    for event in events:
        if event.type == metadata_store_pb2.Event.OUTPUT and event.path.steps:
            keys.setdefault(event.execution_id, {})[event.path.steps[0].key] = \
                uris[event.artifact_id]
    return {name: RunExecution(metadata_store_pb2.Execution.State.Name(e.last_known_state),
                               keys.get(e.id, {}))
            for name, e in newest.items()}


class ComponentProgress(logging.Handler):
    """Prints one line per component as LocalDagRunner starts and finishes it
    (``[3/9] Transform ... 42 s``), from the runner's own log records."""

    PATTERN = re.compile(r"Component (\S+) is (running|finished)\.")
    CACHED = re.compile(r"A cached execution \d+ is used\.")

    def __init__(self, total: int, out=None):
        super().__init__(level=logging.INFO)
        self.total = total
        self.out = out or sys.stdout
        self.done = 0
        self.started: Dict[str, float] = {}
        self.running: Optional[str] = None  # LocalDagRunner runs one component at a time
        self.cached = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.CACHED.fullmatch(message) and self.running:
            self.cached.add(self.running)
            return
        match = self.PATTERN.fullmatch(message)
        if not match:
            return
        node, state = match.groups()
        if state == "running":
            self.started[node], self.running = time.perf_counter(), node
            print(f"[{self.done + 1}/{self.total}] {node} ...", file=self.out, flush=True)
        else:
            self.done += 1
            seconds = time.perf_counter() - self.started.get(node, time.perf_counter())
            what = ("reused from the cache" if node in self.cached
                    else f"done in {seconds:.0f} s")
            print(f"[{self.done}/{self.total}] {node} {what}", file=self.out, flush=True)


@contextlib.contextmanager
def watched(log_path: str, total: int, progress: bool = True):
    """While the pipeline runs: every log record from INFO up (TFX's and Beam's included) and
    every Python warning to ``log_path``, and, with ``progress``, a line per component on
    stdout. What reaches the console is the caller's choice (``funnelrank run``: warnings of
    the project and errors only, see ``schemas.logs``)."""
    from absl import flags

    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    # TFX logs through absl, whose logger drops to WARNING (--verbosity's default) whenever
    # something re-parses absl's flags (it happens inside Transform); an INFO default keeps
    # the "Component X is running" records the progress lines come from.
    absl_logger = logging.getLogger("absl")
    old_absl = (flags.FLAGS["verbosity"].default, absl_logger.level)
    flags.FLAGS.set_default("verbosity", 0)  # absl's INFO
    # ... and INFO now: setting a default does not touch the logger while the flags are
    # unparsed (an earlier absl user in this process may have left it at WARNING).
    absl_logger.setLevel(logging.INFO)
    root = logging.getLogger()
    file_handler = logging.FileHandler(log_path)
    file_handler.setLevel(min(root.level or logging.INFO, logging.INFO))
    file_handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handlers = [file_handler] + ([ComponentProgress(total)] if progress else [])
    old_root_level = root.level
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(min(root.level or logging.INFO, logging.INFO))
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        flags.FLAGS.set_default("verbosity", old_absl[0])
        absl_logger.setLevel(old_absl[1])
        for handler in handlers:
            root.removeHandler(handler)
        file_handler.close()
        root.setLevel(old_root_level)


def run(cfg: config_lib.ExperimentConfig, through_transform_only: bool = False,
        progress: bool = True) -> Dict:
    """Prepares the data, runs every component, and reports where the model was pushed.

    With ``through_transform_only`` the pipeline stops after Transform and the result holds
    the per-component times instead (``"components"``: name -> seconds, from ML Metadata).
    The full log goes to ``<pipeline.root>/logs/run-<time>.log``; with ``progress`` stdout gets
    a line per step (``[prepare] ...``, ``[7/10] Transform done in 42 s``).

    Returns:
      ``{"pushed_model": path this run pushed or None, "blessed": bool, "bless_head": head,
      "cached": components taken from the cache (``pipeline.enable_cache``),
      "last_pushed_model": the newest model under the serving directory or None,
      "evaluation": {...} (TFMA), "trainer": {...} (run_fn's metrics.json), "seconds": ..,
      "log_file": ..}``; the evaluation, blessing and Trainer report are this run's, cached
      or not.

    Raises:
      ConfigError: ``pipeline.root`` is a URL (the local runner keeps ML Metadata in SQLite
        under the root; compile for Kubeflow to run on a bucket).
    """
    t0 = time.perf_counter()
    if storage.is_url(cfg.pipeline.root):
        raise config_lib.ConfigError(
            f"pipeline.root (--root): `funnelrank run` keeps its ML Metadata (SQLite) under the "
            f"root, which needs a local directory; got {cfg.pipeline.root!r}. To run on a "
            f"bucket, use `funnelrank compile-kubeflow --root {cfg.pipeline.root}`")
    paths = PipelinePaths(os.path.abspath(cfg.pipeline.root))
    log_file = os.path.join(paths.root, "logs", time.strftime("run-%Y%m%d-%H%M%S.log"))
    say = (lambda text: print(text, flush=True)) if progress else log.info
    with watched(log_file, 0, progress=False):
        say(f"[prepare] validating, typing and splitting the data into {paths.data_root}")
        prepared = prepare_data(cfg, paths)
        say(f"[prepare] {prepared.rows} rows per split ({describe_drops(prepared)}) in "
            f"{time.perf_counter() - t0:.0f} s"
            + ("; the same data as the last run, kept as it was" if prepared.reused else ""))
        values = pipeline_values(cfg, prepared.spec, prepared.schema_path)
    serving_dir = os.path.abspath(paths.serving_dir(cfg))
    before = set(glob.glob(os.path.join(serving_dir, "*")))
    pipeline = create_pipeline(
        pipeline_name=cfg.pipeline.name, pipeline_root=paths.pipeline_root,
        data_root=paths.data_root,
        schema_path=schema_by_content(values.schema_path, f"{paths.root}/data/schemas"),
        custom_config=values.custom_config, evaluation=values.evaluation,
        serving_model_dir=serving_dir,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            paths.metadata_path),
        beam_pipeline_args=beam_pipeline_args(cfg.pipeline.beam_args, cfg.pipeline.image),
        adm_params=values.adm_params,
        compare_to_baseline=cfg.eval.max_auc_drop is not None,
        enable_cache=cfg.pipeline.enable_cache,
        through_transform_only=through_transform_only, warm_start=cfg.train.warm_start,
        transform_statistics=cfg.pipeline.transform_statistics)
    t_pipeline, started_ms = time.perf_counter(), int(time.time() * 1000)
    with watched(log_file, len(pipeline.components), progress):
        tfx.orchestration.LocalDagRunner().run(pipeline)
    if through_transform_only:
        return {"components": component_seconds(paths.metadata_path),
                "prepare_seconds": t_pipeline - t0,
                "pipeline_seconds": time.perf_counter() - t_pipeline,
                "seconds": time.perf_counter() - t0, "log_file": log_file}
    after = sorted(glob.glob(os.path.join(serving_dir, "*")))
    pushed = [path for path in after if path not in before]
    # This run's outputs, cached or new (by ML Metadata, not the newest directories).
    executions = run_executions(paths.metadata_path, started_ms)
    outputs = {name: e.outputs for name, e in executions.items()}
    cached = sorted(name for name, e in executions.items() if e.state == "CACHED")
    return {"pushed_model": pushed[-1] if pushed else None,
            "blessed": blessed(paths.pipeline_root, outputs.get("Evaluator", {}).get("blessing")),
            "bless_head": values.bless_head, "cached": cached,
            "last_pushed_model": after[-1] if after else None,
            "evaluation": read_evaluation(paths.pipeline_root,
                                          outputs.get("Evaluator", {}).get("evaluation")),
            "trainer": read_trainer_metrics(paths.pipeline_root,
                                            outputs.get("Trainer", {}).get("model_run")),
            "seconds": time.perf_counter() - t0, "log_file": log_file}
