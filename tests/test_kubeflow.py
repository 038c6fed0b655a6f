"""Kubeflow V2 compile: no cluster, a JSON spec that lists every component."""
import json

import pytest

from pipeline import kubeflow_runner
from schemas import config as config_lib

COMPONENTS = ["CsvExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
              "AnomalyGate", "Transform", "Trainer", "Evaluator", "Pusher",
              # KFP v2 compiles the baseline resolver into two resolver tasks
              "latest_blessed_model_resolver-model-blessing-resolver",
              "latest_blessed_model_resolver-model-resolver"]


@pytest.mark.slow
def test_compiled_spec_lists_every_component_and_entry_points(tmp_path):
    cfg = config_lib.load("configs/synthetic_mmoe.yaml",
                          {"pipeline.root": "gs://bucket/funnelrank"})
    path = kubeflow_runner.compile_pipeline(cfg, str(tmp_path / "kfp" / "pipeline.json"))
    spec = json.load(open(path))
    pipeline_spec = spec.get("pipelineSpec", spec)
    tasks = pipeline_spec["root"]["dag"]["tasks"]
    assert sorted(tasks) == sorted(COMPONENTS)
    text = json.dumps(spec)
    assert "trainer.tfx_trainer.run_fn" in text and "transform.preprocessing.preprocessing_fn" in text
    assert "gs://bucket/funnelrank" in text
    assert pipeline_spec["pipelineInfo"]["name"] == "funnelrank-synthetic-mmoe"


def test_invalid_pipeline_name_is_rejected_when_the_config_loads():
    with pytest.raises(config_lib.ConfigError, match="pipeline.name.*'Bad_Name'"):
        config_lib.load("configs/synthetic_mmoe.yaml", {"pipeline.name": "Bad_Name"})


@pytest.mark.slow
def test_kaml_spec_has_the_adm_beam_component_before_the_readers(tmp_path):
    cfg = config_lib.load("configs/kaml.yaml", {"pipeline.root": "gs://bucket/kaml"})
    path = kubeflow_runner.compile_pipeline(cfg, str(tmp_path / "kaml.json"))
    spec = json.load(open(path))
    tasks = spec.get("pipelineSpec", spec)["root"]["dag"]["tasks"]
    assert sorted(tasks) == sorted(COMPONENTS + ["AttributionDrivenMasking"])
    for reader in ("StatisticsGen", "Transform", "Evaluator"):
        assert "AttributionDrivenMasking" in tasks[reader]["dependentTasks"], reader
    assert "window_seconds" in json.dumps(spec)
