"""Compiles the pipeline for Kubeflow Pipelines v2 (Vertex AI Pipelines) as a JSON spec.

No cluster is needed to compile. The image must contain this package installed (the
Transform and Trainer entry points are import paths, not module files), and the prepared
data (``funnelrank prepare``) must be at ``<pipeline.root>/data/prepared`` on storage the
cluster can read (e.g. ``gs://...``).
"""
from __future__ import annotations

import os
from typing import Optional

from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

from pipeline.common import PipelinePaths, pipeline_values
from pipeline.pipeline import create_pipeline
from schemas import config as config_lib
from schemas import features
from transform.ingest import prepare


def compile_pipeline(cfg: config_lib.ExperimentConfig, output_file: str,
                     image: Optional[str] = None) -> str:
    """Writes the Kubeflow V2 pipeline JSON to ``output_file`` and returns its path.

    The dataset spec comes from the prepared data (``<root>/data/prepared/dataset_spec.json``,
    written by ``funnelrank prepare``), or from the config when every sparse column's dtype is
    declared there.
    """
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
    pipeline = create_pipeline(
        pipeline_name=cfg.pipeline.name, pipeline_root=paths.pipeline_root,
        data_root=paths.data_root, schema_path=values.schema_path,
        custom_config=values.custom_config, evaluation=values.evaluation,
        serving_model_dir=paths.serving_dir(cfg), metadata_connection_config=None,
        beam_pipeline_args=list(cfg.pipeline.beam_args), adm_params=values.adm_params,
        compare_to_baseline=cfg.eval.max_auc_drop is not None,
        enable_cache=cfg.pipeline.enable_cache)
    output_file = os.path.abspath(output_file)
    os.makedirs(os.path.dirname(output_file), exist_ok=True)
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
            default_image=image or cfg.pipeline.image),
        output_dir=os.path.dirname(output_file),
        output_filename=os.path.basename(output_file))
    runner.run(pipeline, write_out=True)
    return output_file
