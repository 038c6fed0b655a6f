"""Batch-level losses over the GLOBAL batch under a distribution strategy.

A loss that pairs rows (PWiseR, KAML's RLU ranking) or normalises by a batch-level count
(KAML's masked BCE, eq. 12) changes meaning when each replica only sees its own slice of the
batch: with 2 replicas PWiseR would rank a positive only against half of the negatives, and
InfoNCE (AdaFTR eq. 6) would draw half of the in-batch negatives. The losses here therefore
work on the rows of every replica, gathered with ``ReplicaContext.all_reduce`` (each replica
places its rows in a zero matrix of the global batch; differentiable: the gradient of a
gathered slice is summed over the replicas and routed back to the replica that owns it).

Convention, the one every training loop of the project uses (``model.fit`` with compiled
losses and ``FunnelModel.train_step`` alike): each replica's loss is divided by the number of
replicas and the gradients are summed over replicas. A batch-level loss that returns the
global batch's value on EVERY replica then gets exactly the gradient of that value: each
replica's slice receives ``num_replicas * dL/dslice`` through the gather's gradient, times
``1 / num_replicas``. So 1 and N replicas give the same loss and the same update for the same
global batch (tested with 2 logical CPU replicas).

Outside a replica context with more than one replica (no strategy, one device, or cross-replica
code) nothing is gathered, nor inside :func:`replica_local` (replicas that train on batches of
their own, such as MAML's per-replica partitions in ``trainer/meta.py``).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional, Sequence, Tuple

import tensorflow as tf

from schemas.checks import short_repr

_LOCAL = threading.local()


@contextlib.contextmanager
def replica_local() -> Iterator[None]:
    """Within it, batch-level losses use the calling replica's rows only (nothing gathered).

    For replicas whose batches are separate tasks rather than slices of one global batch
    (MAML's partitions). Enter it inside the replica function: MirroredStrategy runs each
    replica in its own thread, and the setting is per thread.
    """
    depth = getattr(_LOCAL, "depth", 0)
    _LOCAL.depth = depth + 1
    try:
        yield
    finally:
        _LOCAL.depth = depth


def peer_context() -> Optional[tf.distribute.ReplicaContext]:
    """The replica context when it has peers (``num_replicas_in_sync > 1``) and rows are to be
    gathered (not inside :func:`replica_local`), else None."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1 or getattr(_LOCAL, "depth", 0):
        return None
    return ctx


def _pack(tensors: Sequence[tf.Tensor]) -> Tuple[tf.Tensor, list]:
    """One ``[b, W]`` float matrix of the tensors' rows (float64 if any is float64)."""
    dtype = tf.float64 if any(t.dtype == tf.float64 for t in tensors) else tf.float32
    columns, layout = [], []
    for t in tensors:
        inner = t.shape[1:]
        if not inner.is_fully_defined():
            raise ValueError(f"gather_rows needs static non-batch dimensions, received: "
                             f"shape={t.shape}")
        width = inner.num_elements()
        columns.append(tf.reshape(tf.cast(t, dtype), [-1, width]))
        layout.append((t.dtype, inner, width))
    return tf.concat(columns, axis=1), layout


def _unpack(matrix: tf.Tensor, layout: list) -> Tuple[tf.Tensor, ...]:
    out, start = [], 0
    for dtype, inner, width in layout:
        part = tf.reshape(matrix[:, start:start + width], [-1] + inner.as_list())
        if dtype == tf.bool:
            part = part > 0.5
        elif dtype.is_integer:
            part = tf.cast(tf.round(part), dtype)
        else:
            part = tf.cast(part, dtype)
        out.append(part)
        start += width
    return tuple(out)


def gather_rows(*tensors) -> Tuple[tf.Tensor, ...]:
    """Each tensor's rows of every replica, concatenated in replica order (axis 0).

    All tensors must have the same number of rows and static non-batch dimensions; their values
    travel as one float matrix (float64 if any is float64, else float32), so integer and bool
    tensors must hold values that float represents exactly (labels, masks). Replicas may hold
    different numbers of rows (a final partial batch), none included. Two collectives forward
    (the row counts, then the rows) and one backward, whatever the number of tensors. Without
    peers the tensors come back unchanged.
    """
    tensors = tuple(tf.convert_to_tensor(t) for t in tensors)
    ctx = peer_context()
    if ctx is None:
        return tensors
    rows = tf.shape(tensors[0])[0]
    replica = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    sizes = ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                           tf.one_hot(replica, ctx.num_replicas_in_sync, dtype=tf.int32) * rows)
    offset = tf.reduce_sum(sizes[:replica])  # this replica's first row in the gathered order
    total = tf.reduce_sum(sizes)
    packed, layout = _pack(tensors)
    # Each replica's rows at their place in a zero matrix of the global batch; the summed
    # matrices are the gathered rows. ``all_reduce``'s gradient is the all-reduced upstream
    # gradient, so each replica's slice gets every replica's gradient of its rows.
    placed = tf.pad(packed, [[offset, total - offset - rows], [0, 0]])
    return _unpack(ctx.all_reduce(tf.distribute.ReduceOp.SUM, placed), layout)


def num_replicas() -> int:
    """Replicas in sync of the current strategy (1 without one)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


BATCH_REDUCTIONS = ("auto", "sum_over_batch_size")


class BatchLevelLoss(tf.keras.losses.Loss):
    """Base of the losses whose value is one scalar of the whole global batch.

    ``__call__`` gathers ``y_true`` and ``y_pred`` over the replicas (:func:`gather_rows`) and
    hands the global batch to ``call``, which returns the scalar. ``sample_weight`` is refused
    (the value is not a mean of per-row terms). ``reduction`` is kept for the Keras API and
    config, and must be ``auto`` or ``sum_over_batch_size``: those are the reductions for which
    ``model.fit`` divides a compiled loss by the number of replicas, which is what makes the
    gathered value's gradient exact (see the module docstring); ``sum`` or ``none`` would
    multiply the update by the replica count.

    Args:
      reduction: ``"auto"`` or ``"sum_over_batch_size"`` (no effect on the value).
      name: Loss name.
    """

    def __init__(self, reduction=tf.keras.losses.Reduction.AUTO, name=None):
        if reduction not in BATCH_REDUCTIONS:
            raise ValueError(f"`reduction` must be one of {list(BATCH_REDUCTIONS)} for the "
                             f"batch-level loss {type(self).__name__} (its value is the global "
                             f"batch's, which model.fit divides by the replica count for these "
                             f"two only), received: reduction={reduction!r}")
        super().__init__(reduction=reduction, name=name)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(f"{type(self).__name__} is a batch-level loss and takes no "
                             f"sample_weight, received: sample_weight={short_repr(sample_weight)}")
        with tf.name_scope(self._name_scope):
            y_true, y_pred = gather_rows(y_true, y_pred)
            return self.call(y_true, y_pred)
