"""What every runner does before building the pipeline: paths, prepared data, and the values
``create_pipeline`` takes (custom_config, ADM parameters, TFMA config), from one config."""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Dict, List, Optional

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


# Beam options by which TFX's Beam executors see that the workers' Python dependencies are
# provided; without one they build and stage an sdist of TFX (tfx.utils.dependency_utils).
TFX_DEPENDENCY_OPTIONS = ("extra_packages", "setup_file", "requirements_file",
                          "worker_harness_container_image", "sdk_container_image")


def beam_pipeline_args(args, image: Optional[str] = None) -> List[str]:
    """The Beam args every runner gives the pipeline: ``pipeline.beam_args`` and two more.

    The same for a local run (LocalDagRunner) and the Kubeflow spec, whose Beam components
    run the DirectRunner inside the image's container by default:

    * Beam 2.74's DirectRunner first tries the Prism runner, which downloads a binary from the
      internet (our machines, and many clusters, have no such access; where they do, every
      Beam component would download it and run on another runner than the one tested here).
      Naming the installed Beam version as the update-compatibility version (a no-op for
      behaviour; the image is built from the same lock file) makes it use the in-process
      runner.
    * With ``image`` (``pipeline.image``, or the Kubeflow compile's ``--image``), on the
      DirectRunner and with none of :data:`TFX_DEPENDENCY_OPTIONS` given,
      ``--sdk_container_image=<image>`` is added. The DirectRunner's workers are the
      component's process or its subprocesses and it stages nothing (it does not read the
      option), but every TFX Beam component would otherwise build an sdist of TFX for them
      first: 1-1.5 s each, four or five times a run (docs/benchmarks.md, issue 18). A runner
      with containers would get the project's image, which has TFX and this package.
    """
    import apache_beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    args = list(args)
    if not any(a.startswith("--update_compatibility_version") for a in args):
        args.append(f"--update_compatibility_version={apache_beam.__version__}")
    options = PipelineOptions(args)
    runner = options.view_as(StandardOptions).runner
    direct = runner is None or str(runner).split(".")[-1].lower() in ("directrunner", "direct")
    given = options.get_all_options()
    if image and direct and not any(given.get(name) for name in TFX_DEPENDENCY_OPTIONS):
        args.append(f"--sdk_container_image={image}")
    return args
