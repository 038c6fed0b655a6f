"""The TFX pipeline definition: every value is passed in, nothing read from globals.

ExampleGen (CSV) [-> AttributionDrivenMasking (KAML's ADM, a Beam job)] -> StatisticsGen ->
SchemaGen | ImportSchemaGen -> ExampleValidator -> Transform -> Trainer -> Evaluator (TFMA,
AUC per head, blessing threshold) -> Pusher.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.proto import example_gen_pb2

PREPROCESSING_FN = "transform.preprocessing.preprocessing_fn"
RUN_FN = "trainer.task.run_fn"


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


def eval_config(click_key: str, conversion_key: str, min_ctr_auc: float) -> tfma.EvalConfig:
    """TFMA config: AUC, LogLoss and counts for the ctr and ctcvr heads; blessing needs
    ``ctr`` AUC above ``min_ctr_auc``. The ctcvr label is the conversion column (conversion
    implies click, checked by the adapters)."""
    def metrics(threshold: Optional[float]):
        auc = tfma.MetricConfig(class_name="AUC", config='{"num_thresholds": 10000}')
        if threshold is not None:
            auc.threshold.CopyFrom(tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
                lower_bound={"value": threshold})))
        return [auc, tfma.MetricConfig(class_name="BinaryCrossentropy"),
                tfma.MetricConfig(class_name="ExampleCount"),
                tfma.MetricConfig(class_name="MeanPrediction"),
                tfma.MetricConfig(class_name="MeanLabel")]

    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="serving_default",
                                    label_keys={"ctr": click_key, "ctcvr": conversion_key})],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[tfma.MetricsSpec(output_names=["ctr"], metrics=metrics(min_ctr_auc)),
                       tfma.MetricsSpec(output_names=["ctcvr"], metrics=metrics(None))])


def create_pipeline(pipeline_name: str, pipeline_root: str, data_root: str,
                    splits: Optional[Sequence[str]], eval_percent: int,
                    schema_path: Optional[str], custom_config: Dict[str, Any],
                    click_key: str, conversion_key: str, min_ctr_auc: float,
                    serving_model_dir: str,
                    metadata_connection_config=None,
                    beam_pipeline_args: Optional[List[str]] = None,
                    adm_params: Optional[Dict[str, Any]] = None) -> tfx.dsl.Pipeline:
    """Builds the pipeline.

    Args:
      pipeline_name: Name (``[a-z0-9][a-z0-9-]*`` so Kubeflow accepts it).
      pipeline_root: Artifact root.
      data_root: Directory of prepared CSVs, one sub-directory per split (see
        ``funnelrank.data.adapters.prepare``).
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
    transform = tfx.components.Transform(
        examples=examples, schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN, custom_config=custom_config)
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
    evaluator = tfx.components.Evaluator(
        examples=examples, model=trainer.outputs["model"],
        eval_config=eval_config(click_key, conversion_key, min_ctr_auc),
        example_splits=[evaluator_split])
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)))
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name, pipeline_root=pipeline_root,
        components=components + [statistics_gen, schema_gen, example_validator, transform,
                                 trainer, evaluator, pusher],
        enable_cache=False, metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [])
