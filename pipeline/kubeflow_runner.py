"""Compiles the pipeline for Kubeflow Pipelines v2 (Vertex AI Pipelines) as a JSON spec.

No cluster is needed to compile. The image must contain this package installed (the
Transform and Trainer entry points are import paths, not module files), and the prepared
data (``funnelrank prepare``) must be at ``<pipeline.root>/data/prepared`` on storage the
cluster can read (e.g. ``gs://...``).
"""
from __future__ import annotations

import os

from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

from pipeline.common import PipelinePaths, adm_params, custom_config, dataset_spec
from pipeline.pipeline import create_pipeline
from schemas import config as config_lib
from transform.ingest import adapters


def compile_pipeline(cfg: config_lib.ExperimentConfig, output_file: str,
                     splits=None) -> str:
    """Writes the Kubeflow V2 pipeline JSON to ``output_file`` and returns its path."""
    spec = adapters.spec_for(cfg.data)
    paths = PipelinePaths(cfg.pipeline.root)
    pipeline = create_pipeline(
        pipeline_name=cfg.pipeline.name, pipeline_root=paths.pipeline_root,
        data_root=paths.data_root, splits=splits, eval_percent=cfg.data.eval_percent,
        schema_path=cfg.pipeline.schema,
        custom_config=custom_config(cfg, dataset_spec(cfg, spec)),
        click_key=spec.click_key, conversion_key=spec.conversion_key,
        min_ctr_auc=cfg.eval.min_ctr_auc, serving_model_dir=paths.serving_dir(cfg),
        metadata_connection_config=None, beam_pipeline_args=list(cfg.pipeline.beam_args),
        adm_params=adm_params(cfg, spec), max_ctr_auc_drop=cfg.eval.max_ctr_auc_drop)
    output_file = os.path.abspath(output_file)
    os.makedirs(os.path.dirname(output_file), exist_ok=True)
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
            default_image=cfg.pipeline.image),
        output_dir=os.path.dirname(output_file),
        output_filename=os.path.basename(output_file))
    runner.run(pipeline, write_out=True)
    return output_file
