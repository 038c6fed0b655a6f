"""Versioned export layout for TF Serving: ``<base>/<version>/`` and ``models.config``.

TF Serving watches ``<base>`` and serves the highest integer sub-directory (by default);
:func:`write_model_config` writes the ``model_config_list`` that points a server at it.
"""
from __future__ import annotations

import os
import re
import time
from typing import List, Optional

import tensorflow as tf

MODEL_CONFIG_FILE = "models.config"

_MODEL_CONFIG = """\
model_config_list {{
  config {{
    name: "{name}"
    base_path: "{base_path}"
    model_platform: "tensorflow"
    model_version_policy {{ latest {{ num_versions: 1 }} }}
  }}
}}
"""


def versions(base_dir: str) -> List[int]:
    """Integer version sub-directories of ``base_dir`` holding a ``saved_model.pb``, sorted."""
    if not tf.io.gfile.isdir(base_dir):
        return []
    out = []
    for name in tf.io.gfile.listdir(base_dir):
        name = name.rstrip("/")
        if re.fullmatch(r"\d+", name) and tf.io.gfile.exists(
                os.path.join(base_dir, name, "saved_model.pb")):
            out.append(int(name))
    return sorted(out)


def new_version_dir(base_dir: str, version: Optional[int] = None) -> str:
    """``<base_dir>/<version>`` for a new export; the version defaults to unix seconds.

    Raises:
      FileExistsError: An explicit ``version`` already exists.
    """
    if version is None:
        version = int(time.time())
        while tf.io.gfile.exists(os.path.join(base_dir, str(version))):
            version += 1
    elif tf.io.gfile.exists(os.path.join(base_dir, str(int(version)))):
        raise FileExistsError(f"version {version} already exists under {base_dir}")
    return os.path.join(base_dir, str(int(version)))


def latest_version_dir(model_dir: str) -> str:
    """``model_dir`` itself if it holds ``saved_model.pb``, else its highest version."""
    if tf.io.gfile.exists(os.path.join(model_dir, "saved_model.pb")):
        return model_dir
    found = versions(model_dir)
    if not found:
        raise FileNotFoundError(f"{model_dir}: neither a SavedModel nor a directory of "
                                "integer versions holding one")
    return os.path.join(model_dir, str(found[-1]))


def model_config_text(model_name: str, base_path: str) -> str:
    """TF Serving ``model_config_list`` text serving ``base_path`` as ``model_name``."""
    return _MODEL_CONFIG.format(name=model_name, base_path=base_path)


def write_model_config(base_dir: str, model_name: str, base_path: Optional[str] = None) -> str:
    """Writes ``<base_dir>/models.config`` for ``--model_config_file``.

    Args:
      base_dir: The directory holding the version sub-directories.
      model_name: Name clients use (``/v1/models/<name>``, ``model_spec.name``).
      base_path: Path of ``base_dir`` as the server sees it (e.g. ``/models/funnelrank``
        inside a container); default: the absolute ``base_dir``.

    Returns:
      The path written.
    """
    tf.io.gfile.makedirs(base_dir)
    path = os.path.join(base_dir, MODEL_CONFIG_FILE)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(model_config_text(model_name, base_path or os.path.abspath(base_dir)))
    return path
