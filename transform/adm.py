"""Attribution Driven Masking (KAML Sec. 3.2): per-sample conversion history of its ad task.

For sample ``i`` with ad task ``e_i``, time ``t_i`` and target action ``o_i``:

    c_i^j      = #{rows r of ad task e_i : t_i - T <= t_r < t_i and y_r^j = 1}
    Mask_ij    = 1[o_i == j] OR 1[c_i^j >= alpha_j]          (KAML eq. 6 and 8, DESIGN.md)
    Original_ij = 1[o_i == j]                                  (HKE's indicator M, eq. 10)

i.e. the action-j conversions the ad task submitted within the window ``T`` STRICTLY before the
sample's time (rows at the same second do not count: no label of the sample itself, nor of
its contemporaries, leaks into its mask). The log carries one time per impression, so a
conversion is dated at its impression.

Three implementations with the same semantics:

* :func:`reference` - a plain double loop (the test oracle);
* :func:`numpy_adm` - vectorised (sort + prefix sums + binary search), used by
  ``funnelrank train`` and the benchmarks;
* :class:`ComputeAdm` - an Apache Beam ``PTransform`` (group by ad task, sort, one sliding
  window pass per task) that the TFX pipeline runs on DirectRunner, Dataflow, Flink or Spark.
  Memory per key is the ad task's rows (an ad task's history must fit one worker).

Output columns: ``adm_count_<j>``, ``adm_mask_<j>``, ``adm_original_<j>`` (int64).
"""
from __future__ import annotations

import dataclasses
from typing import (TYPE_CHECKING, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence,
                    Tuple)

import numpy as np

from schemas import features
from schemas.features import ADM_COUNT as COUNT
from schemas.features import ADM_MASK as MASK
from schemas.features import ADM_ORIGINAL as ORIGINAL
from schemas.features import adm_key as column

if TYPE_CHECKING:
    import pandas as pd


@dataclasses.dataclass(frozen=True)
class AdmParams:
    """What ADM needs to know.

    Attributes:
      window_seconds: T, the history window in seconds (> 0).
      thresholds: alpha_j per action (>= 1): the conversions an ad task must have submitted in
        the window for its samples to train action j's tower.
      task_key, timestamp_key, target_key: Columns of the ad task id, the impression time
        (integer seconds) and the target action (0..N-1).
      action_keys: Per-action label columns, in action order.
    """

    window_seconds: int
    thresholds: Tuple[int, ...]
    task_key: str = "ad_task_id"
    timestamp_key: str = "timestamp"
    target_key: str = "target_action"
    action_keys: Tuple[str, ...] = ()

    def __post_init__(self):
        if isinstance(self.window_seconds, bool) or not isinstance(self.window_seconds, int) \
                or self.window_seconds < 1:
            raise ValueError(f"ADM window must be a positive number of seconds, received: "
                             f"window_seconds={self.window_seconds!r}")
        if len(self.thresholds) != len(self.action_keys) or any(
                isinstance(a, bool) or not isinstance(a, int) or a < 1 for a in self.thresholds):
            raise ValueError(f"ADM needs one integer threshold >= 1 per action "
                             f"({len(self.action_keys)}), received: thresholds="
                             f"{list(self.thresholds)!r}")

    @property
    def num_actions(self) -> int:
        return len(self.action_keys)

    @classmethod
    def for_spec(cls, spec, window_seconds: int, thresholds) -> "AdmParams":
        """Params for a dataset spec; ``thresholds`` is one int or one per action."""
        thresholds = ([thresholds] * spec.num_actions if isinstance(thresholds, int)
                      else list(thresholds))
        return cls(window_seconds=window_seconds, thresholds=tuple(thresholds),
                   task_key=spec.task_key, timestamp_key=spec.timestamp_key,
                   target_key=spec.target_key, action_keys=tuple(spec.action_label_keys))

    def to_dict(self) -> Dict:
        return {**dataclasses.asdict(self), "thresholds": list(self.thresholds),
                "action_keys": list(self.action_keys)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "AdmParams":
        return cls(**{**d, "thresholds": tuple(d["thresholds"]),
                      "action_keys": tuple(d["action_keys"])})


def configure(adm_cfg, spec) -> Tuple[object, Optional[AdmParams]]:
    """``(spec, params)`` of a run: the spec with the ADM columns and the job's parameters when
    ``adm.enabled``, else ``(spec, None)``. The one place both training paths configure ADM.

    Raises:
      ValueError: ADM is enabled but the data lacks the roles it needs (naming them).
    """
    if not adm_cfg.enabled:
        return spec, None
    thresholds = adm_cfg.thresholds
    params = AdmParams.for_spec(spec, adm_cfg.window_seconds,
                                thresholds[0] if len(thresholds) == 1 else thresholds)
    return features.with_adm(spec), params


def _masks(counts: np.ndarray, targets: np.ndarray, params: AdmParams):
    actions = np.arange(params.num_actions)
    original = (np.asarray(targets).reshape(-1, 1) == actions).astype(np.int64)
    mask = (original.astype(bool) | (counts >= np.asarray(params.thresholds))).astype(np.int64)
    return mask, original


def reference(rows: Sequence[Mapping], params: AdmParams) -> List[Dict[str, int]]:
    """The ADM columns of every row by a direct double loop (O(n^2) per task; tests only)."""
    out = []
    for row in rows:
        t, task = row[params.timestamp_key], row[params.task_key]
        counts = [0] * params.num_actions
        for other in rows:
            if other[params.task_key] == task and \
                    t - params.window_seconds <= other[params.timestamp_key] < t:
                for j, key in enumerate(params.action_keys):
                    counts[j] += int(other[key] == 1)
        entry = {}
        for j in range(params.num_actions):
            original = int(row[params.target_key] == j)
            entry[column(COUNT, j)] = counts[j]
            entry[column(ORIGINAL, j)] = original
            entry[column(MASK, j)] = int(original or counts[j] >= params.thresholds[j])
        out.append(entry)
    return out


def numpy_adm(columns: Mapping[str, np.ndarray], params: AdmParams) -> Dict[str, np.ndarray]:
    """Vectorised ADM over in-memory columns (any row order).

    Rows are sorted by (ad task, time); per action a prefix sum of conversions gives
    ``c = P[first row >= t] - P[first row >= t - T]`` within the task, both found by binary
    search on the composite (task rank, time) key. O(n log n).

    Returns:
      ``adm_count_<j>``, ``adm_mask_<j>``, ``adm_original_<j>`` -> ``[n]`` int64, in the input
      row order.
    """
    tasks = np.asarray(columns[params.task_key]).reshape(-1)
    times = np.asarray(columns[params.timestamp_key], dtype=np.int64).reshape(-1)
    n = len(times)
    _, task_rank = np.unique(tasks, return_inverse=True)
    offset = times.min() if n else 0
    span = int(times.max() - offset) + params.window_seconds + 1 if n else 1
    key = task_rank.astype(np.int64) * span + (times - offset)
    order = np.argsort(key, kind="mergesort")
    sorted_key = key[order]
    # Window [t - T, t) of the row's own task: its lower edge never leaves the task's key range
    # because the task's keys start at task_rank * span >= key - (t - offset) and t - T may be
    # below that only by less than span.
    task_base = task_rank.astype(np.int64) * span
    lo_key = np.maximum(key - params.window_seconds, task_base)
    hi = np.searchsorted(sorted_key, key, side="left")
    lo = np.searchsorted(sorted_key, lo_key, side="left")
    counts = np.zeros((n, params.num_actions), dtype=np.int64)
    for j, name in enumerate(params.action_keys):
        converted = (np.asarray(columns[name]).reshape(-1)[order] == 1).astype(np.int64)
        prefix = np.concatenate([[0], np.cumsum(converted)])
        counts[:, j] = prefix[hi] - prefix[lo]
    mask, original = _masks(counts, columns[params.target_key], params)
    out = {}
    for j in range(params.num_actions):
        out[column(COUNT, j)] = counts[:, j]
        out[column(MASK, j)] = mask[:, j]
        out[column(ORIGINAL, j)] = original[:, j]
    return out


def add_to_frames(frames: Mapping[str, "pd.DataFrame"], params: AdmParams) -> Dict:
    """In-process ADM for ``funnelrank train``: the splits' frames with the ADM columns, each
    row's history taken from ALL splits (as the pipeline component does)."""
    import pandas as pd

    names = list(frames)
    whole = pd.concat([frames[n] for n in names], ignore_index=True)
    added = numpy_adm({k: whole[k].to_numpy() for k in whole.columns}, params)
    out, start = {}, 0
    for name in names:
        stop = start + len(frames[name])
        extra = pd.DataFrame({k: v[start:stop] for k, v in added.items()},
                             index=frames[name].index)
        out[name] = pd.concat([frames[name], extra], axis=1)
        start = stop
    return out


def annotate_task(rows: Iterable[Dict], params: AdmParams) -> Iterator[Dict]:
    """One ad task's rows -> the same rows with the ADM columns added (any input order).

    A single pass over the time-sorted rows with two pointers: ``lo`` (first row inside the
    window) and ``hi`` (first row not strictly before the current time), keeping the running
    per-action conversion counts of the rows in between. O(n log n) for the sort, O(n) after.
    """
    rows = sorted(rows, key=lambda r: r[params.timestamp_key])
    times = [r[params.timestamp_key] for r in rows]
    keys = params.action_keys
    running = [0] * len(keys)
    lo = hi = 0
    for row in rows:
        t = row[params.timestamp_key]
        while hi < len(rows) and times[hi] < t:
            for j, key in enumerate(keys):
                running[j] += int(rows[hi][key] == 1)
            hi += 1
        while lo < hi and times[lo] < t - params.window_seconds:
            for j, key in enumerate(keys):
                running[j] -= int(rows[lo][key] == 1)
            lo += 1
        out = dict(row)
        for j in range(len(keys)):
            original = int(row[params.target_key] == j)
            out[column(COUNT, j)] = running[j]
            out[column(ORIGINAL, j)] = original
            out[column(MASK, j)] = int(original or running[j] >= params.thresholds[j])
        yield out


def _beam_transform():
    """Builds the PTransform class lazily so importing this module does not import Beam."""
    import apache_beam as beam

    class ComputeAdmTransform(beam.PTransform):
        """``PCollection[dict]`` -> the same rows with the ADM columns (see module docstring).

        Groups by ad task (``beam.GroupByKey``), then :func:`annotate_task` per task; works
        unchanged on every Beam runner.
        """

        def __init__(self, params: AdmParams):
            super().__init__()
            self.params = params

        def expand(self, rows):
            params = self.params
            return (rows
                    | "KeyByAdTask" >> beam.Map(lambda r: (r[params.task_key], r))
                    | "GroupByAdTask" >> beam.GroupByKey()
                    | "SlidingWindowCounts" >> beam.FlatMap(
                        lambda kv: annotate_task(kv[1], params)))

    return ComputeAdmTransform


def ComputeAdm(params: AdmParams):  # noqa: N802  (a PTransform factory, named like one)
    """The Beam ``PTransform`` computing ADM columns for a ``PCollection`` of row dicts."""
    return _beam_transform()(params)
