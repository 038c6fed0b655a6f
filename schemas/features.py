"""The one source of feature names, used by the ingest, tf.Transform and the trainer.

A :class:`DatasetSpec` names a dataset's columns by role; it is derived from the config
(:func:`spec_from_config`), completed when the data is prepared (the type of each sparse
column, which features may be missing) and then travels, as JSON, to Transform, the Trainer
and the serving export. ``transformed_name`` gives the key a column carries after
preprocessing (tf.Transform, or ``transform.preprocessor`` in ``funnelrank train``), so both
paths feed the model the same inputs.

Labels: ``label_keys`` maps each task to its 0/1 column. With a funnel recipe the tasks
``ctr`` and ``cvr`` are click and conversion, and conversion implies click
(:attr:`DatasetSpec.funnel`).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Optional, Tuple

from schemas.tasks import CTR, CVR, action_head  # noqa: F401 (action_head re-exported)

TRANSFORMED_SUFFIX = "_xf"
GROUND_TRUTH_PREFIX = "gt_"
MISSING_TEXT = ""  # the text of a missing categorical value: its own vocabulary entry
INT, STRING = "int", "string"


def transformed_name(key: str) -> str:
    """Key of a feature after preprocessing (``click`` -> ``click_xf``)."""
    return key + TRANSFORMED_SUFFIX


ADM_COUNT, ADM_MASK, ADM_ORIGINAL = "adm_count", "adm_mask", "adm_original"


def adm_key(prefix: str, action: int) -> str:
    """Column the ADM job (``transform.adm``) adds for ``action``: ``adm_mask_3`` etc."""
    return f"{prefix}_{action}"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Columns of one dataset, by role.

    Attributes:
      name: Adapter or preset name (``csv``, ``synthetic``, ``ali_ccp`` ...).
      sparse_keys: Categorical columns; each gets a vocabulary with an OOV bucket.
      dense_keys: Numeric columns; z-score scaled, missing values filled with the mean.
      label_keys: Task -> its 0/1 label column, in task order.
      funnel: The labels form the click -> conversion funnel (tasks ``ctr`` and ``cvr``, a
        conversion implies a click; per-action labels too).
      user_key: Column with the user id used by GAUC, or ``None``.
      action_label_keys: Per-conversion-action label columns (KAML), may be empty.
      timestamp_key: Column with the impression time (integer seconds >= 0), or ``None``.
      target_key: Sparse column with the sample's target conversion action ``0..N-1``
        (KAML), or ``None``.
      task_key: Column with the ad task id whose history ADM counts, or ``None``.
      adm_keys: Columns the ADM job added (``adm_mask_<j>``, ``adm_original_<j>``), passed
        through preprocessing to the trainer; empty unless ADM ran (:func:`with_adm`).
      sparse_dtypes: Sparse column -> ``int``, ``string`` or ``auto`` (decided from the data
        when it is prepared: ``int`` when every value is an integer).
      optional_keys: Features that may be missing (the data had empty cells in them): a
        serving request may leave them out.
      min_counts: Sparse column -> vocabulary minimum count (rarer values go to OOV).
      hash_buckets: Sparse column -> hash buckets replacing its vocabulary (absent: none).
    """

    name: str
    sparse_keys: Tuple[str, ...]
    dense_keys: Tuple[str, ...]
    label_keys: Mapping[str, str] = dataclasses.field(default_factory=dict)
    funnel: bool = False
    user_key: Optional[str] = None
    action_label_keys: Tuple[str, ...] = ()
    timestamp_key: Optional[str] = None
    target_key: Optional[str] = None
    task_key: Optional[str] = None
    adm_keys: Tuple[str, ...] = ()
    sparse_dtypes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    optional_keys: Tuple[str, ...] = ()
    min_counts: Mapping[str, int] = dataclasses.field(default_factory=dict)
    hash_buckets: Mapping[str, int] = dataclasses.field(default_factory=dict)

    @property
    def num_actions(self) -> int:
        return len(self.action_label_keys)

    @property
    def click_key(self) -> str:
        """The funnel's click column (the ``ctr`` label)."""
        return self.label_keys[CTR]

    @property
    def conversion_key(self) -> str:
        """The funnel's conversion column (the ``cvr`` label)."""
        return self.label_keys[CVR]

    @property
    def adm_mask_keys(self) -> Tuple[str, ...]:
        return tuple(adm_key(ADM_MASK, j) for j in range(self.num_actions)) \
            if self.adm_keys else ()

    @property
    def adm_original_keys(self) -> Tuple[str, ...]:
        return tuple(adm_key(ADM_ORIGINAL, j) for j in range(self.num_actions)) \
            if self.adm_keys else ()

    @property
    def label_columns(self) -> Tuple[str, ...]:
        """Every 0/1 label column: the tasks' then the per-action ones."""
        return tuple(self.label_keys.values()) + self.action_label_keys

    @property
    def feature_keys(self) -> Tuple[str, ...]:
        """Columns the network sees (before transformation)."""
        return self.sparse_keys + self.dense_keys

    @property
    def id_keys(self) -> Tuple[str, ...]:
        """Columns mapped to vocabulary ids: the sparse features and the user (GAUC)."""
        extra = (self.user_key,) if self.user_key and self.user_key not in self.sparse_keys \
            else ()
        return self.sparse_keys + extra

    @property
    def passthrough_keys(self) -> Tuple[str, ...]:
        """Columns read for other roles (time, ad task): kept, never network inputs."""
        return tuple(k for k in (self.timestamp_key, self.task_key)
                     if k and k not in self.id_keys)

    @property
    def columns(self) -> Tuple[str, ...]:
        """Every column the pipeline reads, in canonical order (no ground truth)."""
        seen = []
        for key in self.label_columns + self.id_keys + self.dense_keys + self.passthrough_keys:
            if key not in seen:
                seen.append(key)
        return tuple(seen)

    @property
    def integer_keys(self) -> Tuple[str, ...]:
        """Columns that must hold integers: labels, the timestamp and ``int`` sparse ids."""
        ints = set(self.label_columns)
        ints.update(k for k in (self.timestamp_key, self.target_key) if k)
        ints.update(k for k, d in self.sparse_dtypes.items() if d == INT)
        if self.task_key and self.task_key not in self.id_keys:
            ints.add(self.task_key)
        return tuple(k for k in self.columns if k in ints)

    def dtype(self, key: str) -> str:
        """``int``, ``string`` or ``float`` of a column (``auto`` before preparation)."""
        if key in self.dense_keys:
            return "float"
        if key in self.sparse_dtypes:
            return self.sparse_dtypes[key]
        if key in self.id_keys:
            return "auto"
        return INT


def spec_from_config(data_cfg, funnel: bool) -> DatasetSpec:
    """The spec of a (resolved) ``schemas.config.DataConfig``; sparse dtypes stay ``auto``
    where the config leaves them so until the data is prepared."""
    f = data_cfg.features
    sparse = tuple(s.name for s in f.sparse)
    return DatasetSpec(
        name=data_cfg.adapter,
        sparse_keys=sparse,
        dense_keys=tuple(f.dense),
        label_keys=dict(data_cfg.labels),
        funnel=funnel,
        user_key=f.user,
        action_label_keys=tuple(f.action_labels),
        timestamp_key=f.timestamp,
        target_key=f.target_action,
        task_key=f.ad_task,
        sparse_dtypes={s.name: s.dtype for s in f.sparse},
        min_counts={s.name: s.min_count or f.min_count for s in f.sparse
                    if (s.min_count or f.min_count) > 1},
        hash_buckets={s.name: s.hash_buckets for s in f.sparse if s.hash_buckets},
    )


def with_adm(spec: DatasetSpec) -> DatasetSpec:
    """``spec`` of the data after the ADM job: its masks and original indicators are features
    of the examples that preprocessing passes through (never network inputs).

    Raises:
      ValueError: The dataset has no target action, ad task, timestamp or action labels.
    """
    missing = [name for name, value in (("target_action", spec.target_key),
                                        ("ad_task", spec.task_key),
                                        ("timestamp", spec.timestamp_key),
                                        ("action_labels", spec.action_label_keys))
               if not value]
    if missing:
        raise ValueError(f"ADM needs per-action labels, a target action, an ad task and a "
                         f"timestamp; dataset {spec.name!r} lacks data.features.{missing[0]}")
    keys = tuple(adm_key(p, j) for p in (ADM_MASK, ADM_ORIGINAL)
                 for j in range(spec.num_actions))
    return dataclasses.replace(spec, adm_keys=keys)


def spec_to_dict(spec: DatasetSpec) -> Dict:
    """JSON-able form (travels through TFX custom_config and ``preprocessor.json``)."""
    return dataclasses.asdict(spec)


def spec_from_dict(d: Mapping) -> DatasetSpec:
    fields = {f.name for f in dataclasses.fields(DatasetSpec)}
    return DatasetSpec(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in d.items() if k in fields})
