"""The one source of feature names, used by the adapters, tf.Transform and the trainer.

A :class:`DatasetSpec` names a dataset's columns by role. ``transformed_name`` gives the key a
feature carries after tf.Transform (and after the in-process preprocessing of
``funnelrank train``), so both paths feed the model the same inputs.

Canonical label names: whatever a dataset calls them, the pipeline works with its
``click_key`` and ``conversion_key`` columns; ``conversion`` means conversion of the sample's
target action and implies ``click`` (post-click conversion funnel).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

TRANSFORMED_SUFFIX = "_xf"
GROUND_TRUTH_PREFIX = "gt_"
DEFAULT_NUM_ACTIONS = 5


def transformed_name(key: str) -> str:
    """Key of a feature after preprocessing (``click`` -> ``click_xf``)."""
    return key + TRANSFORMED_SUFFIX


ADM_COUNT, ADM_MASK, ADM_ORIGINAL = "adm_count", "adm_mask", "adm_original"


def adm_key(prefix: str, action: int) -> str:
    """Column the ADM job (``transform.adm``) adds for ``action``: ``adm_mask_3`` etc."""
    return f"{prefix}_{action}"


def action_head(action: int) -> str:
    """Name of the per-action conversion head: ``cvr_<action>`` (DESIGN.md)."""
    return f"cvr_{action}"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Columns of one dataset format, by role.

    Attributes:
      name: Adapter name (``synthetic``, ``ali_ccp``).
      sparse_keys: Integer/categorical id columns; each gets a vocabulary with OOV buckets.
      dense_keys: Float columns; z-score scaled.
      click_key: Click label column (0/1).
      conversion_key: Conversion label column (0/1), only ever 1 where click is 1.
      user_key: Column with the user id used by GAUC, or ``None``.
      action_label_keys: Per-conversion-action label columns (KAML), may be empty.
      passthrough_keys: Columns kept through preprocessing but never fed to the network
        (e.g. timestamp, target action for evaluation slices).
      timestamp_key: Column with the impression time (integer seconds, >= 0), or ``None``;
        list it in ``passthrough_keys`` (or another role) to make it a column.
      target_key: Column with the sample's target conversion action ``0..N-1`` (KAML), or
        ``None``.
      task_key: Column with the ad task id whose history ADM counts, or ``None``.
      adm_keys: Columns the ADM job added (``adm_mask_<j>``, ``adm_original_<j>``), passed
        through preprocessing to the trainer; empty unless ADM ran (:func:`with_adm`).

    ``integer_keys`` (derived): columns that must parse as integers (ids, labels, timestamps).
    """

    name: str
    sparse_keys: Tuple[str, ...]
    dense_keys: Tuple[str, ...]
    click_key: str = "click"
    conversion_key: str = "conversion"
    user_key: str | None = None
    action_label_keys: Tuple[str, ...] = ()
    passthrough_keys: Tuple[str, ...] = ()
    timestamp_key: str | None = None
    target_key: str | None = None
    task_key: str | None = None
    adm_keys: Tuple[str, ...] = ()

    @property
    def num_actions(self) -> int:
        return len(self.action_label_keys)

    @property
    def adm_mask_keys(self) -> Tuple[str, ...]:
        return tuple(adm_key(ADM_MASK, j) for j in range(self.num_actions)) \
            if self.adm_keys else ()

    @property
    def adm_original_keys(self) -> Tuple[str, ...]:
        return tuple(adm_key(ADM_ORIGINAL, j) for j in range(self.num_actions)) \
            if self.adm_keys else ()

    @property
    def label_keys(self) -> Tuple[str, ...]:
        return (self.click_key, self.conversion_key) + self.action_label_keys

    @property
    def feature_keys(self) -> Tuple[str, ...]:
        """Columns the network sees (before transformation)."""
        return self.sparse_keys + self.dense_keys

    @property
    def columns(self) -> Tuple[str, ...]:
        """Every column the pipeline reads, in canonical order (no ground truth)."""
        seen = []
        for key in self.label_keys + self.sparse_keys + self.dense_keys + self.passthrough_keys:
            if key not in seen:
                seen.append(key)
        return tuple(seen)

    @property
    def integer_keys(self) -> Tuple[str, ...]:
        return tuple(k for k in self.columns if k not in self.dense_keys)


def synthetic_spec(num_actions: int = DEFAULT_NUM_ACTIONS) -> DatasetSpec:
    """Columns of the embedded synthetic impression log (see ``transform.ingest.synthetic``)."""
    if num_actions < 1:
        raise ValueError(f"num_actions must be >= 1, got {num_actions!r}")
    return DatasetSpec(
        name="synthetic",
        sparse_keys=("user_id", "item_id", "category_id", "advertiser_id", "ad_task_id",
                     "target_action", "device", "hour", "user_segment"),
        dense_keys=("user_activity", "item_quality", "price", "ad_bid"),
        click_key="click",
        conversion_key="conversion",
        user_key="user_id",
        action_label_keys=tuple(f"conv_{j}" for j in range(num_actions)),
        passthrough_keys=("timestamp",),
        timestamp_key="timestamp",
        target_key="target_action",
        task_key="ad_task_id",
    )


def with_adm(spec: DatasetSpec) -> DatasetSpec:
    """``spec`` of the data after the ADM job: its masks and original indicators are features
    of the examples that preprocessing passes through (never network inputs).

    Raises:
      ValueError: The dataset has no target action, ad task, timestamp or action labels.
    """
    missing = [name for name, value in (("target_key", spec.target_key),
                                        ("task_key", spec.task_key),
                                        ("timestamp_key", spec.timestamp_key),
                                        ("action_label_keys", spec.action_label_keys))
               if not value]
    if missing:
        raise ValueError(f"ADM needs per-action labels, a target action, an ad task and a "
                         f"timestamp; dataset {spec.name!r} lacks {missing}")
    keys = tuple(adm_key(p, j) for p in (ADM_MASK, ADM_ORIGINAL)
                 for j in range(spec.num_actions))
    return dataclasses.replace(spec, adm_keys=keys)


ALI_CCP_SPARSE = ("101", "121", "122", "124", "125", "126", "127", "128", "129", "205", "206",
                  "207", "210", "216", "508", "509", "702", "853", "301", "109_14", "110_14",
                  "127_14", "150_14")
ALI_CCP_DENSE = ("D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702", "D853")


def ali_ccp_spec() -> DatasetSpec:
    """Ali-CCP as preprocessed CSV (torch-rechub / AITM format): click, purchase, 23 + 8 fields."""
    return DatasetSpec(
        name="ali_ccp",
        sparse_keys=ALI_CCP_SPARSE,
        dense_keys=ALI_CCP_DENSE,
        click_key="click",
        conversion_key="purchase",
        user_key="101",
    )


def spec_to_dict(spec: DatasetSpec) -> Dict:
    """JSON-able form (travels through TFX custom_config)."""
    return dataclasses.asdict(spec)


def spec_from_dict(d: Dict) -> DatasetSpec:
    return DatasetSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
