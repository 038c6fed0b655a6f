"""The TFX pipeline definition: every value is passed in, nothing read from globals.

ImportExampleGen (the prepared train / validation / eval examples) [-> AttributionDrivenMasking
(KAML's ADM, a Beam job)] -> StatisticsGen -> ImportSchemaGen (the schema derived when the data
was prepared) | SchemaGen -> ExampleValidator -> AnomalyGate (fails the run on any anomaly) ->
Transform -> Trainer (trains on train, validates on validation; with ``warm_start`` it starts
from the last blessed model) -> Evaluator (TFMA on eval: every head, blessing thresholds on one,
the last blessed model as baseline) -> Pusher.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

import tensorflow_model_analysis as tfma
from pipeline.tfx_api import tfx
from tfx.proto import example_gen_pb2, transform_pb2

from pipeline.anomaly_gate import AnomalyGate
from schemas import config as config_lib
from schemas import tasks as tasks_lib
from transform.ingest.splits import SPLITS

PREPROCESSING_FN = "transform.preprocessing.preprocessing_fn"
RUN_FN = "trainer.tfx_trainer.run_fn"


def example_gen_input(splits: Sequence[str]):
    """ImportExampleGen's input config: one split per prepared sub-directory."""
    return example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name=s, pattern=f"{s}/*") for s in splits])


CANDIDATE, BASELINE = "candidate", "baseline"


def eval_config(heads: Sequence[tasks_lib.Head], label_columns: Mapping[str, str],
                bless_head: str, min_auc: float, max_auc_drop: Optional[float] = None,
                slices: Sequence[str] = ()) -> tfma.EvalConfig:
    """TFMA config: AUC, LogLoss, counts, mean prediction and label for every head.

    Args:
      heads: The model's heads (``schemas.tasks.heads``).
      label_columns: Task -> raw label column (``data.labels``).
      bless_head: The head whose AUC decides blessing.
      min_auc: Blessing needs ``bless_head``'s AUC above this ...
      max_auc_drop: ... and, when set and a baseline (the last blessed model) exists, not
        below the baseline's by more than this.
      slices: Features whose values slice the metrics besides the overall slice (the
        thresholds apply to the overall slice only).

    A head's label is its task's column; a product head (``ctcvr``) uses the last task's
    column, valid because the funnel data is validated so that conversion implies click. A
    head scored on a subset (the post-click ``cvr``) is weighted by its mask task's column:
    weight 0 leaves unclicked rows out of its metrics. Per-action heads (KAML's ``cvr_<j>``,
    scored per target action) are reported by the Trainer's metrics.json, not here.
    """
    scored = [h for h in heads if not re.fullmatch(r"cvr_\d+", h.name)]
    labels = {h.name: label_columns[h.label_tasks[-1]] for h in scored}
    weights = {h.name: label_columns[h.mask_task] for h in scored if h.mask_task}

    threshold = tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
        lower_bound={"value": min_auc}))
    if max_auc_drop is not None:
        threshold.change_threshold.CopyFrom(tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -max_auc_drop}))

    def metrics(blessing: bool):
        # The threshold goes on the AUC's MetricConfig, for the overall slice: TFMA keys it
        # like the computed AUC, example weighting included. On the MetricsSpec's
        # per_slice_thresholds it is keyed without it and, once any head has an example
        # weight (the post-click cvr), matches no computed metric ("Metric not found": never
        # blessed). MetricConfig.threshold would apply to every slice of eval.slices too.
        auc = tfma.MetricConfig(class_name="AUC", config='{"num_thresholds": 10000}')
        if blessing:
            auc.per_slice_thresholds.add(slicing_specs=[tfma.SlicingSpec()],
                                         threshold=threshold)
        return [auc, tfma.MetricConfig(class_name="BinaryCrossentropy"),
                tfma.MetricConfig(class_name="ExampleCount"),
                tfma.MetricConfig(class_name="MeanPrediction"),
                tfma.MetricConfig(class_name="MeanLabel")]

    def model_spec(name: str, **baseline):
        # tf_generic: TFMA calls the serving signature either way; left unset, it first loads
        # the whole Keras model (every layer revived from its traces) to find the model type.
        return tfma.ModelSpec(name=name, signature_name="serving_default",
                              model_type=tfma.TF_GENERIC, label_keys=labels,
                              example_weight_keys=weights, **baseline)

    specs = [model_spec(CANDIDATE)]
    if max_auc_drop is not None:
        specs.append(model_spec(BASELINE, is_baseline=True))
    metrics_specs = [tfma.MetricsSpec(output_names=[head.name],
                                      metrics=metrics(head.name == bless_head))
                     for head in scored]
    return tfma.EvalConfig(
        model_specs=specs,
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[k]) for k in slices],
        metrics_specs=metrics_specs)


def create_pipeline(pipeline_name: str, pipeline_root: str, data_root: str,
                    schema_path: Optional[str], custom_config: Dict[str, Any],
                    evaluation: Optional[tfma.EvalConfig], serving_model_dir: str,
                    metadata_connection_config=None,
                    beam_pipeline_args: Optional[List[str]] = None,
                    adm_params: Optional[Dict[str, Any]] = None,
                    compare_to_baseline: bool = False, enable_cache: bool = False,
                    through_transform_only: bool = False,
                    warm_start: bool = False,
                    transform_statistics: bool = False) -> tfx.dsl.Pipeline:
    """Builds the pipeline.

    Args:
      pipeline_name: Name (``[a-z0-9][a-z0-9-]*`` so Kubeflow accepts it).
      pipeline_root: Artifact root.
      data_root: The prepared examples (``transform.ingest.prepare``): ``train/``,
        ``validation/`` and ``eval/`` sub-directories of gzipped TFRecords.
      schema_path: schema.pbtxt for ImportSchemaGen (the one ``prepare`` derived, or the
        user's), or None to infer one with SchemaGen.
      custom_config: Experiment config and dataset spec (``config.to_custom_config``): the
        Trainer gets all of it, Transform only the dataset spec (all ``preprocessing_fn``
        reads), so that a cached run reuses Transform when only model or training settings
        changed.
      evaluation: The TFMA config (:func:`eval_config`); None only with
        ``through_transform_only``.
      serving_model_dir: Pusher destination (``<dir>/<version>/``).
      metadata_connection_config: ML Metadata connection (None for Kubeflow).
      beam_pipeline_args: Beam runner arguments.
      adm_params: ``transform.adm.AdmParams.to_dict()`` to run ADM on the examples before
        every component that reads them, or None.
      compare_to_baseline: Resolve the last blessed model from ML Metadata as the
        Evaluator's baseline (``evaluation`` then has a baseline model spec).
      enable_cache: Let TFX reuse outputs of components whose inputs did not change.
      through_transform_only: Stop after Transform (data preparation only: the transformed
        examples and graph are the outputs; used to measure preprocessing throughput).
      warm_start: Give the Trainer the last blessed model (the same resolver as the
        baseline) as ``base_model``; ``run_fn`` starts from its weights (``train.warm_start``).
      transform_statistics: Let Transform compute TFDV statistics before and after the
        transformation (``pipeline.transform_statistics``). Transform never writes an analyzer
        cache: nothing here feeds one back.

    Returns:
      The ``tfx.dsl.Pipeline``.
    """
    example_gen = tfx.components.ImportExampleGen(
        input_base=data_root, input_config=example_gen_input(SPLITS))
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
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={config_lib.SPEC_KEY: custom_config[config_lib.SPEC_KEY]},
        splits_config=transform_pb2.SplitsConfig(analyze=["train"], transform=list(SPLITS)),
        disable_statistics=not transform_statistics, disable_analyzer_cache=True)
    transform.add_upstream_node(anomaly_gate)
    preprocessing = components + [statistics_gen, schema_gen, example_validator, anomaly_gate,
                                  transform]
    if through_transform_only:
        return tfx.dsl.Pipeline(
            pipeline_name=pipeline_name, pipeline_root=pipeline_root, components=preprocessing,
            enable_cache=enable_cache, metadata_connection_config=metadata_connection_config,
            beam_pipeline_args=beam_pipeline_args or [])
    resolver = []
    last_blessed = None
    if compare_to_baseline or warm_start:
        latest_blessed = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id("latest_blessed_model_resolver")
        resolver, last_blessed = [latest_blessed], latest_blessed.outputs["model"]
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        base_model=last_blessed if warm_start else None,
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["validation"]),
        custom_config=custom_config)
    evaluator = tfx.components.Evaluator(
        examples=examples, model=trainer.outputs["model"],
        baseline_model=last_blessed if compare_to_baseline else None,
        eval_config=evaluation, example_splits=["eval"])
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)))
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name, pipeline_root=pipeline_root,
        components=preprocessing + [trainer] + resolver + [evaluator, pusher],
        enable_cache=enable_cache, metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [])
