"""What every runner does before building the pipeline: prepare data, assemble custom_config."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict

from schemas import config as config_lib
from schemas import features

PIPELINE_DIR = "pipeline"


@dataclasses.dataclass(frozen=True)
class PipelinePaths:
    """Where a run keeps its things, all under ``pipeline.root``."""

    root: str

    @property
    def data_root(self) -> str:
        return os.path.join(self.root, "data", "prepared")

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.root, PIPELINE_DIR)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.root, "metadata.db")

    def serving_dir(self, cfg: config_lib.ExperimentConfig) -> str:
        d = cfg.pipeline.serving_dir or os.path.join(self.root, "serving")
        return d if "://" in d else os.path.abspath(d)


def custom_config(cfg: config_lib.ExperimentConfig, spec: features.DatasetSpec) -> Dict[str, Any]:
    """JSON-able config shared by Transform and Trainer."""
    return config_lib.to_custom_config(cfg, spec)


def prepare_data(cfg: config_lib.ExperimentConfig, paths: PipelinePaths):
    """Validates and normalises the input data into ``paths.data_root``."""
    from transform.ingest import adapters  # not needed to compile for Kubeflow

    return adapters.prepare(cfg.data, os.path.join(paths.root, "data"))


def dataset_spec(cfg: config_lib.ExperimentConfig, spec: features.DatasetSpec
                 ) -> features.DatasetSpec:
    """The spec the Transform and Trainer see: with the ADM columns when ADM runs."""
    if not cfg.adm.enabled:
        return spec
    try:
        return features.with_adm(spec)
    except ValueError as e:
        raise config_lib.ConfigError(f"adm.enabled: {e}") from e


def adm_params(cfg: config_lib.ExperimentConfig, spec: features.DatasetSpec):
    """``AdmParams.to_dict()`` for the ADM component, or None when ADM is off."""
    if not cfg.adm.enabled:
        return None
    from transform.adm import AdmParams

    thresholds = cfg.adm.thresholds
    return AdmParams.for_spec(spec, cfg.adm.window_seconds,
                              thresholds[0] if len(thresholds) == 1 else thresholds).to_dict()
