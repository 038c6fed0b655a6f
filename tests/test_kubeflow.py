"""Kubeflow V2 compile: no cluster, a JSON spec that lists every component and holds no path
of the compiling machine; the pipeline side writes through ``tf.io.gfile`` (TF's ``ram://``
filesystem stands in for a bucket: ``gs://`` needs the network)."""
import itertools
import json
import os
import re

import apache_beam
import pytest
import tensorflow as tf

import pipeline.common
from funnelrank import cli
from pipeline import kubeflow_runner
from schemas import config as config_lib
from transform.ingest import synthetic

COMPONENTS = ["ImportExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
              "AnomalyGate", "Transform", "Trainer", "Evaluator", "Pusher",
              # KFP v2 compiles the baseline resolver into two resolver tasks
              "latest_blessed_model_resolver-model-blessing-resolver",
              "latest_blessed_model_resolver-model-resolver"]
IMAGE = "europe-docker.pkg.dev/acme/ml/funnelrank:7"
_buckets = itertools.count()


def ram_root(name: str) -> str:
    """A fresh root on TF's in-process ``ram://`` filesystem (one per call)."""
    return f"ram://{name}-{os.getpid()}-{next(_buckets)}/funnelrank"


def strings(node):
    """Every string of a JSON value, JSON text inside strings (custom_config) parsed too."""
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        if node[:1] in "{[":
            try:
                yield from strings(json.loads(node))
                return
            except ValueError:
                pass
        yield node


def path_like(spec):
    """Tokens that look like paths: URLs, absolute or ./ ../ ~ relative paths."""
    for text in strings(spec):
        for token in re.split(r"[\s=,;]+", text):
            token = token.strip("'\"")
            if "://" in token or token.startswith(("/", "./", "../", "~")):
                yield token


def tasks_of(spec):
    return spec.get("pipelineSpec", spec)["root"]["dag"]["tasks"]


def outputs_of(spec, task: str):
    """The output artifact names of ``task``'s component."""
    pipeline_spec = spec.get("pipelineSpec", spec)
    component = tasks_of(spec)[task]["componentRef"]["name"]
    return set(pipeline_spec["components"][component]["outputDefinitions"]["artifacts"])


def test_path_like_finds_local_paths_inside_embedded_json():
    spec = {"a": json.dumps({"data": {"path": "/home/me/x.csv"}, "layers": ["*/tower"]}),
            "b": ["--temp_location=./tmp", "gs://b/r", "train/*"]}
    assert sorted(path_like(spec)) == ["./tmp", "/home/me/x.csv", "gs://b/r"]


@pytest.mark.parametrize("override, option", [
    ({}, r"pipeline.root \(--root\)"),
    ({"pipeline.serving_dir": "/srv/models"}, "pipeline.serving_dir"),
    ({"pipeline.schema": "schemas/mine.pbtxt"}, "pipeline.schema"),
    ({"pipeline.root": "file:///tmp/x"}, r"pipeline.root \(--root\)"),
])
def test_local_paths_are_refused(tmp_path, override, option):
    values = {"pipeline.root": "ram://bucket/x", **override} if override else \
        {"pipeline.root": str(tmp_path)}
    cfg = config_lib.load("configs/synthetic_mmoe.yaml", values)
    with pytest.raises(config_lib.ConfigError, match=rf"{option}: a Kubeflow pipeline runs on "
                                                     r"the cluster.*got '"):
        kubeflow_runner.compile_pipeline(cfg, str(tmp_path / "p.json"))
    assert not os.path.exists(tmp_path / "p.json")


def test_cli_refuses_a_local_root_with_exit_2(tmp_path, capsys):
    code = cli.main(["compile-kubeflow", "--root", str(tmp_path / "work"),
                     "--out", str(tmp_path / "p.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert "pipeline.root (--root): a Kubeflow pipeline runs on the cluster" in err
    assert str(tmp_path / "work") in err


@pytest.mark.slow
def test_compiled_spec_lists_every_component_and_entry_points(tmp_path):
    root = ram_root("compile")
    cfg = config_lib.load("configs/synthetic_mmoe.yaml", {"pipeline.root": root})
    path = kubeflow_runner.compile_pipeline(cfg, str(tmp_path / "kfp" / "pipeline.json"))
    spec = json.load(open(path))
    pipeline_spec = spec.get("pipelineSpec", spec)
    tasks = tasks_of(spec)
    assert sorted(tasks) == sorted(COMPONENTS)
    text = json.dumps(spec)
    assert "trainer.tfx_trainer.run_fn" in text
    assert "transform.preprocessing.preprocessing_fn" in text
    assert pipeline_spec["pipelineInfo"]["name"] == "funnelrank-synthetic-mmoe"
    executors = pipeline_spec["deploymentSpec"]["executors"].values()
    images = {e["container"]["image"] for e in executors if "container" in e}
    assert images == {cfg.pipeline.image}
    # Each component runs Beam's in-process DirectRunner in its container (not Prism, which
    # downloads a binary), and TFX builds no sdist of itself for it: the local run's args.
    beam = pipeline.common.beam_pipeline_args(cfg.pipeline.beam_args, cfg.pipeline.image)
    assert beam == list(cfg.pipeline.beam_args) + [
        f"--update_compatibility_version={apache_beam.__version__}",
        f"--sdk_container_image={cfg.pipeline.image}"]
    for name in ("ImportExampleGen", "StatisticsGen", "Transform", "Trainer", "Evaluator"):
        assert pipeline_spec["deploymentSpec"]["executors"][f"{name}_executor"]["container"][
            "args"][-len(beam):] == beam, name
    # Transform writes no analyzer cache and, by default (pipeline.transform_statistics), no
    # statistics of its own.
    assert outputs_of(spec, "Transform") == {"transform_graph", "transformed_examples"}
    # pipeline.enable_cache is false by default and no Trainer input comes from the resolver.
    assert not any(t.get("cachingOptions", {}).get("enableCache") for t in tasks.values())
    assert "base_model" not in tasks["Trainer"]["inputs"].get("artifacts", {})
    # Transform gets only the dataset spec (all preprocessing_fn reads): a cached run reuses it
    # when only model or training settings change; the Trainer gets the whole config.
    custom = {name: json.loads(tasks[name]["inputs"]["parameters"]["custom_config"]
                               ["runtimeValue"]["constantValue"]["stringValue"])
              for name in ("Transform", "Trainer")}
    assert set(custom["Transform"]) == {config_lib.SPEC_KEY}
    assert set(custom["Trainer"]) == {config_lib.SPEC_KEY, config_lib.EXPERIMENT_KEY}
    assert custom["Transform"][config_lib.SPEC_KEY] == custom["Trainer"][config_lib.SPEC_KEY]
    # The Pusher writes under the root, not to a path of this machine.
    assert f'{root}/serving' in text


@pytest.mark.slow
def test_ram_root_prepare_then_compile_bakes_in_no_path_of_this_machine(tmp_path, monkeypatch):
    """`prepare --root ram://...` writes only to that filesystem; the spec compiled with the same
    root (and a config whose data.path is a local file) holds paths under the root only; the
    image, pipeline.enable_cache, pipeline.transform_statistics and train.warm_start reach the
    spec."""
    monkeypatch.chdir(tmp_path)
    csv = synthetic.write_csv(str(tmp_path / "data"), 1500, seed=1)
    root = ram_root("prepare")
    assert cli.main(["prepare", "--data", csv, "--root", root]) == 0
    prepared = f"{root}/data/prepared"
    assert sorted(tf.io.gfile.listdir(prepared)) == [
        "content.sha256", "dataset_spec.json", "eval", "schema.pbtxt", "train", "validation"]
    assert tf.io.gfile.glob(f"{prepared}/train/*.tfrecord.gz")
    assert sorted(os.listdir(tmp_path)) == ["data"]  # nothing like ./ram:/... written locally

    out = tmp_path / "kfp" / "pipeline.json"
    assert cli.main(["compile-kubeflow", "--root", root, "--image", IMAGE, "--out", str(out),
                     "--set", f"data.path={csv}", "--set", "pipeline.enable_cache=true",
                     "--set", "train.warm_start=true", "--set", "eval.max_auc_drop=null",
                     "--set", "pipeline.transform_statistics=true"]) == 0
    spec = json.load(open(out))
    assert outputs_of(spec, "Transform") == {
        "transform_graph", "transformed_examples", "pre_transform_schema", "pre_transform_stats",
        "post_transform_schema", "post_transform_stats", "post_transform_anomalies"}
    paths = set(path_like(spec))
    assert f"{root}/data/prepared" in paths and f"{root}/serving" in paths
    outside = sorted(p for p in paths if not p.startswith(root))
    assert not outside, outside
    # ImportSchemaGen (cached by its path alone) reads the schema from a path named by its bytes.
    schemas = [p for p in paths if re.fullmatch(
        re.escape(f"{root}/data/schemas/") + r"[0-9a-f]{16}/schema\.pbtxt", p)]
    assert len(schemas) == 1, sorted(paths)
    assert tf.io.gfile.GFile(schemas[0]).read() == tf.io.gfile.GFile(
        f"{prepared}/schema.pbtxt").read()
    text = json.dumps(spec)
    for local in (str(tmp_path), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))):
        assert local not in text
    executors = spec["pipelineSpec"]["deploymentSpec"]["executors"].values()
    assert {e["container"]["image"] for e in executors if "container" in e} == {IMAGE}
    assert all(f"--sdk_container_image={IMAGE}" in e["container"]["args"]  # --image, not the
               for e in executors if "container" in e)  # config's image, for Beam too
    tasks = tasks_of(spec)
    cached = {k for k, t in tasks.items() if t.get("cachingOptions", {}).get("enableCache")}
    assert cached >= set(COMPONENTS[:9]), cached  # every component (resolvers do no work)
    # train.warm_start: the Trainer's base_model is the latest blessed model (the resolver runs
    # even though eval.max_auc_drop: null leaves the Evaluator without a baseline).
    base = tasks["Trainer"]["inputs"]["artifacts"]["base_model"]["taskOutputArtifact"]
    assert base["producerTask"] == "latest_blessed_model_resolver-model-resolver"
    assert "baseline_model" not in tasks["Evaluator"]["inputs"].get("artifacts", {})


def test_invalid_pipeline_name_is_rejected_when_the_config_loads():
    with pytest.raises(config_lib.ConfigError, match="pipeline.name.*'Bad_Name'"):
        config_lib.load("configs/synthetic_mmoe.yaml", {"pipeline.name": "Bad_Name"})


@pytest.mark.slow
def test_kaml_spec_has_the_adm_beam_component_before_the_readers(tmp_path):
    root = ram_root("kaml")
    cfg = config_lib.load("configs/kaml.yaml", {"pipeline.root": root})
    path = kubeflow_runner.compile_pipeline(cfg, str(tmp_path / "kaml.json"))
    spec = json.load(open(path))
    tasks = tasks_of(spec)
    assert sorted(tasks) == sorted(COMPONENTS + ["AttributionDrivenMasking"])
    for reader in ("StatisticsGen", "Transform", "Evaluator"):
        assert "AttributionDrivenMasking" in tasks[reader]["dependentTasks"], reader
    assert "window_seconds" in json.dumps(spec)
    # The schema after the ADM job was written beside the prepared data, on the root.
    assert tf.io.gfile.exists(f"{root}/data/prepared/schema_adm.pbtxt")
