"""Test helper: ``funnelrank ARGS`` in this process, paused at one point, for crash tests.

    python -m tests.pause_and_run MARKER POINT funnelrank-args...

POINT is where to pause:

* ``step:E:B``: after training batch B of epoch E (both 0-based) has run;
* ``remove:NAME``, ``replace:NAME``, ``rename:NAME``: just before ``os.remove``,
  ``os.replace`` or ``tf.io.gfile.rename`` is called with a destination named NAME.

At the point the process writes MARKER and waits while it exists: the test then kills it
(SIGKILL at a known place, instead of a timer that may fire anywhere) or sends a signal and
deletes MARKER to let it go on. Nothing else is changed: the command, its config and its
defaults are the user's.
"""
import os
import sys
import time


def _pause(marker: str) -> None:
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    while os.path.exists(marker):
        time.sleep(0.05)


def _install(marker: str, point: str) -> None:
    kind, _, where = point.partition(":")
    if kind == "step":
        from trainer import callbacks

        epoch, batch = (int(x) for x in where.split(":"))
        original = callbacks.ProgressLogger.on_train_batch_end

        def on_train_batch_end(self, b, logs=None):
            original(self, b, logs)
            if self._epoch == epoch and b == batch:
                _pause(marker)

        callbacks.ProgressLogger.on_train_batch_end = on_train_batch_end
    elif kind in ("remove", "replace"):
        original_fn = getattr(os, kind)

        def wrapped(*args, **kwargs):
            if os.path.basename(os.fspath(args[-1])) == where:
                _pause(marker)
            return original_fn(*args, **kwargs)

        setattr(os, kind, wrapped)
    elif kind == "rename":
        import tensorflow as tf

        original_rename = tf.io.gfile.rename

        def rename(src, dst, overwrite=False):
            if os.path.basename(dst) == where:
                _pause(marker)
            return original_rename(src, dst, overwrite)

        tf.io.gfile.rename = rename
    else:
        raise SystemExit(f"unknown pause point {point!r}")


def main(argv) -> int:
    from schemas._env import ensure_legacy_keras

    ensure_legacy_keras()  # before TensorFlow is imported, as the CLI does
    marker, point, args = argv[0], argv[1], argv[2:]
    _install(marker, point)
    from funnelrank import cli

    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
