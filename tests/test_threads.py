"""trainer.strategy.configure_threads: TF's thread pools, set before the runtime starts."""
import logging
import os
import subprocess
import sys

import tensorflow as tf

from trainer.strategy import configure_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pools_are_set_in_a_fresh_process():
    code = ("from trainer.strategy import configure_threads; import tensorflow as tf; "
            "assert configure_threads(1, 3); tf.constant(1.0) + 1; "
            "print(tf.config.threading.get_intra_op_parallelism_threads(), "
            "tf.config.threading.get_inter_op_parallelism_threads())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["1", "3"]


def test_a_started_runtime_keeps_its_pools_and_says_so(caplog):
    tf.constant(1.0) + 1  # the test worker's runtime has started
    current = (tf.config.threading.get_intra_op_parallelism_threads(),
               tf.config.threading.get_inter_op_parallelism_threads())
    assert configure_threads(*current)  # what it already has: nothing to change
    with caplog.at_level(logging.WARNING, logger="trainer.strategy"):
        assert not configure_threads(current[0] + 1, current[1])
    assert (f"train.intra_op_threads={current[0] + 1}, inter_op_threads={current[1]} not "
            f"applied: TensorFlow's runtime already started") in caplog.text
    assert tf.config.threading.get_intra_op_parallelism_threads() == current[0]
