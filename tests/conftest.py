"""Test session setup: Keras 2, quiet TF logs, 2 logical CPU devices, TF's thread pools and
AutoGraph as trained.

The logical devices must be configured before anything initialises TensorFlow's runtime, so
MirroredStrategy tests really run 2 replicas on this CPU-only machine.
"""
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYTHONHASHSEED", "0")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

from schemas.config import TrainConfig  # noqa: E402
from trainer import tracing  # noqa: E402
from trainer.strategy import configure_threads  # noqa: E402

# TF's thread pools as a training session sets them, before anything starts the runtime.
configure_threads(TrainConfig.intra_op_threads, TrainConfig.inter_op_threads)

# Every training session adds this rule; adding it up front makes a test's tracing independent
# of whether a session ran before it in the same worker (test_tracing removes it to check it).
tracing.skip_tf_keras_conversion()

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
ALI_CCP_SAMPLE = os.path.join(SHARED, "data", "ali_ccp_sample")


@pytest.fixture
def ali_ccp_dir():
    """The real 200-row Ali-CCP sample beside the clone (never copied into the project)."""
    if not os.path.isdir(ALI_CCP_SAMPLE):
        pytest.fail(f"Ali-CCP sample not found at {ALI_CCP_SAMPLE}: CI must put shared/ "
                    "beside the clone")
    return ALI_CCP_SAMPLE


@pytest.fixture(scope="session")
def _two_cpu_strategy_instance():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) == 2, devices
    return tf.distribute.MirroredStrategy(devices=devices)


@pytest.fixture
def two_cpu_strategy(_two_cpu_strategy_instance):
    """MirroredStrategy over the 2 logical CPU devices configured above.

    ONE instance per test session: a second MirroredStrategy in the same process reuses the
    collective instance keys of the first, and its first all-reduce aborts with "Shape mismatch
    in the collective instance 100" (verified on TF 2.16.2 with 2 logical CPUs).
    """
    return _two_cpu_strategy_instance
