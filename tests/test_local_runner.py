"""pipeline.local_runner: a run's components and outputs from ML Metadata."""
from ml_metadata.proto import metadata_store_pb2

from pipeline.local_runner import RunExecution, open_metadata, run_executions

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
