"""Paths that are local or URLs of a ``tf.io.gfile`` filesystem (``gs://``, ``s3://``,
``hdfs://``, ``ram://`` in tests), and the few tree operations the pipeline side needs.

A pipeline root on Kubeflow is a bucket: every file the pipeline side writes goes through
``tf.io.gfile``, paths are joined with ``/`` and never made absolute against the working
directory of the machine that compiles or launches the run.
"""
from __future__ import annotations

import os
import re

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str) -> bool:
    """True for ``scheme://...`` paths (``file://`` included)."""
    return bool(_URL.match(path or ""))


def is_remote(path: str) -> bool:
    """True for a URL of a filesystem other than the local one (``file://`` is local)."""
    return is_url(path) and not path.lower().startswith("file://")


def absolute(path: str) -> str:
    """``path`` made absolute when it is local; a URL as it is."""
    return path if is_url(path) else os.path.abspath(path)


def replace_tree(src: str, dst: str) -> None:
    """Moves the directory ``src`` to ``dst``, replacing ``dst``.

    Locally one rename (atomic on POSIX once ``dst`` is gone). On a URL filesystem file by
    file: object stores have no directory rename, and TF's ``ram://`` filesystem renames
    only the directory entry, leaving the files under the old name.
    """
    import tensorflow as tf

    gfile = tf.io.gfile
    if gfile.exists(dst):
        gfile.rmtree(dst)
    if not is_url(src):
        gfile.rename(src, dst)
        return
    for folder, _, files in gfile.walk(src):
        target = dst + folder[len(src):]
        gfile.makedirs(target)
        for name in files:
            gfile.rename(f"{folder}/{name}", f"{target}/{name}", overwrite=True)
    gfile.rmtree(src)
