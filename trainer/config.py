"""Experiment configuration: one YAML/JSON file, parsed once into frozen dataclasses.

The same dict travels into the TFX Trainer and Transform through ``custom_config``; ``run_fn``
and ``funnelrank train`` both call :func:`from_dict` first and log the result. Unknown keys are
errors (a typo must not silently fall back to a default).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Dict, Mapping, Optional, Tuple

import yaml


class ConfigError(ValueError):
    """A configuration file or value is invalid."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the impressions come from.

    Attributes:
      adapter: Dataset format: ``synthetic`` or ``ali_ccp``.
      path: CSV file or directory (``train*.csv``/``test*.csv``/``val*.csv`` splits, or any
        ``*.csv`` split by hash). ``None`` with the synthetic adapter generates data.
      generate_rows: Rows to generate when ``path`` is None.
      num_actions: Conversion actions of the synthetic log.
      seed: Generator seed.
      eval_percent: Share of rows (by hash) in the eval split when the data has no splits.
      skip_bad_rows: Drop (and count) invalid rows instead of failing.
    """

    adapter: str = "synthetic"
    path: Optional[str] = None
    generate_rows: int = 200_000
    num_actions: int = 5
    seed: int = 7
    eval_percent: int = 20
    skip_bad_rows: bool = False


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Network: embeddings -> backbone -> per-task towers -> sigmoid heads.

    Attributes:
      backbone: Registered backbone name (``mmoe``; see ``trainer.model.BACKBONES``).
      backbone_args: Hyperparameters passed to the backbone layer's constructor.
      embedding_dim: Width of every sparse-id embedding.
      embedding_l2: L2 penalty on the embedding tables (0 disables).
      tower_units: Hidden sizes of each task tower (ignored by backbones that own their
        towers: aitm, cross_stitch).
      tower_dropout: Dropout rate inside towers.
      tower_batch_norm: Batch-normalise each tower layer's pre-activation output.
      tasks: ``[ctr, cvr]`` (ctcvr = ctr * cvr), ``[ctr, ctcvr]`` (funnel order, AITM;
        cvr = ctcvr / ctr), ``[ctr]`` (single-task CTR), ``[ctr, actions]`` (KAML: one
        post-click CVR head ``cvr_<j>`` per conversion action of the data) or ``[ctr, cvr,
        <task>, ...]`` (extra heads, AdaFTR's three-task form; see ``loss.args.task_labels``
        of the adaftr recipe).
      hke: Per-action heads as KAML's HKE (original and extended sub-towers, eq. 9-10)
        instead of plain towers; needs ``tasks: [ctr, actions]`` and ADM data.
      hke_units: Hidden sizes of each HKE sub-tower (the merged MLP uses ``tower_units``).
    """

    backbone: str = "mmoe"
    backbone_args: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: {"num_experts": 4, "expert_units": [64, 32]})
    embedding_dim: int = 8
    embedding_l2: float = 0.0
    tower_units: Tuple[int, ...] = (32,)
    tower_dropout: float = 0.0
    tower_batch_norm: bool = False
    tasks: Tuple[str, ...] = ("ctr", "cvr")
    hke: bool = False
    hke_units: Tuple[int, ...] = (32,)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss terms. ``esmm``: BCE on ctr (click) and ctcvr (click & conversion), all impressions.

    Attributes:
      name: Loss recipe name.
      weights: Per-head weight of the BCE terms.
      args: Extra hyperparameters of the recipe (e.g. PWiseR margins).
    """

    name: str = "esmm"
    weights: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"ctr": 1.0, "ctcvr": 1.0})
    args: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation.

    Attributes:
      batch_size: Per-replica batch; the global batch is this times the replica count.
      epochs: Passes over the training split.
      learning_rate: Adam learning rate.
      seed: Seed of weights, shuffling and dropout.
      shuffle_buffer: Rows in the shuffle buffer (TFX Trainer reading TFRecords).
      in_memory: TFX Trainer only: parse the transformed train split once into memory and
        train from it as ``funnelrank train`` does (a full shuffle each epoch, no per-step
        parsing; see docs/benchmarks.md). Needs about rows x features x 8 bytes of RAM.
      checkpoint_every_steps: BackupAndRestore interval.
      eval_batch_size: Batch used for prediction and evaluation.
      early_stopping_patience: Epochs without improvement of ``early_stopping_monitor`` on
        the validation data before training stops and the best epoch's weights are restored
        (MAN's first stage); 0 disables early stopping.
      early_stopping_monitor: Keras log key to maximise, e.g. ``val_ctcvr_auc``.
      validation_percent: When early stopping needs validation data and the input has no
        separate test split, this share of the train split (by hash) becomes the validation
        set (``funnelrank train``; the TFX Trainer validates on its eval split).
      jit_compile: Compile the train step with XLA. Losses that gather pairs with dynamic
        shapes (PWiseR, KAML's ranking term) cannot be XLA-compiled and are refused.
      mixed_precision: Train in ``mixed_float16`` (float16 compute, float32 weights, dynamic
        loss scaling) when a GPU is present; ignored, with a log line, on CPU.
    """

    batch_size: int = 1024
    epochs: int = 2
    learning_rate: float = 0.002
    seed: int = 42
    shuffle_buffer: int = 50_000
    in_memory: bool = False
    checkpoint_every_steps: int = 500
    eval_batch_size: int = 4096
    early_stopping_patience: int = 0
    early_stopping_monitor: str = "val_ctcvr_auc"
    validation_percent: int = 10
    jit_compile: bool = False
    mixed_precision: bool = False


@dataclasses.dataclass(frozen=True)
class AdmConfig:
    """KAML's Attribution Driven Masking (Sec. 3.2; ``transform.adm``).

    Attributes:
      enabled: Run ADM before preprocessing (a Beam component in the pipeline, NumPy in
        ``funnelrank train``); the data must have per-action labels, a target action, an ad
        task and a timestamp (the synthetic log has).
      window_seconds: T, how far back an ad task's submitted conversions count.
      thresholds: alpha_j: one value for every action, or one per action.
    """

    enabled: bool = False
    window_seconds: int = 7 * 86_400
    thresholds: Tuple[int, ...] = (1,)


@dataclasses.dataclass(frozen=True)
class MetaConfig:
    """MAN's second training stage: MAML over task partitions of the fusion layers.

    After the general model is trained (stage 1), the fusion layers (the backbone's
    ``fusion_layers()``, e.g. MAN's task attention, plus the top-level layers matching
    ``layers``: towers and logits) are meta-trained as MAN Algorithm 1: each step samples one
    partition (a value of ``partition_key``) per replica and task slot, takes an inner step
    ``theta' = theta - inner_lr * grad L_support(theta)`` and sums ``grad_theta
    L_query(theta')`` over the sampled partitions for the outer SGD step (``outer_lr``).

    Attributes:
      enabled: Run the stage.
      partition_key: Sparse feature whose values define the meta-tasks (e.g. a user segment
        or scenario field).
      steps: Outer (meta) steps.
      tasks_per_replica: Partitions each replica handles per step.
      support_size, query_size: Rows of the (disjoint) support and query batches.
      inner_lr: alpha, the inner-step size.
      outer_lr: beta, the outer SGD step size.
      first_order: Drop the second-order term (first-order MAML).
      layers: Name patterns (fnmatch) of top-level network layers meta-trained besides the
        backbone's fusion layers.
      max_rows: Rows of the train split kept in memory for sampling.
      log_every: Progress line interval in steps.
    """

    enabled: bool = False
    partition_key: str = "user_segment"
    steps: int = 200
    tasks_per_replica: int = 1
    support_size: int = 512
    query_size: int = 512
    inner_lr: float = 0.01
    outer_lr: float = 0.001
    first_order: bool = False
    layers: Tuple[str, ...] = ("*/tower", "*/logit")
    max_rows: int = 500_000
    log_every: int = 50


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation and blessing.

    Attributes:
      min_ctr_auc: The Evaluator blesses (and the Pusher pushes) only above this CTR AUC.
      max_ctr_auc_drop: ... and only if its CTR AUC is not worse than the last blessed
        (pushed) model's by more than this (TFMA change threshold against the baseline the
        pipeline resolves from ML Metadata; the first run has no baseline). ``null`` disables
        the comparison.
    """

    min_ctr_auc: float = 0.5
    max_ctr_auc_drop: Optional[float] = 0.01


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """TFX pipeline settings.

    Attributes:
      name: Pipeline name (``[a-z0-9][a-z0-9-]*``, Kubeflow's rule).
      root: Work directory for generated data, artifacts and ML Metadata.
      serving_dir: Pusher destination (``<serving_dir>/<version>/``).
      schema: Path of a schema.pbtxt for ImportSchemaGen; ``None`` infers one (SchemaGen).
      beam_args: Beam pipeline args (runner and its options).
      image: Container image for the Kubeflow V2 compile.
    """

    name: str = "funnelrank"
    root: str = "work"
    serving_dir: Optional[str] = None
    schema: Optional[str] = None
    beam_args: Tuple[str, ...] = ("--direct_running_mode=in_memory", "--direct_num_workers=1")
    image: str = "gcr.io/funnelrank/funnelrank:0.1.0"


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment file."""

    name: str = "experiment"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    adm: AdmConfig = dataclasses.field(default_factory=AdmConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    meta: MetaConfig = dataclasses.field(default_factory=MetaConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)


_SECTIONS = {f.name: f.type for f in dataclasses.fields(ExperimentConfig)}
_SECTION_CLASSES = {
    "data": DataConfig, "adm": AdmConfig, "model": ModelConfig, "loss": LossConfig,
    "train": TrainConfig, "meta": MetaConfig, "eval": EvalConfig, "pipeline": PipelineConfig,
}


def _build(cls, values: Mapping[str, Any], where: str):
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}: {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(fields)}")
    kwargs = {}
    for key, value in values.items():
        default = getattr(cls(), key)
        if isinstance(default, tuple):
            value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        elif isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{where}.{key}: expected true/false, got {value!r}")
        elif isinstance(default, int) and not isinstance(default, bool) and not (
                isinstance(value, int) and not isinstance(value, bool)):
            raise ConfigError(f"{where}.{key}: expected an integer, got {value!r}")
        elif isinstance(default, float) and not isinstance(value, (int, float)):
            raise ConfigError(f"{where}.{key}: expected a number, got {value!r}")
        elif isinstance(default, float):
            value = float(value)
        kwargs[key] = value
    return cls(**kwargs)


def from_dict(d: Mapping[str, Any]) -> ExperimentConfig:
    """Builds and validates an :class:`ExperimentConfig` from a plain dict."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"config: expected a mapping at top level, got {type(d).__name__}")
    unknown = sorted(set(d) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"config: unknown section(s) {unknown}; expected some of "
                          f"{sorted(_SECTIONS)}")
    kwargs: Dict[str, Any] = {}
    for key, value in d.items():
        if key == "name":
            kwargs["name"] = str(value)
        else:
            kwargs[key] = _build(_SECTION_CLASSES[key], value or {}, key)
    cfg = ExperimentConfig(**kwargs)
    _validate(cfg)
    return cfg


def _validate(cfg: ExperimentConfig) -> None:
    if cfg.data.adapter not in ("synthetic", "ali_ccp"):
        raise ConfigError(f"data.adapter: expected 'synthetic' or 'ali_ccp', got "
                          f"{cfg.data.adapter!r}")
    if cfg.data.path is None and cfg.data.adapter != "synthetic":
        raise ConfigError(f"data.path is required for adapter {cfg.data.adapter!r}")
    if not 0 < cfg.data.eval_percent < 100:
        raise ConfigError(f"data.eval_percent: expected 1..99, got {cfg.data.eval_percent}")
    for key in ("batch_size", "epochs", "eval_batch_size", "checkpoint_every_steps"):
        if getattr(cfg.train, key) < 1:
            raise ConfigError(f"train.{key}: expected >= 1, got {getattr(cfg.train, key)}")
    if cfg.train.early_stopping_patience < 0:
        raise ConfigError(f"train.early_stopping_patience: expected >= 0 (0 = off), got "
                          f"{cfg.train.early_stopping_patience}")
    if not 0 < cfg.train.validation_percent < 100:
        raise ConfigError(f"train.validation_percent: expected 1..99, got "
                          f"{cfg.train.validation_percent}")
    for key in ("steps", "tasks_per_replica", "support_size", "query_size", "max_rows",
                "log_every"):
        if getattr(cfg.meta, key) < 1:
            raise ConfigError(f"meta.{key}: expected >= 1, got {getattr(cfg.meta, key)}")
    for key in ("inner_lr", "outer_lr"):
        if getattr(cfg.meta, key) <= 0:
            raise ConfigError(f"meta.{key}: expected > 0, got {getattr(cfg.meta, key)}")
    if cfg.train.learning_rate <= 0:
        raise ConfigError(f"train.learning_rate: expected > 0, got {cfg.train.learning_rate}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,127}", cfg.pipeline.name):
        raise ConfigError(f"pipeline.name: expected lowercase letters, digits and '-' "
                          f"(Kubeflow's rule), got {cfg.pipeline.name!r}")
    drop = cfg.eval.max_ctr_auc_drop
    if drop is not None and (isinstance(drop, bool) or not isinstance(drop, (int, float))):
        raise ConfigError(f"eval.max_ctr_auc_drop: expected a number or null, got {drop!r}")
    if cfg.train.jit_compile and (cfg.loss.name == "pwiser" or (
            cfg.loss.name == "kaml" and cfg.loss.args.get("gamma", 0.9) < 1.0)):
        raise ConfigError(f"train.jit_compile: loss {cfg.loss.name!r} gathers pairs with "
                          f"dynamic shapes, which XLA cannot compile; set jit_compile: false")
    if cfg.adm.window_seconds < 1:
        raise ConfigError(f"adm.window_seconds: expected >= 1, got {cfg.adm.window_seconds}")
    if not cfg.adm.thresholds or any(isinstance(a, bool) or not isinstance(a, int) or a < 1
                                     for a in cfg.adm.thresholds):
        raise ConfigError(f"adm.thresholds: expected integers >= 1, got "
                          f"{list(cfg.adm.thresholds)}")
    if len(cfg.adm.thresholds) not in (1, cfg.data.num_actions):
        raise ConfigError(f"adm.thresholds: expected 1 value or one per action "
                          f"({cfg.data.num_actions}), got {list(cfg.adm.thresholds)}")
    if cfg.model.hke and tuple(cfg.model.tasks) != ("ctr", "actions"):
        raise ConfigError(f"model.hke needs model.tasks [ctr, actions], got "
                          f"{list(cfg.model.tasks)}")
    if tuple(cfg.model.tasks) == ("ctr", "actions") and not cfg.adm.enabled:
        raise ConfigError("model.tasks [ctr, actions] needs adm.enabled: true (the ADM job "
                          "provides the target-action indicators the per-action heads are "
                          "trained and evaluated with)")
    if cfg.loss.name == "kaml" and tuple(cfg.model.tasks) != ("ctr", "actions"):
        raise ConfigError(f"loss.name kaml trains per-action heads: set model.tasks to "
                          f"[ctr, actions], got {list(cfg.model.tasks)}")
    if cfg.model.hke and not cfg.adm.enabled:
        raise ConfigError("model.hke trains extended sub-towers on ADM-extended samples: "
                          "set adm.enabled: true (HKE cannot be used without ADM, KAML 4.2.3)")
    if "ctr" not in cfg.model.tasks:
        raise ConfigError(f"model.tasks must include 'ctr', got {list(cfg.model.tasks)}")
    if len(cfg.model.tasks) > 2 and cfg.loss.name != "adaftr":
        raise ConfigError(f"model.tasks {list(cfg.model.tasks)}: only loss.name adaftr trains "
                          f"extra tasks, got loss.name {cfg.loss.name!r}")


def to_dict(cfg: ExperimentConfig) -> Dict[str, Any]:
    """Plain JSON-able dict; ``from_dict(to_dict(c)) == c``."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _merge(base: Dict[str, Any], top: Mapping[str, Any]) -> Dict[str, Any]:
    """Section-wise merge: keys of ``top`` replace those of ``base`` inside each section."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) and \
                key in _SECTION_CLASSES:
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _read(path: str, seen: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """Raw dict of a config file, with its ``base:`` file (relative to it) merged under it."""
    if not os.path.exists(path):
        raise ConfigError(f"config file not found: {path}")
    if os.path.abspath(path) in seen:
        raise ConfigError(f"{path}: 'base' chain loops: {' -> '.join(seen)}")
    with open(path) as f:
        try:
            raw = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML/JSON: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    base_path = os.path.join(os.path.dirname(path), base)
    return _merge(_read(base_path, seen + (os.path.abspath(path),)), raw)


def load(path: str, overrides: Optional[Mapping[str, Any]] = None) -> ExperimentConfig:
    """Reads a YAML/JSON experiment file; ``overrides`` maps ``section.key`` to a value.

    A file may name ``base: other.yaml`` (relative to itself): its sections are merged key by
    key over the base's. Relative ``data.path`` / ``pipeline.schema`` are resolved against the
    current directory.
    """
    raw = _read(path)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        raw.setdefault(section, {})
        raw[section] = dict(raw[section] or {})
        raw[section][key] = value
    try:
        return from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
