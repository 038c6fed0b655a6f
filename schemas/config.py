"""Experiment configuration: one YAML/JSON file, parsed once into typed, frozen dataclasses.

The dict travels into the TFX Trainer through ``custom_config`` (Transform gets only the
dataset spec); ``run_fn`` and ``funnelrank train`` both call :func:`from_dict` first and log
the result.

Parsing is strict and every message names the key and quotes the value received: unknown keys
are errors (a typo never falls back to a default), booleans are not numbers, lists are not
mappings, ``null`` is accepted only where a field is documented as optional (a whole section
given as ``null``, e.g. ``train:`` with nothing under it, takes its defaults).

A dataset is described by roles (``data.features``, ``data.labels``); ``model.tasks`` default to
the keys of ``data.labels`` and ``loss.name`` to ``esmm`` for the click -> conversion funnel
(labels ``ctr`` and ``cvr``) or ``bce`` (one independent binary task per label) otherwise. The
presets ``synthetic`` and ``ali_ccp`` fill ``features`` and ``labels`` for the formats we ship.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import json
import os
import re
import typing
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from schemas import checks
from schemas import tasks as tasks_lib
from schemas.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration file or value is invalid."""


# Keys of the TFX components' ``custom_config`` (the Trainer gets both, Transform the spec).
EXPERIMENT_KEY = "experiment"
SPEC_KEY = "dataset_spec"

ADAPTERS = ("csv", "parquet", "synthetic", "ali_ccp")
PRESETS = ("synthetic", "ali_ccp")
SPARSE_DTYPES = ("auto", "int", "string")
SYNTHETIC_MODES = ("default", "hard", "clean")
SPARSE_OPTIMIZERS = ("adam", "lazy_adam", "adagrad")  # trainer.optimizers.OPTIMIZERS
LR_SCHEDULES = ("constant", "cosine", "linear")  # trainer.optimizers.SCHEDULES
EMBEDDING_L2_MODES = ("table", "batch")
WIDE_INITS = ("logistic",)
DEFAULT_CONFIG = "configs/synthetic_mmoe.yaml"


@dataclasses.dataclass(frozen=True)
class SparseFeature:
    """A categorical column and how its vocabulary is built.

    Attributes:
      name: Column name.
      dtype: ``auto`` (integer when every value in the data is an integer, else string),
        ``int`` or ``string``. Integers are compared as integers (``17`` and ``17.0`` are the
        same id); strings as their exact UTF-8 text.
      min_count: Values seen fewer times in the train split go to the OOV bucket (``null``:
        ``data.features.min_count``).
      hash_buckets: > 0 replaces the vocabulary by this many hash buckets (for very large
        vocabularies); 0 uses a vocabulary.
    """

    name: str
    dtype: str = "auto"
    min_count: Optional[int] = None
    hash_buckets: int = 0


@dataclasses.dataclass(frozen=True)
class FeaturesConfig:
    """Columns by role.

    Attributes:
      sparse: Categorical columns: names, or mappings ``{name, dtype, min_count, hash_buckets}``
        (see :class:`SparseFeature`). An empty cell is a missing value with its own bucket.
      dense: Numeric columns; an empty cell is missing and filled with the train mean (its
        z-score is 0).
      user: Optional user-id column for GAUC (it may also be a sparse feature).
      timestamp: Optional integer-seconds column (KAML's ADM window).
      action_labels: Per-conversion-action 0/1 label columns (KAML's per-action heads).
      target_action: Column with each sample's target conversion action ``0..N-1`` (KAML).
      ad_task: Column with the ad task id whose history ADM counts (KAML).
      min_count: Default vocabulary minimum count of every sparse feature (1 keeps all).
    """

    sparse: Tuple[SparseFeature, ...] = ()
    dense: Tuple[str, ...] = ()
    user: Optional[str] = None
    timestamp: Optional[str] = None
    action_labels: Tuple[str, ...] = ()
    target_action: Optional[str] = None
    ad_task: Optional[str] = None
    min_count: int = 1


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the impressions come from and how they are split.

    Attributes:
      adapter: ``csv`` or ``parquet`` (roles from ``features`` and ``labels``), or a preset
        that fills them: ``synthetic`` (the embedded generator, or its CSV) or ``ali_ccp``
        (preprocessed Ali-CCP CSV).
      path: A file, or a directory of files (``*train*``/``*val*``/``*test*`` splits, or any
        number of files split by hash). ``null`` with ``synthetic`` generates data. A relative
        path in a config file is relative to that file.
      features: Columns by role (:class:`FeaturesConfig`); ``null`` with a preset.
      labels: Task name -> 0/1 label column, e.g. ``{ctr: click, cvr: purchase}``; ``null``
        with a preset.
      generate_rows: Rows to generate when ``path`` is null (synthetic).
      num_actions: Conversion actions of the synthetic log.
      seed: Generator seed.
      synthetic_mode: World of the generated log: ``default``, or ``hard`` (more and rarer
        ids, per-user and per-item biases, a segment x category interaction and a bot segment
        that clicks without buying), or ``clean`` (the default world without noise clicks;
        ``transform.ingest.synthetic``).
      eval_percent: Share of rows (by a hash of the row) held out for evaluation when the
        data has no test files.
      validation_percent: Share of the remaining train rows (by hash) held out for early
        stopping and model selection when the data has no val files.
      skip_bad_rows: Drop (and count) invalid rows instead of failing.
      extra_columns: Columns in the files that no role names: ``ignore`` (listed in the log)
        or ``error``.
    """

    adapter: str = "synthetic"
    path: Optional[str] = None
    features: Optional[FeaturesConfig] = None
    labels: Optional[Mapping[str, str]] = None
    generate_rows: int = 200_000
    num_actions: int = 5
    seed: int = 7
    synthetic_mode: str = "default"
    eval_percent: int = 20
    validation_percent: int = 10
    skip_bad_rows: bool = False
    extra_columns: str = "ignore"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Network: embeddings -> backbone -> per-task towers -> sigmoid heads.

    Attributes:
      backbone: Registered backbone name (``mmoe``; see ``trainer.model.BACKBONES``).
      backbone_args: Hyperparameters passed to the backbone layer's constructor.
      embedding_dim: Width of every sparse-feature embedding.
      embedding_l2: L2 penalty on the embeddings (0 disables); where, says embedding_l2_mode.
      embedding_l2_mode: ``table`` (every row of every table, each step) or ``batch`` (only
        the rows the batch looked up, ``l2 * sum_f mean_b ||e||^2``; see
        ``trainer.layers.embedding.FeatureEmbedding``).
      embedding_dropout: Dropout on the embedding entries in training, in [0, 1).
      embedding_feature_dropout: Rate of dropping a sparse feature's whole embedding per
        example in training, in [0, 1).
      embedding_fused: One embedding table with per-feature row offsets (one gather per batch)
        instead of one table per feature; same outputs, variable ``embedding/fused``.
      tower_units: Hidden sizes of each task tower (ignored by backbones that own their
        towers: ``trainer.model.OWNS_TOWERS``, i.e. aitm, cross_stitch, star, taml, autoheri).
      tower_dropout: Dropout rate inside towers.
      tower_batch_norm: Batch-normalise each tower layer's pre-activation output.
      tasks: The model's tasks; ``null`` = every key of ``data.labels``. Funnel forms (with
        the funnel recipes): ``[ctr, cvr]`` (heads ctr, cvr and ``ctcvr = ctr * cvr``),
        ``[ctr, ctcvr]`` (funnel order, AITM; ``cvr = ctcvr / ctr``), ``[ctr]`` and
        ``[ctr, actions]`` (KAML: one post-click head ``cvr_<j>`` per conversion action).
        With ``loss.name: bce`` any label keys, each an independent head.
      hke: Per-action heads as KAML's HKE (original and extended sub-towers, eq. 9-10)
        instead of plain towers; needs ``tasks: [ctr, actions]`` and ADM data.
      hke_units: Hidden sizes of each HKE sub-tower (the merged MLP uses ``tower_units``).
      wide: Add a linear ("wide") logit per task to its deep logit: one weight per
        (sparse id, task), per (cross value, task) and per (dense feature, task), all
        starting at 0 (``trainer.layers.wide.WideLogits``). Tables ``wide/<feature>``.
      wide_crosses: Pairs of sparse features whose joint value gets its own wide weight
        (e.g. ``[[user_segment, category_id]]``); needs ``wide: true``.
      wide_cross_buckets: Most rows of a cross's table; larger products are hashed.
      wide_l2: L2 on the wide rows the batch looked up (the ``embedding_l2_mode: batch``
        form).
      wide_init: ``null`` (the wide weights start at 0) or ``logistic``: before training,
        fit the one-hot logistic regression baseline per task on the train split (``C``
        chosen on the validation LogLoss among ``wide_init_C``, the wide crosses as its
        crosses) and start from it: its weights in the wide tables, its intercept as the
        logit's bias and the deep logit's kernel at 0, so the untrained network predicts
        exactly what the regression does and training learns what it misses
        (``trainer.wide_init``). Needs ``wide: true``.
      wide_init_C: Candidates of the regression's ``C`` (inverse L2 strength).
      wide_init_max_rows: The regression is fitted on at most this many train rows (a
        seeded sample of the in-memory split; a train split that streams gives its first
        rows, one from each file in turn).
      wide_frozen: Keep the wide weights where ``wide_init`` put them (not trained).
      deep_exclude: Features (sparse or dense, raw names) the deep part does not read: no
        embedding, no input to the backbone; the wide part still reads them. E.g. the
        high-cardinality ids (``[user_id, item_id]``), so that their per-id effects live in
        the wide part only and the deep part models the low-cardinality fields (Wide & Deep
        Sec. 3: memorisation in the wide part, generalisation in the deep part). Needs
        ``wide: true``.
      deep_max_vocabulary: ``null`` or a number of rows: sparse features whose vocabulary
        (OOV buckets included) has more rows than this are read by the wide part only, as
        if named in ``deep_exclude``; decided per data set from its vocabularies. Needs
        ``wide: true``.
      cross_layers: DCN-v2 cross layers (``tfrs.layers.dcn.Cross``) applied to the
        concatenated embeddings before the backbone, any backbone (0: none); see
        ``trainer.layers.dcn``. The ``dcn`` backbone has its own.
      cross_projection_dim: Rank of low-rank cross layers (``null``: full rank).
    """

    backbone: str = "mmoe"
    backbone_args: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: {"num_experts": 4, "expert_units": [64, 32]})
    embedding_dim: int = 8
    embedding_l2: float = 0.0
    embedding_l2_mode: str = "table"
    embedding_dropout: float = 0.0
    embedding_feature_dropout: float = 0.0
    embedding_fused: bool = False
    tower_units: Tuple[int, ...] = (32,)
    tower_dropout: float = 0.0
    tower_batch_norm: bool = False
    tasks: Optional[Tuple[str, ...]] = None
    hke: bool = False
    hke_units: Tuple[int, ...] = (32,)
    wide: bool = False
    wide_crosses: Tuple[Tuple[str, ...], ...] = ()
    wide_cross_buckets: int = 100_000
    wide_l2: float = 0.0
    wide_init: Optional[str] = None
    wide_init_C: Tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    wide_init_max_rows: int = 1_000_000
    wide_frozen: bool = False
    deep_exclude: Tuple[str, ...] = ()
    deep_max_vocabulary: Optional[int] = None
    cross_layers: int = 0
    cross_projection_dim: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss recipe.

    Attributes:
      name: ``bce`` (independent BCE per task), or a funnel recipe: ``esmm`` (BCE on ctr and
        ctcvr over all impressions), ``pwiser``, ``adaftr``, ``kaml``, ``uncertainty`` (MAN);
        ``null`` = ``esmm`` when the labels are the funnel's ``ctr`` and ``cvr``, else ``bce``.
      weights: Task (head) -> weight of its BCE term (default 1 each).
      args: Extra hyperparameters of the recipe (e.g. PWiseR margins).
    """

    name: Optional[str] = None
    weights: Mapping[str, float] = dataclasses.field(default_factory=dict)
    args: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation.

    Attributes:
      batch_size: Per-replica batch; the global batch is this times the replica count.
      epochs: Passes over the training split (the maximum when early stopping is on).
      learning_rate: Adam learning rate (the peak, with a schedule).
      sparse_optimizer: ``null`` (embedding and wide tables train with the Adam of every
        other weight) or a separate optimizer for them: ``adam``, ``lazy_adam`` (Adam that
        updates only the rows in the batch; ``trainer.optimizers.LazyAdam``) or ``adagrad``.
      sparse_learning_rate: Learning rate of ``sparse_optimizer`` (``null``: learning_rate).
      lr_schedule: ``constant``, ``cosine`` or ``linear`` decay of both learning rates to
        ``lr_floor`` of their peak over ``lr_decay_steps`` (``trainer.optimizers.WarmupDecay``).
      lr_warmup_steps: Steps of linear warm-up from 0 to the peak (0: none).
      lr_decay_steps: Step at which the decay ends (``null``: epochs x steps per epoch, which
        needs a known train row count).
      lr_floor: Final learning rate of a decay, as a share of the peak.
      seed: Seed of weights, shuffling and dropout.
      shuffle_buffer: TFX Trainer streaming TFRecords: rows permuted together, in windows of
        this many rows rounded up to whole batches (the files in a new order every epoch).
      in_memory: TFX Trainer: parse the transformed train split once into memory and train
        from it as ``funnelrank train`` does (a full shuffle each epoch, no per-step parsing);
        ``null`` (default) does so when it fits in ``memory_budget_mb`` (about rows x columns
        x 8 bytes), ``false`` streams the TFRecords (shuffled in ``shuffle_buffer`` windows).
      memory_budget_mb: The budget of ``in_memory: null``.
      checkpoint_every_steps: Checkpoint interval in steps (a checkpoint is also written at
        every epoch end); a killed run started again resumes from the last one.
      eval_batch_size: Batch used for prediction and evaluation.
      early_stopping_patience: Epochs without improvement of ``early_stopping_monitor`` on
        the validation split before training stops and the best epoch's weights are
        restored; 0 disables early stopping.
      early_stopping_min_epochs: Passes over the train split before early stopping may stop
        (fractions count validation rounds: 0.5 with 4 validations per epoch is 2 rounds). The
        best round is still tracked from the first one and restored; 0: stop whenever the
        patience runs out. On a small validation split the first rounds are noisy enough to
        stop a run before it has learned anything (docs/benchmarks.md, issue 16).
      early_stopping_monitor: Keras log key, e.g. ``val_loss`` (minimised; it includes the
        weight priors' term ``regularization``), ``val_ctcvr_auc`` or ``val_mean_auc`` (the
        mean of the heads' validation AUCs); keys ending in ``auc`` are maximised.
      validations_per_epoch: Validate (and count early stopping's patience) this many times
        per pass over the train split instead of once; needs the train row count. Each
        round is ``ceil(steps per pass / validations_per_epoch)`` steps, and a pass has as
        many rounds as cover it: fewer than asked when the pass has few steps (logged; at
        most one per step).
      jit_compile: Compile the train step with XLA. Losses that gather pairs with dynamic
        shapes (PWiseR, KAML's ranking term) cannot be XLA-compiled and are refused.
      mixed_precision: Train in ``mixed_float16`` (float16 compute, float32 weights, dynamic
        loss scaling) when a GPU is present; ignored, with a log line, on CPU.
      steps_per_execution: Train steps run by one call of the compiled train function
        (Keras ``steps_per_execution``): Python and the callbacks run once per this many
        steps instead of every step, which on a small model's CPU step is 25-40% of the
        training time (docs/benchmarks.md, issue 18). Callbacks see every this-many steps:
        progress lines, SIGTERM and divergence checks happen at those boundaries, and the
        checkpoint interval rounds up to a multiple of it. 1: Keras' default. Used on one
        replica, capped at the steps between two validations (a split of one batch per
        round runs one step per call, which traces faster); MirroredStrategy over several
        runs one step per call (``trainer.session.steps_per_execution``).
      intra_op_threads: Threads ONE TensorFlow op may use (TF's intra-op pool; 0: TF's
        default, one per core). 1 (default): each op on one core, the cores running
        independent ops side by side (experts, towers, the backward pass's branches). On the
        zoo's small dense layers splitting one matmul costs more than it saves: on 2 cores
        MMoE, PLE and DNN trained 23-59% faster with 1 in A/B runs (one later run did not
        reproduce it for MMoE; docs/benchmarks.md, issue 18). Streaming TFRecords prefers
        0 (its parsing uses the pool). A process setting: applied when the training session
        starts, before TF's runtime does (``trainer.strategy.configure_threads``); a process
        where TF already ran keeps its setting and says so.
      inter_op_threads: Independent ops run at once (TF's inter-op pool; 0: TF's default, one
        per core).
      strategy: ``auto`` (MultiWorkerMirroredStrategy when TF_CONFIG names several workers,
        MirroredStrategy over 2+ GPUs or logical CPU devices, no strategy on one device),
        ``mirrored`` (MirroredStrategy even over one device) or ``default``.
      log_every: Progress line interval in steps.
      train_auc_every: Update the per-head training AUCs every this many steps (0: never;
        they cost up to a fifth of a small model's step). Validation always reports them.
      warm_start: TFX Trainer: start from the weights of the last blessed model (TFX's
        latest-blessed-model resolver, ``fn_args.base_model``); the first run, with none,
        starts from scratch. Embedding rows follow their vocabulary entries when the
        vocabularies changed (``trainer.warm_start``). ``funnelrank train`` takes the model
        to start from as ``--warm-start DIR``.
    """

    batch_size: int = 1024
    epochs: int = 2
    learning_rate: float = 0.002
    sparse_optimizer: Optional[str] = None
    sparse_learning_rate: Optional[float] = None
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    lr_decay_steps: Optional[int] = None
    lr_floor: float = 0.0
    seed: int = 42
    shuffle_buffer: int = 50_000
    in_memory: Optional[bool] = None
    memory_budget_mb: int = 2048
    checkpoint_every_steps: int = 500
    eval_batch_size: int = 4096
    early_stopping_patience: int = 0
    early_stopping_monitor: str = "val_loss"
    early_stopping_min_epochs: float = 0.0
    validations_per_epoch: int = 1
    jit_compile: bool = False
    mixed_precision: bool = False
    steps_per_execution: int = 8
    intra_op_threads: int = 1
    inter_op_threads: int = 0
    strategy: str = "auto"
    log_every: int = 100
    train_auc_every: int = 0
    warm_start: bool = False


@dataclasses.dataclass(frozen=True)
class AdmConfig:
    """KAML's Attribution Driven Masking (Sec. 3.2; ``transform.adm``).

    Attributes:
      enabled: Run ADM before preprocessing (a Beam component in the pipeline, NumPy in
        ``funnelrank train``); the data needs ``features.action_labels``, ``target_action``,
        ``ad_task`` and ``timestamp`` (the synthetic preset has them).
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
      test_task_eval: Also score MAN Sec. 4.3's test tasks on the eval split
        (``trainer.meta.evaluate_test_tasks``): per partition, fine-tune a copy of the fusion
        layers on ``support_size`` rows and score the partition's other rows; the trained
        model is left as it is. Independent of ``enabled`` (baselines can be scored too).
      test_task_steps: Inner steps (of ``inner_lr``) on each test task's support rows; 0
        scores the same query rows without fine-tuning.
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
    test_task_eval: bool = False
    test_task_steps: int = 1


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation and blessing (TFMA Evaluator in the pipeline).

    Attributes:
      head: Head whose AUC decides blessing (``null``: the first task, ``ctr`` in the funnel).
      min_auc: The Evaluator blesses (and the Pusher pushes) only above this AUC of ``head``.
      max_auc_drop: ... and only if that AUC is not worse than the last blessed (pushed)
        model's by more than this (TFMA change threshold against the baseline resolved from
        ML Metadata; the first run has no baseline). ``null`` disables the comparison.
      slices: Sparse features whose values slice the TFMA metrics (besides the overall slice).
    """

    head: Optional[str] = None
    min_auc: float = 0.5
    max_auc_drop: Optional[float] = 0.01
    slices: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """TFX pipeline settings.

    Attributes:
      name: Pipeline name (``[a-z0-9][a-z0-9-]*``, Kubeflow's rule).
      root: Work directory for prepared data, artifacts and ML Metadata (relative paths are
        relative to the working directory).
      serving_dir: Pusher destination (``<serving_dir>/<version>/``); ``null``:
        ``<root>/serving``.
      schema: A schema.pbtxt for ImportSchemaGen; ``null`` uses the schema derived from the
        dataset's roles when the data is prepared.
      beam_args: Beam pipeline args (runner and its options). Local runs and the Kubeflow
        spec add ``--update_compatibility_version=<installed Beam>`` (the in-process
        DirectRunner, not Prism, which downloads a binary) and, on the DirectRunner when they
        name no way for workers to get their dependencies, ``--sdk_container_image=<image>``
        (``pipeline.common.beam_pipeline_args``: the DirectRunner ignores it, and TFX then
        builds no sdist of itself for each Beam component).
      image: Container image for the Kubeflow V2 compile.
      enable_cache: Let TFX reuse component outputs whose inputs did not change.
      transform_statistics: Transform also computes TFDV statistics of the train split before
        and of every split after the transformation (``pre_transform_stats``,
        ``post_transform_stats``, ``post_transform_anomalies``, for a look at the transformed
        features in a metadata UI). Off by default: nothing downstream reads them,
        StatisticsGen and ExampleValidator already check the raw data, and they cost a third
        of Transform's time (docs/benchmarks.md, issue 18 start-up).
    """

    name: str = "funnelrank"
    root: str = "work"
    serving_dir: Optional[str] = None
    schema: Optional[str] = None
    beam_args: Tuple[str, ...] = ("--direct_running_mode=in_memory", "--direct_num_workers=1")
    image: str = "gcr.io/funnelrank/funnelrank:0.1.0"
    enable_cache: bool = False
    transform_statistics: bool = False


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment file.

    Attributes:
      name: Names the outputs (``work/train/<name>``): letters, digits, ``.``, ``_``, ``-``.
    """

    name: str = "experiment"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    adm: AdmConfig = dataclasses.field(default_factory=AdmConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    meta: MetaConfig = dataclasses.field(default_factory=MetaConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)

    @property
    def tasks(self) -> Tuple[str, ...]:
        """``model.tasks`` (resolved: never null after :func:`from_dict`)."""
        return tuple(self.model.tasks or ())

    @property
    def funnel(self) -> bool:
        """True for the click -> conversion recipes (ctcvr head, cvr scored on clicks)."""
        return self.loss.name in tasks_lib.FUNNEL_RECIPES


SECTIONS = {f.name: f.type for f in dataclasses.fields(ExperimentConfig)}


# --------------------------------------------------------------------------- typed parsing
def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "a string"
    if origin in (tuple, list, collections.abc.Sequence):
        return "a list"
    if origin in (dict, collections.abc.Mapping):
        return "a mapping"
    if dataclasses.is_dataclass(annotation):
        return "a mapping"
    return str(annotation)


def _fail(where: str, what: str, value) -> ConfigError:
    return ConfigError(f"{where}: expected {what}, got {checks.short_repr(value)}")


def _parse(value, annotation, where: str):
    """``value`` checked against ``annotation`` (bool, int, float, str, Optional[X],
    Tuple[X, ...], Mapping[str, X], Any, a dataclass); returns the normalised value."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        if value is None:
            return None
        return _parse(value, inner[0], where)
    if annotation is Any:  # a layer's or recipe's own argument (it checks; null may be valid)
        return value
    if value is None:
        raise _fail(where, _type_name(annotation) + " (null is not allowed here)", value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise _fail(where, "true or false", value)
        return value
    if annotation is int:
        if not checks.is_int(value):
            raise _fail(where, "an integer", value)
        return value
    if annotation is float:
        if not checks.is_number(value):
            raise _fail(where, "a number", value)
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise _fail(where, "a string", value)
        return value
    if annotation is SparseFeature:
        if isinstance(value, str):
            value = {"name": value}
        return _build(SparseFeature, value, where)
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, where)
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise _fail(where, "a list", value)
        item = args[0] if args else Any
        return tuple(_parse(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, Mapping):
            raise _fail(where, "a mapping", value)
        item = args[1] if len(args) == 2 else Any
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _fail(f"{where}", "string keys", k)
            out[k] = _parse(v, item, f"{where}.{k}")
        return out
    raise TypeError(f"config field {where}: unsupported annotation {annotation!r}")


def _build(cls, values, where: str):
    if not isinstance(values, Mapping):
        raise _fail(where, "a mapping", values)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(fields)}")
    return cls(**{k: _parse(v, hints[k], f"{where}.{k}" if where else k)
                  for k, v in values.items()})


# --------------------------------------------------------------------------- resolution
def preset(adapter: str, num_actions: int) -> Tuple[FeaturesConfig, Dict[str, str]]:
    """``(features, labels)`` of a shipped format."""
    if adapter == "synthetic":
        return FeaturesConfig(
            sparse=tuple(SparseFeature(n, dtype="int") for n in (
                "user_id", "item_id", "category_id", "advertiser_id", "ad_task_id",
                "target_action", "device", "hour", "user_segment")),
            dense=("user_activity", "item_quality", "price", "ad_bid"),
            user="user_id", timestamp="timestamp",
            action_labels=tuple(f"conv_{j}" for j in range(num_actions)),
            target_action="target_action", ad_task="ad_task_id"), \
            {"ctr": "click", "cvr": "conversion"}
    if adapter == "ali_ccp":
        return FeaturesConfig(
            sparse=tuple(SparseFeature(n, dtype="int") for n in (
                "101", "121", "122", "124", "125", "126", "127", "128", "129", "205", "206",
                "207", "210", "216", "508", "509", "702", "853", "301", "109_14", "110_14",
                "127_14", "150_14")),
            dense=("D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702", "D853"),
            user="101"), {"ctr": "click", "cvr": "purchase"}
    raise ValueError(adapter)


def _resolve(cfg: ExperimentConfig) -> ExperimentConfig:
    """Fills what defaults to other keys: preset roles, tasks, loss name."""
    data = cfg.data
    checks.check_choice("data.adapter", data.adapter, ADAPTERS, error=ConfigError)
    if data.adapter in PRESETS:
        features, labels = preset(data.adapter, data.num_actions)
        given = [k for k, v in (("features", features), ("labels", labels))
                 if getattr(data, k) is not None and getattr(data, k) != v]
        if given:
            raise ConfigError(f"data.{given[0]}: the {data.adapter!r} preset defines the "
                              f"columns; use adapter: csv to declare your own")
        data = dataclasses.replace(data, features=features, labels=labels)
    else:
        for key in ("features", "labels"):
            if getattr(data, key) is None:
                raise ConfigError(f"data.{key} is required with adapter {data.adapter!r} "
                                  f"(the columns by role: see README 'Your own data')")
    tasks = cfg.model.tasks if cfg.model.tasks is not None else tuple(data.labels)
    name = cfg.loss.name
    if name is None:
        name = "esmm" if tasks_lib.is_funnel_labels(data.labels) and set(tasks) <= set(
            tasks_lib.FUNNEL_TASKS) else "bce"
    return dataclasses.replace(cfg, data=data,
                               model=dataclasses.replace(cfg.model, tasks=tuple(tasks)),
                               loss=dataclasses.replace(cfg.loss, name=name))


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _validate(cfg: ExperimentConfig) -> None:
    err = ConfigError
    if not SAFE_NAME.fullmatch(cfg.name) or ".." in cfg.name:
        raise ConfigError(f"name: expected a file name of letters, digits, '.', '_' and '-' "
                          f"(it names output directories), got {checks.short_repr(cfg.name)}")
    _validate_data(cfg.data)
    m = cfg.model
    checks.check_positive_int("model.embedding_dim", m.embedding_dim, error=err)
    checks.check_nonneg_number("model.embedding_l2", m.embedding_l2, error=err)
    checks.check_choice("model.embedding_l2_mode", m.embedding_l2_mode, EMBEDDING_L2_MODES,
                        error=err)
    for key in ("embedding_dropout", "embedding_feature_dropout"):
        checks.check_rate(f"model.{key}", getattr(m, key), error=err)
    checks.check_units("model.tower_units", m.tower_units, error=err, allow_empty=True)
    checks.check_rate("model.tower_dropout", m.tower_dropout, error=err)
    checks.check_units("model.hke_units", m.hke_units, error=err)
    checks.check_positive_int("model.wide_cross_buckets", m.wide_cross_buckets, error=err)
    checks.check_nonneg_number("model.wide_l2", m.wide_l2, error=err)
    sparse_names = [f.name for f in cfg.data.features.sparse]
    for i, pair in enumerate(m.wide_crosses):
        if len(pair) != 2 or pair[0] == pair[1] or any(p not in sparse_names for p in pair):
            raise ConfigError(f"model.wide_crosses[{i}]: expected a pair of two different "
                              f"sparse features of {sparse_names}, got {list(pair)}")
    if m.wide_crosses and not m.wide:
        raise ConfigError("model.wide_crosses needs model.wide: true (the crosses are weights "
                          "of the wide part)")
    if m.wide_init is not None:
        checks.check_choice("model.wide_init", m.wide_init, WIDE_INITS, error=err)
        if not m.wide:
            raise ConfigError("model.wide_init needs model.wide: true (it sets the wide "
                              "part's weights)")
    if not m.wide_init_C or any(isinstance(c, bool) or not isinstance(c, (int, float))
                                or not c > 0 for c in m.wide_init_C):
        raise ConfigError(f"model.wide_init_C: expected a non-empty list of numbers > 0, got "
                          f"{checks.short_repr(m.wide_init_C)}")
    checks.check_positive_int("model.wide_init_max_rows", m.wide_init_max_rows, error=err)
    if m.wide_frozen and m.wide_init is None:
        raise ConfigError("model.wide_frozen needs model.wide_init (frozen at 0 the wide part "
                          "would add nothing)")
    dense_names = list(cfg.data.features.dense)
    for i, name in enumerate(m.deep_exclude):
        if name not in sparse_names + dense_names:
            raise ConfigError(f"model.deep_exclude[{i}]: {checks.short_repr(name)} is not a "
                              f"feature; expected one of {sparse_names + dense_names}")
    if len(set(m.deep_exclude)) != len(m.deep_exclude):
        raise ConfigError(f"model.deep_exclude: names repeat in {list(m.deep_exclude)}")
    if m.deep_exclude and not m.wide:
        raise ConfigError("model.deep_exclude needs model.wide: true (without a wide part the "
                          "excluded features would be read by nothing; drop them from "
                          "data.features instead)")
    if m.deep_max_vocabulary is not None:
        checks.check_positive_int("model.deep_max_vocabulary", m.deep_max_vocabulary, error=err)
        if not m.wide:
            raise ConfigError("model.deep_max_vocabulary needs model.wide: true (the larger "
                              "vocabularies are left to the wide part)")
    if m.deep_exclude and set(m.deep_exclude) >= set(sparse_names + dense_names):
        raise ConfigError(f"model.deep_exclude: every feature is excluded "
                          f"({list(m.deep_exclude)}); the deep part needs at least one")
    if m.wide and m.hke:
        raise ConfigError("model.wide with model.hke: the HKE heads have two logit paths "
                          "(original and extended sub-towers); a wide part is not defined for "
                          "them, set wide: false")
    checks.check_nonneg_int("model.cross_layers", m.cross_layers, error=err)
    if m.cross_projection_dim is not None:
        checks.check_positive_int("model.cross_projection_dim", m.cross_projection_dim,
                                  error=err)
    recipe_labels = cfg.loss.args.get("task_labels") or {}
    tasks_lib.check_tasks(cfg.tasks, cfg.data.labels, cfg.loss.name,
                          bool(cfg.data.features.action_labels), error=err,
                          recipe_labels=list(recipe_labels) if isinstance(recipe_labels, Mapping)
                          else [])
    if m.wide_init is not None and tasks_lib.ACTIONS in cfg.tasks:
        raise ConfigError(f"model.wide_init: {m.wide_init} has no regression for model.tasks "
                          f"{list(cfg.tasks)} (KAML's per-action heads); set wide_init: null")
    for head, weight in cfg.loss.weights.items():
        checks.check_nonneg_number(f"loss.weights.{head}", weight, error=err)
    t = cfg.train
    for key in ("batch_size", "epochs", "eval_batch_size", "checkpoint_every_steps",
                "shuffle_buffer", "log_every", "memory_budget_mb", "validations_per_epoch",
                "steps_per_execution"):
        checks.check_positive_int(f"train.{key}", getattr(t, key), error=err)
    for key in ("early_stopping_patience", "train_auc_every", "intra_op_threads",
                "inter_op_threads"):
        checks.check_nonneg_int(f"train.{key}", getattr(t, key), error=err)
    checks.check_seed("train.seed", t.seed, error=err)
    checks.check_nonneg_number("train.early_stopping_min_epochs", t.early_stopping_min_epochs,
                               error=err)
    if t.early_stopping_min_epochs > t.epochs:
        raise ConfigError(f"train.early_stopping_min_epochs: expected at most train.epochs "
                          f"({t.epochs}), got {t.early_stopping_min_epochs}")
    checks.check_positive_number("train.learning_rate", t.learning_rate, error=err)
    if t.sparse_optimizer is not None:
        checks.check_choice("train.sparse_optimizer", t.sparse_optimizer, SPARSE_OPTIMIZERS,
                            error=err)
    if t.sparse_learning_rate is not None:
        checks.check_positive_number("train.sparse_learning_rate", t.sparse_learning_rate,
                                     error=err)
        if t.sparse_optimizer is None:
            raise ConfigError("train.sparse_learning_rate needs train.sparse_optimizer (without "
                              "it the tables train with the one optimizer at learning_rate)")
    checks.check_choice("train.lr_schedule", t.lr_schedule, LR_SCHEDULES, error=err)
    checks.check_nonneg_int("train.lr_warmup_steps", t.lr_warmup_steps, error=err)
    if t.lr_decay_steps is not None:
        checks.check_positive_int("train.lr_decay_steps", t.lr_decay_steps, error=err)
        if t.lr_schedule != "constant" and t.lr_decay_steps <= t.lr_warmup_steps:
            raise ConfigError(f"train.lr_decay_steps: expected more than lr_warmup_steps "
                              f"({t.lr_warmup_steps}), got {t.lr_decay_steps}")
    checks.check_unit_number("train.lr_floor", t.lr_floor, error=err)
    checks.check_choice("train.strategy", t.strategy, ("auto", "mirrored", "default"),
                        error=err)
    if t.jit_compile and (cfg.loss.name == "pwiser" or (
            cfg.loss.name == "kaml" and cfg.loss.args.get("gamma", 0.9) < 1.0)):
        raise ConfigError(f"train.jit_compile: loss {cfg.loss.name!r} gathers pairs with "
                          f"dynamic shapes, which XLA cannot compile; set jit_compile: false")
    mc = cfg.meta
    for key in ("steps", "tasks_per_replica", "support_size", "query_size", "max_rows",
                "log_every"):
        checks.check_positive_int(f"meta.{key}", getattr(mc, key), error=err)
    for key in ("inner_lr", "outer_lr"):
        checks.check_positive_number(f"meta.{key}", getattr(mc, key), error=err)
    checks.check_nonneg_int("meta.test_task_steps", mc.test_task_steps, error=err)
    a = cfg.adm
    checks.check_positive_int("adm.window_seconds", a.window_seconds, error=err)
    if not a.thresholds or any(not checks.is_int(x) or x < 1 for x in a.thresholds):
        raise ConfigError(f"adm.thresholds: expected integers >= 1, got "
                          f"{checks.short_repr(list(a.thresholds))}")
    actions = len(cfg.data.features.action_labels)
    if a.enabled and len(a.thresholds) not in (1, actions):
        raise ConfigError(f"adm.thresholds: expected 1 value or one per action ({actions}), "
                          f"got {list(a.thresholds)}")
    if a.enabled:
        f = cfg.data.features
        missing = [k for k in ("action_labels", "target_action", "ad_task", "timestamp")
                   if not getattr(f, k)]
        if missing:
            raise ConfigError(f"adm.enabled needs data.features.{missing[0]} (ADM counts an ad "
                              f"task's submitted conversions per action over time)")
    if m.hke and tuple(cfg.tasks) != ("ctr", tasks_lib.ACTIONS):
        raise ConfigError(f"model.hke needs model.tasks [ctr, actions], got {list(cfg.tasks)}")
    if tasks_lib.ACTIONS in cfg.tasks and not a.enabled:
        raise ConfigError("model.tasks [ctr, actions] needs adm.enabled: true (the ADM job "
                          "provides the target-action indicators the per-action heads are "
                          "trained and evaluated with)")
    if cfg.loss.name == "kaml" and tuple(cfg.tasks) != ("ctr", tasks_lib.ACTIONS):
        raise ConfigError(f"loss.name kaml trains per-action heads: set model.tasks to "
                          f"[ctr, actions], got {list(cfg.tasks)}")
    if m.hke and not a.enabled:
        raise ConfigError("model.hke trains extended sub-towers on ADM-extended samples: "
                          "set adm.enabled: true (HKE cannot be used without ADM, KAML 4.2.3)")
    e = cfg.eval
    heads = tasks_lib.head_names(cfg.tasks, cfg.funnel, actions)
    if e.head is not None and e.head not in heads:
        raise ConfigError(f"eval.head: expected one of the model's heads {heads}, got "
                          f"{checks.short_repr(e.head)}")
    checks.check_unit_number("eval.min_auc", e.min_auc, error=err)
    if e.max_auc_drop is not None:
        checks.check_unit_number("eval.max_auc_drop", e.max_auc_drop, error=err)
    sparse = [f.name for f in cfg.data.features.sparse]
    for i, key in enumerate(e.slices):
        checks.check_choice(f"eval.slices[{i}]", key, sparse, error=err)
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,127}", cfg.pipeline.name):
        raise ConfigError(f"pipeline.name: expected lowercase letters, digits and '-' "
                          f"(Kubeflow's rule), got {checks.short_repr(cfg.pipeline.name)}")


def _validate_data(d: DataConfig) -> None:
    err = ConfigError
    if d.path is None and d.adapter != "synthetic":
        raise ConfigError(f"data.path is required for adapter {d.adapter!r}")
    for key in ("eval_percent", "validation_percent"):
        checks.check_number(f"data.{key}", getattr(d, key), low=1, high=99, error=err)
    checks.check_positive_int("data.generate_rows", d.generate_rows, error=err)
    checks.check_seed("data.seed", d.seed, error=err)
    checks.check_positive_int("data.num_actions", d.num_actions, error=err)
    checks.check_choice("data.synthetic_mode", d.synthetic_mode, SYNTHETIC_MODES, error=err)
    checks.check_choice("data.extra_columns", d.extra_columns, ("ignore", "error"), error=err)
    f = d.features
    checks.check_positive_int("data.features.min_count", f.min_count, error=err)
    if not f.sparse and not f.dense:
        raise ConfigError("data.features: expected at least one sparse or dense column")
    if not d.labels:
        raise ConfigError("data.labels: expected at least one task: {task_name: column}")
    roles: Dict[str, str] = {}

    shareable = ("data.features.user", "data.features.ad_task")  # may also be sparse features

    def claim(column, role):
        if not isinstance(column, str) or not column:
            raise ConfigError(f"{role}: expected a column name, got {checks.short_repr(column)}")
        if column in roles and not (role in shareable and
                                    roles[column].startswith("data.features.sparse")):
            raise ConfigError(f"{role}: column {column!r} already has the role {roles[column]}")
        roles.setdefault(column, role)

    for i, feat in enumerate(f.sparse):
        where = f"data.features.sparse[{i}]"
        claim(feat.name, where)
        checks.check_choice(f"{where}.dtype", feat.dtype, SPARSE_DTYPES, error=err)
        if feat.min_count is not None:
            checks.check_positive_int(f"{where}.min_count", feat.min_count, error=err)
        checks.check_nonneg_int(f"{where}.hash_buckets", feat.hash_buckets, error=err)
    for i, name in enumerate(f.dense):
        claim(name, f"data.features.dense[{i}]")
    for task, column in d.labels.items():
        if not tasks_lib.VALID_TASK.fullmatch(task) or task in tasks_lib.RESERVED_TASKS:
            raise ConfigError(f"data.labels: task names are lowercase identifiers other than "
                              f"{sorted(tasks_lib.RESERVED_TASKS)}, got {checks.short_repr(task)}")
        claim(column, f"data.labels.{task}")
    for i, name in enumerate(f.action_labels):
        claim(name, f"data.features.action_labels[{i}]")
    if f.user is not None:
        claim(f.user, "data.features.user")
    for key in ("timestamp", "ad_task"):
        if getattr(f, key) is not None:
            claim(getattr(f, key), f"data.features.{key}")
    if f.target_action is not None:
        sparse = {s.name for s in f.sparse}
        if f.target_action not in sparse:
            raise ConfigError(f"data.features.target_action: expected one of the sparse "
                              f"features, got {checks.short_repr(f.target_action)}")


def from_dict(d: Mapping[str, Any]) -> ExperimentConfig:
    """Builds, resolves and validates an :class:`ExperimentConfig` from a plain dict."""
    if not isinstance(d, Mapping):
        raise _fail("config", "a mapping at top level", d)
    unknown = sorted(set(d) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"config: unknown section(s) {unknown}; expected some of "
                          f"{sorted(SECTIONS)}")
    kwargs: Dict[str, Any] = {}
    for key, value in d.items():
        if key == "name":
            kwargs["name"] = _parse(value, str, "name")
        else:
            kwargs[key] = _build(SECTIONS_CLASSES[key], {} if value is None else value, key)
    cfg = _resolve(ExperimentConfig(**kwargs))
    _validate(cfg)
    return cfg


SECTIONS_CLASSES = {
    "data": DataConfig, "adm": AdmConfig, "model": ModelConfig, "loss": LossConfig,
    "train": TrainConfig, "meta": MetaConfig, "eval": EvalConfig, "pipeline": PipelineConfig,
}


def to_dict(cfg: ExperimentConfig) -> Dict[str, Any]:
    """Plain JSON-able dict; ``from_dict(to_dict(c)) == c`` (a preset's roles are left out:
    the preset fills them again)."""
    out = json.loads(json.dumps(dataclasses.asdict(cfg)))
    if cfg.data.adapter in PRESETS:
        out["data"]["features"] = out["data"]["labels"] = None
    return out


# --------------------------------------------------------------------------- files
def shipped_configs_dir() -> Optional[str]:
    """The directory of the shipped configs: ``configs/`` of the source tree (editable
    installs) or the copy inside the installed package (``funnelrank/configs``)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for candidate in (os.path.join(here, "configs"),
                      os.path.join(here, "funnelrank", "configs")):
        if os.path.isdir(candidate):
            return candidate
    return None


def find(path: str) -> str:
    """``path`` as given when it exists, else a shipped config of that name
    (``configs/mmoe.yaml`` or ``mmoe.yaml`` or ``mmoe`` work from any directory)."""
    if os.path.exists(path):
        return path
    shipped = shipped_configs_dir()
    if shipped:
        name = os.path.basename(path)
        for candidate in (name, name + ".yaml"):
            full = os.path.join(shipped, candidate)
            if os.path.isfile(full):
                return full
    raise ConfigError(f"config file not found: {path} (also looked for a shipped config "
                      f"named {os.path.basename(path)!r} in {shipped or 'no shipped configs'})")


def _merge(base: Dict[str, Any], top: Mapping[str, Any]) -> Dict[str, Any]:
    """Section-wise merge: keys of ``top`` replace those of ``base`` inside each section."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) and \
                key in SECTIONS_CLASSES:
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _relative_paths(raw: Dict[str, Any], folder: str) -> Dict[str, Any]:
    """``data.path`` and ``pipeline.schema`` of a file, made relative to the file's folder."""
    out = dict(raw)
    for section, key in (("data", "path"), ("pipeline", "schema")):
        values = out.get(section)
        if isinstance(values, Mapping) and isinstance(values.get(key), str):
            value = values[key]
            if "://" not in value and not os.path.isabs(value):
                out[section] = {**values, key: os.path.normpath(os.path.join(folder, value))}
    return out


def _read(path: str, seen: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """Raw dict of a config file, with its ``base:`` file (relative to it) merged under it."""
    if os.path.abspath(path) in seen:
        raise ConfigError(f"{path}: 'base' chain loops: {' -> '.join(seen)}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML/JSON: {_one_line(e)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config file: {e}") from e
    if raw is None:  # an empty file, or comments only: not "every default" by accident
        raise ConfigError(f"{path}: the config file is empty; expected a mapping of sections "
                          f"(write {{}} for every default)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, got {type(raw).__name__}")
    raw = _relative_paths(raw, os.path.relpath(os.path.dirname(os.path.abspath(path))))
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: expected a file name, got {checks.short_repr(base)}")
    base_path = os.path.join(os.path.dirname(path), base)
    return _merge(_read(base_path, seen + (os.path.abspath(path),)), raw)


def parse_set(assignments: Sequence[str]) -> Dict[str, Any]:
    """``["train.epochs=3", "data.labels={ctr: click}"]`` -> ``{"train.epochs": 3, ...}``;
    values are YAML (``3`` is an int, ``[a, b]`` a list, ``null`` null, ``'3'`` a string)."""
    out: Dict[str, Any] = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key.strip()):
            raise ConfigError(f"--set: expected section.key=value, got {checks.short_repr(item)}")
        try:
            out[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}: the value is not valid YAML: "
                              f"{_one_line(e)}") from None
    return out


def _one_line(error: Exception) -> str:
    """A parser's message on one line (PyYAML's spans several, with a caret under the text):
    errors are one line on stderr."""
    return " ".join(str(error).split())


def apply_overrides(raw: Dict[str, Any], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """``{"section.key[.sub]": value}`` written into a raw config dict (a copy)."""
    out = json.loads(json.dumps(raw, default=list))
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {dotted}: {'.'.join(parts[:i + 1])} is not a mapping "
                                  f"in the config (it is {checks.short_repr(child)})")
            node = child
        node[parts[-1]] = value
    return out


def load(path: str, overrides: Optional[Mapping[str, Any]] = None) -> ExperimentConfig:
    """Reads a YAML/JSON experiment file; ``overrides`` maps ``section.key`` to a value.

    A file may name ``base: other.yaml`` (relative to itself): its sections are merged key by
    key over the base's. ``data.path`` and ``pipeline.schema`` given in a file are relative to
    that file; given as overrides, relative to the working directory. ``path`` may name a
    shipped config (``mmoe`` or ``configs/mmoe.yaml``) from any directory.
    """
    path = find(path)
    overrides = overrides or {}
    raw = apply_overrides(_read(path), overrides)
    try:
        return from_dict(raw)
    except ConfigError as e:
        # A value given as an override (--set, --epochs, ...) is named as such: the file
        # does not hold it.
        given = [f"{k}={checks.short_repr(v)}" for k, v in overrides.items()
                 if re.search(rf"(?<![\w.]){re.escape(k)}(?!\w)", str(e))]
        where = f"{path} (overridden: {', '.join(given)})" if given else path
        raise ConfigError(f"{where}: {e}") from None


def to_custom_config(cfg: ExperimentConfig, spec) -> Dict[str, Any]:
    """The JSON-able ``custom_config`` of the Transform and Trainer components: the experiment
    config and the dataset spec (``schemas.features.DatasetSpec``) of the prepared data."""
    from schemas import features

    return {EXPERIMENT_KEY: to_dict(cfg), SPEC_KEY: features.spec_to_dict(spec)}


def from_custom_config(custom_config: Mapping[str, Any]):
    """``(ExperimentConfig, DatasetSpec)`` back from :func:`to_custom_config`'s dict."""
    from schemas import features

    return (from_dict(custom_config[EXPERIMENT_KEY]),
            features.spec_from_dict(custom_config[SPEC_KEY]))


def sections() -> List[str]:
    return list(SECTIONS)
