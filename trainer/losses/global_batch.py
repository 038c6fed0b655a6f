"""Batch-level losses over the GLOBAL batch under a distribution strategy.

A loss that pairs rows (PWiseR, KAML's RLU ranking) or normalises by a batch-level count
(KAML's masked BCE, eq. 12) changes meaning when each replica only sees its own slice of the
batch: with 2 replicas PWiseR would rank a positive only against half of the negatives, and
InfoNCE (AdaFTR eq. 6) would draw half of the in-batch negatives. The losses here therefore
work on the rows of every replica, gathered with ``ReplicaContext.all_gather`` (differentiable:
the gradient of a gathered slice is summed over the replicas and routed back to the replica
that owns it).

Convention, the one every training loop of the project uses (``model.fit`` with compiled
losses and ``FunnelModel.train_step`` alike): each replica's loss is divided by the number of
replicas and the gradients are summed over replicas. A batch-level loss that returns the
global batch's value on EVERY replica then gets exactly the gradient of that value: each
replica's slice receives ``num_replicas * dL/dslice`` through ``all_gather``'s gradient, times
``1 / num_replicas``. So 1 and N replicas give the same loss and the same update for the same
global batch (tested with 2 logical CPU replicas).

Outside a replica context with more than one replica (no strategy, one device, or cross-replica
code) nothing is gathered, nor inside :func:`replica_local` (replicas that train on batches of
their own, such as MAML's per-replica partitions in ``trainer/meta.py``).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional, Tuple

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


def gather_rows(*tensors: tf.Tensor) -> Tuple[tf.Tensor, ...]:
    """Each tensor's rows of every replica, concatenated in replica order (axis 0).

    Replicas may hold different numbers of rows (a final partial batch), none included.
    Without peers the tensors come back unchanged.
    """
    ctx = peer_context()
    tensors = tuple(tf.convert_to_tensor(t) for t in tensors)
    if ctx is None:
        return tensors
    gathered = []
    for t in tensors:
        g = ctx.all_gather(t, axis=0)
        g.set_shape(tf.TensorShape([None]).concatenate(t.shape[1:]))  # the gather loses it
        gathered.append(g)
    return tuple(gathered)


def row_offset(rows: tf.Tensor) -> tf.Tensor:
    """Index of this replica's first row in :func:`gather_rows`' order (0 without peers).

    Args:
      rows: Number of rows this replica holds (int32 scalar).
    """
    rows = tf.reshape(tf.cast(rows, tf.int32), [1])
    ctx = peer_context()
    if ctx is None:
        return tf.zeros([], tf.int32)
    sizes = ctx.all_gather(rows, axis=0)
    replica = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    return tf.reduce_sum(sizes[:replica])


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
