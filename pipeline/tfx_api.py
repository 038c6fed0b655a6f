"""The TFX names the pipeline side uses, laid out as ``tfx.v1`` lays them out, without
importing ``tfx.v1``.

``from tfx import v1 as tfx`` (TFX's public API) also imports every extension, among them the
Google Cloud AI Platform client, which this project never uses: 24-27 s of imports on this
machine against 14-15 s for the modules below, paid by every ``funnelrank run`` and
``compile-kubeflow`` and by every test process that builds a pipeline. ``tfx`` here is a
namespace of the same objects (``tfx.components.Trainer``, ``tfx.dsl.Pipeline``, ...), taken
from the modules that define them; ``tests/test_tfx_api.py`` checks that each is the object
``tfx.v1`` exports, so a TFX upgrade that moves one fails there, by name.
"""
from types import SimpleNamespace

from tfx.components import (Evaluator, ExampleValidator, ImportExampleGen, Pusher, SchemaGen,
                            StatisticsGen, Trainer, Transform)
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import (
    LatestBlessedModelStrategy)
from tfx.orchestration import metadata
from tfx.orchestration.local.local_dag_runner import LocalDagRunner
from tfx.orchestration.pipeline import Pipeline
from tfx.proto.pusher_pb2 import PushDestination
from tfx.proto.trainer_pb2 import EvalArgs, TrainArgs
from tfx.types import standard_artifacts
from tfx.types.channel import Channel

tfx = SimpleNamespace(
    components=SimpleNamespace(
        Evaluator=Evaluator, ExampleValidator=ExampleValidator,
        ImportExampleGen=ImportExampleGen, ImportSchemaGen=ImportSchemaGen, Pusher=Pusher,
        SchemaGen=SchemaGen, StatisticsGen=StatisticsGen, Trainer=Trainer, Transform=Transform),
    dsl=SimpleNamespace(
        Channel=Channel, Pipeline=Pipeline, Resolver=Resolver,
        experimental=SimpleNamespace(LatestBlessedModelStrategy=LatestBlessedModelStrategy)),
    orchestration=SimpleNamespace(
        LocalDagRunner=LocalDagRunner,
        metadata=SimpleNamespace(
            sqlite_metadata_connection_config=metadata.sqlite_metadata_connection_config)),
    proto=SimpleNamespace(EvalArgs=EvalArgs, PushDestination=PushDestination,
                          TrainArgs=TrainArgs),
    types=SimpleNamespace(standard_artifacts=standard_artifacts),
)
