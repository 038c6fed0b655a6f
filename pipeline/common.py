"""What every runner does before building the pipeline: paths, prepared data, and the values
``create_pipeline`` takes (custom_config, ADM parameters, TFMA config), from one config."""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Dict, Optional

from schemas import config as config_lib
from schemas import features
from schemas import tasks as tasks_lib

PIPELINE_DIR = "pipeline"


@dataclasses.dataclass(frozen=True)
class PipelinePaths:
    """Where a run keeps its things, all under ``pipeline.root`` (a local path or a
    ``tf.io.gfile`` URL such as ``gs://...``)."""

    root: str

    @property
    def data_dir(self) -> str:
        return f"{self.root}/data"

    @property
    def data_root(self) -> str:
        return f"{self.root}/data/prepared"

    @property
    def pipeline_root(self) -> str:
        return f"{self.root}/{PIPELINE_DIR}"

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.root, "metadata.db")

    def serving_dir(self, cfg: config_lib.ExperimentConfig) -> str:
        return cfg.pipeline.serving_dir or f"{self.root}/serving"


def schema_by_content(schema_path: str, folder: str) -> str:
    """A copy of ``schema_path`` at ``<folder>/<first 16 hex of its sha256>/schema.pbtxt``.

    ImportSchemaGen has no inputs, only the path as a parameter, so with ``enable_cache`` TFX
    would reuse the schema it imported last time from the same path, even after the file
    changed (new data, an edited user schema) and hand it to ExampleValidator, Transform and
    the Trainer. A path that changes with the content keeps the cache honest.
    """
    import tensorflow as tf

    with tf.io.gfile.GFile(schema_path, "rb") as f:
        text = f.read()
    target = f"{folder}/{hashlib.sha256(text).hexdigest()[:16]}/schema.pbtxt"
    if not tf.io.gfile.exists(target):
        tf.io.gfile.makedirs(os.path.dirname(target))
        with tf.io.gfile.GFile(target + ".tmp", "wb") as f:
            f.write(text)
        tf.io.gfile.rename(target + ".tmp", target, overwrite=True)
    return target


def prepare_data(cfg: config_lib.ExperimentConfig, paths: PipelinePaths):
    """Validates, types and splits the input data into ``paths.data_root``."""
    from transform.ingest import prepare  # not needed to compile for Kubeflow

    spec = features.spec_from_config(cfg.data, cfg.funnel)
    return prepare.prepare(cfg.data, spec, paths.data_dir)


@dataclasses.dataclass(frozen=True)
class PipelineValues:
    """The config-derived arguments of ``pipeline.pipeline.create_pipeline``."""

    custom_config: Dict[str, Any]
    adm_params: Optional[Dict[str, Any]]
    evaluation: Any  # tfma.EvalConfig
    schema_path: str
    bless_head: str


def pipeline_values(cfg: config_lib.ExperimentConfig, spec: features.DatasetSpec,
                    prepared_schema: str) -> PipelineValues:
    """Everything ``create_pipeline`` needs besides paths, for the prepared data's ``spec``.

    Args:
      cfg: The experiment config.
      spec: The completed spec of the prepared data (``prepared/dataset_spec.json``).
      prepared_schema: The schema ``prepare`` derived (used unless ``pipeline.schema``).
    """
    from pipeline.pipeline import eval_config
    from transform import adm

    try:
        run_spec, params = adm.configure(cfg.adm, spec)
    except ValueError as e:
        raise config_lib.ConfigError(f"adm.enabled: {e}") from e
    heads = tasks_lib.heads(cfg.tasks, cfg.funnel, spec.num_actions)
    bless = cfg.eval.head or heads[0].name
    evaluation = eval_config(heads, spec.label_keys, bless, cfg.eval.min_auc,
                             cfg.eval.max_auc_drop, cfg.eval.slices)
    if cfg.adm.enabled and not cfg.pipeline.schema:  # the schema after the ADM job
        from transform.ingest import schema as schema_lib

        adm_schema = prepared_schema.replace(".pbtxt", "_adm.pbtxt")
        schema_lib.write_schema(run_spec, adm_schema)
        prepared_schema = adm_schema
    return PipelineValues(
        custom_config=config_lib.to_custom_config(cfg, run_spec),
        adm_params=params.to_dict() if params else None, evaluation=evaluation,
        schema_path=cfg.pipeline.schema or prepared_schema, bless_head=bless)
