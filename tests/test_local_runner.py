"""pipeline.local_runner: a run's components and outputs from ML Metadata; its Beam args."""
import apache_beam
import pytest
from ml_metadata.proto import metadata_store_pb2

from pipeline.local_runner import (RunExecution, local_beam_args, open_metadata,
                                   run_executions)

IMAGE = "gcr.io/funnelrank/funnelrank:0.1.0"
DEFAULT_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]

State = metadata_store_pb2.Execution.State


def _execution(store, type_id, state, outputs):
    """An execution of ``type_id`` with OUTPUT events ``key -> artifact id``; returns its id."""
    [execution_id] = store.put_executions([metadata_store_pb2.Execution(
        type_id=type_id, last_known_state=state)])
    store.put_events([metadata_store_pb2.Event(
        execution_id=execution_id, artifact_id=artifact_id,
        type=metadata_store_pb2.Event.OUTPUT,
        path=metadata_store_pb2.Event.Path(steps=[
            metadata_store_pb2.Event.Path.Step(key=key),
            metadata_store_pb2.Event.Path.Step(index=0)]))
        for key, artifact_id in outputs.items()])
    return execution_id


def test_a_cached_component_reports_the_earlier_runs_outputs_not_the_newest(tmp_path):
    """Run A (Evaluator writes blessing 1), run B (blessing 2), then A again from the cache:
    the third run's Evaluator is the CACHED execution whose outputs are A's, although B's
    are the newest; executions before ``since_ms`` are not this run's."""
    path = str(tmp_path / "metadata.db")
    store = open_metadata(path)
    evaluator = store.put_execution_type(metadata_store_pb2.ExecutionType(
        name="tfx.components.evaluator.component.Evaluator"))
    trainer = store.put_execution_type(metadata_store_pb2.ExecutionType(
        name="tfx.components.trainer.component.Trainer"))
    blessing = store.put_artifact_type(metadata_store_pb2.ArtifactType(name="ModelBlessing"))
    a, b = store.put_artifacts([
        metadata_store_pb2.Artifact(type_id=blessing, uri=f"/root/Evaluator/blessing/{i}")
        for i in (1, 2)])
    _execution(store, evaluator, State.COMPLETE, {"blessing": a})
    _execution(store, trainer, State.COMPLETE, {})
    _execution(store, evaluator, State.COMPLETE, {"blessing": b})
    [last] = store.get_executions_by_id([_execution(store, evaluator, State.CACHED,
                                                    {"blessing": a})])
    since = last.create_time_since_epoch
    assert run_executions(path, since)["Evaluator"] == RunExecution(
        "CACHED", {"blessing": "/root/Evaluator/blessing/1"})
    everything = run_executions(path, 0)  # each component's newest execution
    assert everything["Evaluator"].state == "CACHED"
    assert everything["Trainer"] == RunExecution("COMPLETE", {})
    assert run_executions(path, since + 10 ** 9) == {}


def test_local_args_tell_tfx_the_direct_runner_needs_no_tfx_sdist(monkeypatch):
    """On the DirectRunner, TFX's Beam executors take the local args as they are: no sdist of
    TFX is built for workers that are this process (1-1.5 s per Beam component)."""
    from tfx.utils import dependency_utils

    def no_build():
        raise AssertionError("TFX would build its sdist")

    monkeypatch.setattr(dependency_utils, "build_ephemeral_package", no_build)
    for given in (DEFAULT_ARGS, ["--direct_running_mode=multi_processing"],
                  ["--runner=DirectRunner"]):
        args = local_beam_args(given, IMAGE)
        assert args == given + [f"--update_compatibility_version={apache_beam.__version__}",
                                f"--sdk_container_image={IMAGE}"]
        assert dependency_utils.make_beam_dependency_flags(args) == args
    with pytest.raises(AssertionError, match="sdist"):  # what the option avoids
        dependency_utils.make_beam_dependency_flags(local_beam_args(DEFAULT_ARGS))


@pytest.mark.parametrize("given", [
    ["--runner=DataflowRunner", "--project=p"],  # its workers need what the user stages
    ["--runner=FlinkRunner", "--environment_type=DOCKER"],
    DEFAULT_ARGS + ["--setup_file=./setup.py"],  # the user said how
    DEFAULT_ARGS + ["--sdk_container_image=my/image:1"],
])
def test_local_args_add_no_image_off_the_direct_runner_or_when_dependencies_are_given(given):
    args = local_beam_args(given, IMAGE)
    assert args == given + [f"--update_compatibility_version={apache_beam.__version__}"]
