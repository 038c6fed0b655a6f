"""Distribution strategy: none on one device, MirroredStrategy over several, multi-worker when
TF_CONFIG says so."""
from __future__ import annotations

import json
import logging
import os

import tensorflow as tf

log = logging.getLogger(__name__)


_STRATEGIES: dict = {}


def make_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """The distribution strategy of a run (``train.strategy``).

    ``auto``: MultiWorkerMirroredStrategy when TF_CONFIG names several workers; else
    MirroredStrategy over 2+ GPUs, or over 2+ logical CPU devices without a GPU; on a single
    device no strategy at all (TF's default strategy): MirroredStrategy over one device costs
    up to 28% of the step and buys nothing (measured, docs/benchmarks.md). ``mirrored``:
    MirroredStrategy even over one device. ``default``: TF's default strategy.

    ``MirroredStrategy()`` without ``devices`` ignores CPUs, so on CPU the devices are passed
    explicitly (logical CPU devices must be configured before TF initialises; see
    ``funnelrank.cli`` and ``tests/conftest.py``). One strategy per device set is created per
    process and then reused.
    """
    if kind == "default":
        return tf.distribute.get_strategy()
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    if len(tf_config.get("cluster", {}).get("worker", [])) > 1:
        # Before anything lists devices: that starts TF's runtime, after which collective
        # ops can no longer be configured ("must be configured at program startup").
        key = ("multi-worker", json.dumps(tf_config, sort_keys=True))
        if key not in _STRATEGIES:
            _STRATEGIES[key] = tf.distribute.MultiWorkerMirroredStrategy()
            log.info("strategy MultiWorkerMirroredStrategy with %d replica(s)",
                     _STRATEGIES[key].num_replicas_in_sync)
        return _STRATEGIES[key]
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    if gpus and (len(gpus) > 1 or kind == "mirrored"):
        key = ("gpu",) + tuple(gpus)
        factory = lambda: tf.distribute.MirroredStrategy(devices=gpus)  # noqa: E731
    elif not gpus and (len(cpus) > 1 or kind == "mirrored"):
        key = ("cpu",) + tuple(cpus)
        # Reduce on one device instead of collective ops: in-process collectives keep their
        # parameters per instance key in the runtime, and a second model trained in the same
        # process then aborts with "Shape mismatch in the collective instance".
        factory = lambda: tf.distribute.MirroredStrategy(  # noqa: E731
            devices=cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    else:
        log.info("one device (%s): training without a distribution strategy",
                 (gpus or cpus)[0])
        return tf.distribute.get_strategy()
    if key in _STRATEGIES:
        return _STRATEGIES[key]
    strategy = _STRATEGIES[key] = factory()
    log.info("strategy %s with %d replica(s)", type(strategy).__name__,
             strategy.num_replicas_in_sync)
    return strategy


def configure_threads(intra_op: int, inter_op: int) -> bool:
    """Sets TensorFlow's intra-op and inter-op thread pools (``train.intra_op_threads``,
    ``train.inter_op_threads``; 0 is TF's default) for this process.

    They can only change before TF's runtime starts (the first op or device listing); a
    process where it already started (a test worker, a LocalDagRunner that ran Transform in
    the same process) keeps the pools it has, with a warning that names both settings.

    Returns:
      Whether the process now runs with the requested pools.
    """
    threading = tf.config.threading
    current = (threading.get_intra_op_parallelism_threads(),
               threading.get_inter_op_parallelism_threads())
    if current == (intra_op, inter_op):
        return True
    try:
        threading.set_intra_op_parallelism_threads(intra_op)
        threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError as e:
        log.warning("train.intra_op_threads=%d, inter_op_threads=%d not applied: TensorFlow's "
                    "runtime already started in this process (%s); it keeps %d and %d "
                    "(0: one per core)", intra_op, inter_op, e, *current)
        return False
    log.info("TensorFlow threads: intra-op %d, inter-op %d (0: one per core)", intra_op,
             inter_op)
    return True


def configure_cpu_replicas(count: int) -> None:
    """Splits the CPU into ``count`` logical devices; call before TF initialises its runtime."""
    if count < 2:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError as e:  # runtime already initialised: say so, keep one replica
        log.warning("could not split the CPU into %d replicas (%s); training on one", count, e)
