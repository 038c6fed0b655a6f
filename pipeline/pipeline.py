"""The TFX pipeline definition: every value is passed in, nothing read from globals.

ExampleGen (CSV) [-> AttributionDrivenMasking (KAML's ADM, a Beam job)] -> StatisticsGen ->
SchemaGen | ImportSchemaGen -> ExampleValidator -> AnomalyGate (fails the run on any anomaly)
-> Transform -> Trainer -> Evaluator (TFMA, AUC per head, blessing thresholds, the last blessed
model as baseline) -> Pusher.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.proto import example_gen_pb2

from pipeline.anomaly_gate import AnomalyGate

PREPROCESSING_FN = "transform.preprocessing.preprocessing_fn"
RUN_FN = "trainer.tfx_trainer.run_fn"


def example_gen_configs(splits: Optional[Sequence[str]], eval_percent: int):
    """(input_config, output_config) for CsvExampleGen.

    Args:
      splits: Names of sub-directories of the input base holding one split each (``train``,
        ``eval``, ``test``); ``None`` hash-splits the ``all`` directory into train/eval.
      eval_percent: Hash buckets (of 100) given to eval when splitting by hash.
    """
    if splits:
        return example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name=s, pattern=f"{s}/*") for s in splits]), None
    return (example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="all",
                                                                     pattern="all/*")]),
            example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
                example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=100 - eval_percent),
                example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=eval_percent)])))


CANDIDATE, BASELINE = "candidate", "baseline"


def eval_config(click_key: str, conversion_key: str, min_ctr_auc: float,
                max_ctr_auc_drop: Optional[float] = None) -> tfma.EvalConfig:
    """TFMA config: AUC, LogLoss and counts for the ctr and ctcvr heads.

    Blessing needs the candidate's ``ctr`` AUC above ``min_ctr_auc`` and, when
    ``max_ctr_auc_drop`` is set and a baseline (the last blessed model) exists, not below the
    baseline's by more than ``max_ctr_auc_drop``. The ctcvr label is the conversion column
    (conversion implies click, checked by the adapters).
    """
    def metrics(gate: bool):
        auc = tfma.MetricConfig(class_name="AUC", config='{"num_thresholds": 10000}')
        if gate:
            threshold = tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
                lower_bound={"value": min_ctr_auc}))
            if max_ctr_auc_drop is not None:
                threshold.change_threshold.CopyFrom(tfma.GenericChangeThreshold(
                    direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                    absolute={"value": -max_ctr_auc_drop}))
            auc.threshold.CopyFrom(threshold)
        return [auc, tfma.MetricConfig(class_name="BinaryCrossentropy"),
                tfma.MetricConfig(class_name="ExampleCount"),
                tfma.MetricConfig(class_name="MeanPrediction"),
                tfma.MetricConfig(class_name="MeanLabel")]

    labels = {"ctr": click_key, "ctcvr": conversion_key}
    specs = [tfma.ModelSpec(name=CANDIDATE, signature_name="serving_default",
                            label_keys=labels)]
    if max_ctr_auc_drop is not None:
        specs.append(tfma.ModelSpec(name=BASELINE, signature_name="serving_default",
                                    label_keys=labels, is_baseline=True))
    return tfma.EvalConfig(
        model_specs=specs, slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[tfma.MetricsSpec(output_names=["ctr"], metrics=metrics(True)),
                       tfma.MetricsSpec(output_names=["ctcvr"], metrics=metrics(False))])


def create_pipeline(pipeline_name: str, pipeline_root: str, data_root: str,
                    splits: Optional[Sequence[str]], eval_percent: int,
                    schema_path: Optional[str], custom_config: Dict[str, Any],
                    click_key: str, conversion_key: str, min_ctr_auc: float,
                    serving_model_dir: str,
                    metadata_connection_config=None,
                    beam_pipeline_args: Optional[List[str]] = None,
                    adm_params: Optional[Dict[str, Any]] = None,
                    max_ctr_auc_drop: Optional[float] = None,
                    through_transform_only: bool = False) -> tfx.dsl.Pipeline:
    """Builds the pipeline.

    Args:
      pipeline_name: Name (``[a-z0-9][a-z0-9-]*`` so Kubeflow accepts it).
      pipeline_root: Artifact root.
      data_root: Directory of prepared CSVs, one sub-directory per split (see
        ``transform.ingest.adapters.prepare``).
      splits: Split sub-directories, or None to hash-split ``all``.
      eval_percent: Eval share when hash-splitting.
      schema_path: schema.pbtxt for ImportSchemaGen, or None to infer with SchemaGen.
      custom_config: Experiment config and dataset spec for Transform and Trainer.
      click_key, conversion_key: Label columns (for TFMA).
      min_ctr_auc: Blessing threshold on the ctr AUC.
      serving_model_dir: Pusher destination (``<dir>/<version>/``).
      metadata_connection_config: ML Metadata connection (None for Kubeflow).
      beam_pipeline_args: Beam runner arguments.
      adm_params: ``transform.adm.AdmParams.to_dict()`` to run ADM on the examples before
        every component that reads them, or None.
      max_ctr_auc_drop: Tolerated ctr AUC drop against the last blessed model (resolved from
        ML Metadata), or None for no comparison.
      through_transform_only: Stop after Transform (data preparation only: the transformed
        examples and graph are the outputs; used to measure preprocessing throughput).

    Returns:
      The ``tfx.dsl.Pipeline``.
    """
    input_config, output_config = example_gen_configs(splits, eval_percent)
    example_gen = tfx.components.CsvExampleGen(
        input_base=data_root, input_config=input_config, output_config=output_config)
    components = [example_gen]
    examples = example_gen.outputs["examples"]
    if adm_params is not None:
        from pipeline.adm_component import AttributionDrivenMasking

        adm = AttributionDrivenMasking(examples=examples, params_json=json.dumps(adm_params))
        components.append(adm)
        examples = adm.outputs["adm_examples"]
    statistics_gen = tfx.components.StatisticsGen(examples=examples)
    if schema_path:
        schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path)
    else:
        schema_gen = tfx.components.SchemaGen(
            statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    anomaly_gate = AnomalyGate(anomalies=example_validator.outputs["anomalies"])
    transform = tfx.components.Transform(
        examples=examples, schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN, custom_config=custom_config)
    transform.add_upstream_node(anomaly_gate)
    preprocessing = components + [statistics_gen, schema_gen, example_validator, anomaly_gate,
                                  transform]
    if through_transform_only:
        return tfx.dsl.Pipeline(
            pipeline_name=pipeline_name, pipeline_root=pipeline_root, components=preprocessing,
            enable_cache=False, metadata_connection_config=metadata_connection_config,
            beam_pipeline_args=beam_pipeline_args or [])
    all_splits = list(splits) if splits else ["train", "eval"]
    eval_split = "eval"
    evaluator_split = "test" if "test" in all_splits else "eval"
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=[eval_split]),
        custom_config=custom_config)
    resolver = []
    baseline = None
    if max_ctr_auc_drop is not None:
        latest_blessed = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id("latest_blessed_model_resolver")
        resolver, baseline = [latest_blessed], latest_blessed.outputs["model"]
    evaluator = tfx.components.Evaluator(
        examples=examples, model=trainer.outputs["model"], baseline_model=baseline,
        eval_config=eval_config(click_key, conversion_key, min_ctr_auc, max_ctr_auc_drop),
        example_splits=[evaluator_split])
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)))
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name, pipeline_root=pipeline_root,
        components=preprocessing + [trainer] + resolver + [evaluator, pusher],
        enable_cache=False, metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [])
