"""Distribution strategy: MirroredStrategy always, multi-worker when TF_CONFIG says so."""
from __future__ import annotations

import json
import logging
import os

import tensorflow as tf

log = logging.getLogger(__name__)


_STRATEGIES: dict = {}


def make_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy if TF_CONFIG names several workers, else MirroredStrategy
    over all GPUs, or over every logical CPU device when there is no GPU.

    ``MirroredStrategy()`` without ``devices`` ignores CPUs, so on CPU the devices are passed
    explicitly (logical CPU devices must be configured before TF initialises; see
    ``funnelrank.cli`` and ``tests/conftest.py``).

    One strategy per device set is created per process and then reused.
    """
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    if len(tf_config.get("cluster", {}).get("worker", [])) > 1:
        key = ("multi-worker", json.dumps(tf_config, sort_keys=True))
        factory = tf.distribute.MultiWorkerMirroredStrategy
    elif tf.config.list_logical_devices("GPU"):
        key = ("gpu",)
        factory = tf.distribute.MirroredStrategy
    else:
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        key = ("cpu",) + tuple(devices)
        # Reduce on one device instead of collective ops: in-process collectives keep their
        # parameters per instance key in the runtime, and a second model trained in the same
        # process then aborts with "Shape mismatch in the collective instance".
        factory = lambda: tf.distribute.MirroredStrategy(  # noqa: E731
            devices=devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    if key in _STRATEGIES:
        return _STRATEGIES[key]
    strategy = _STRATEGIES[key] = factory()
    log.info("strategy %s with %d replica(s)", type(strategy).__name__,
             strategy.num_replicas_in_sync)
    return strategy


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
