"""Compiles the pipeline for Kubeflow Pipelines v2 (Vertex AI Pipelines) as a JSON spec.

No cluster is needed to compile. The spec holds no path of the compiling machine: the
pipeline root, the prepared data, the schema and the Pusher's destination are all under
``pipeline.root``, which must be storage the cluster reads (``gs://...``; a local root is
refused), and the code runs from the container image (``--image`` or ``pipeline.image``,
built from the project's ``Dockerfile``): Transform and Trainer are import paths of the
installed package, not module files. The prepared data (``funnelrank prepare --root
gs://...``) must be at ``<pipeline.root>/data/prepared`` before the run starts.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import tensorflow as tf
from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

from pipeline.common import (PipelinePaths, beam_pipeline_args, pipeline_values,
                             schema_by_content)
from pipeline.pipeline import create_pipeline
from schemas import config as config_lib
from schemas import features, storage
from transform.ingest import prepare


def require_cluster_path(option: str, path: str) -> str:
    """``path`` if it is on storage a cluster can read (a URL other than ``file://``).

    Raises:
      ConfigError: A local path, naming ``option`` and the value.
    """
    if not storage.is_remote(path):
        raise config_lib.ConfigError(
            f"{option}: a Kubeflow pipeline runs on the cluster, which cannot read this "
            f"machine's files; expected storage it reads (e.g. gs://bucket/funnelrank), got "
            f"{path!r}")
    return path


def cluster_config(cfg: config_lib.ExperimentConfig) -> config_lib.ExperimentConfig:
    """``cfg`` as the cluster sees it: every path checked to be on cluster storage, and
    ``data.path`` (the source files, which only ``prepare`` reads, on the machine that ran it)
    replaced by the prepared data under the root, so the compiling machine's paths never reach
    the spec through ``custom_config``."""
    require_cluster_path("pipeline.root (--root)", cfg.pipeline.root)
    for key in ("serving_dir", "schema"):
        value = getattr(cfg.pipeline, key)
        if value is not None:
            require_cluster_path(f"pipeline.{key}", value)
    data_root = PipelinePaths(cfg.pipeline.root).data_root
    return dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, path=data_root if cfg.data.path is not None else None))


def compile_pipeline(cfg: config_lib.ExperimentConfig, output_file: str,
                     image: Optional[str] = None) -> str:
    """Writes the Kubeflow V2 pipeline JSON to ``output_file`` and returns its path.

    The dataset spec comes from the prepared data (``<root>/data/prepared/dataset_spec.json``,
    written by ``funnelrank prepare``), or from the config when every sparse column's dtype is
    declared there.

    Raises:
      ConfigError: A path of the config is local (see :func:`cluster_config`).
      FileNotFoundError: No prepared spec and the config leaves column types to the data.
    """
    cfg = cluster_config(cfg)
    paths = PipelinePaths(cfg.pipeline.root)
    try:
        spec = prepare.read_spec(paths.data_root)
    except FileNotFoundError:
        spec = features.spec_from_config(cfg.data, cfg.funnel)
        auto = [k for k, d in spec.sparse_dtypes.items() if d == "auto"]
        if auto:
            raise FileNotFoundError(
                f"{paths.data_root}/{prepare.SPEC_FILE} not found and the config leaves the "
                f"type of {auto[:5]} to the data: run `funnelrank prepare` with the same config "
                f"and root first") from None
    values = pipeline_values(cfg, spec, f"{paths.data_root}/{prepare.SCHEMA_FILE}")
    schema_path = values.schema_path
    if tf.io.gfile.exists(schema_path):  # prepared before compiling: see schema_by_content
        schema_path = schema_by_content(schema_path, f"{paths.root}/data/schemas")
    image = image or cfg.pipeline.image
    pipeline = create_pipeline(
        pipeline_name=cfg.pipeline.name, pipeline_root=paths.pipeline_root,
        data_root=paths.data_root, schema_path=schema_path,
        custom_config=values.custom_config, evaluation=values.evaluation,
        serving_model_dir=paths.serving_dir(cfg), metadata_connection_config=None,
        beam_pipeline_args=beam_pipeline_args(cfg.pipeline.beam_args, image),
        adm_params=values.adm_params,
        compare_to_baseline=cfg.eval.max_auc_drop is not None,
        enable_cache=cfg.pipeline.enable_cache, warm_start=cfg.train.warm_start,
        transform_statistics=cfg.pipeline.transform_statistics)
    output_file = storage.absolute(output_file)  # may also be gs://...: TFX writes with gfile
    folder, name = output_file.rsplit("/", 1)
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
            default_image=image),
        output_dir=folder, output_filename=name)
    runner.run(pipeline, write_out=True)
    return output_file
