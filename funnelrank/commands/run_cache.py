"""Finished benchmark runs, kept so that a grid never trains the same run twice.

A grid of 5 seeds x 10 runs takes hours on a small machine. Each finished run's result (its
metrics.json content) is written to ``<cache_dir>/<key>.json`` as soon as it ends, so that

* a grid killed half way picks up where it stopped (the finished runs are read back), and
* grids that share a run (the zoo's MMoE and PWiseR's "MMoE + BCE" are the same training)
  train it once.

The key is a hash of everything that decides the result: the resolved config (``data.path``
replaced by a hash of the data's bytes, so the same rows written to two work directories
match), the baseline's arguments, and the source code of the project's packages (any edit to
the trainer makes every stored run stale). A run is read back only when the stored key
material equals the new one field by field, not only its hash.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, Iterable, Mapping, Optional

# Packages whose code decides a run's result (the drivers on top only call them).
PACKAGES = ("funnelrank", "pipeline", "schemas", "serving", "trainer", "transform")


def _hash_files(paths: Iterable[str], root: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(os.path.relpath(path, root).encode())
        digest.update(b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _files_under(path: str, suffix: str = "") -> list:
    if os.path.isfile(path):
        return [path]
    found = []
    for top, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__pycache__"))]
        found += [os.path.join(top, f) for f in files
                  if f.endswith(suffix) and not f.startswith(".")]
    return found


def code_fingerprint(root: Optional[str] = None) -> str:
    """sha256 of the ``.py`` files of :data:`PACKAGES` under ``root`` (default: the project
    root this module lives in)."""
    root = root or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    files = [f for package in PACKAGES if os.path.isdir(os.path.join(root, package))
             for f in _files_under(os.path.join(root, package), ".py")]
    return _hash_files(files, root)


def data_fingerprint(path: str) -> str:
    """sha256 of a data file, or of every file under a data directory (names and bytes).

    Raises:
      FileNotFoundError: Naming ``path`` when it does not exist.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"data {path!r} does not exist")
    return _hash_files(_files_under(path), path if os.path.isdir(path) else
                       os.path.dirname(path))


class RunCache:
    """Finished runs under ``cache_dir``, keyed as the module docstring says.

    Args:
      cache_dir: Where the ``<key>.json`` files go (made when the first run is stored).
      code: The code fingerprint (default: :func:`code_fingerprint` of this checkout).
    """

    def __init__(self, cache_dir: str, code: Optional[str] = None):
        self.cache_dir = cache_dir
        self.code = code if code is not None else code_fingerprint()
        self._data: Dict[str, str] = {}

    def material(self, config: Mapping[str, Any], baseline: Any = None) -> Dict[str, Any]:
        """What decides a run: ``config`` (a ``config_lib.to_dict``) with ``data.path`` as a
        data hash, the baseline and the code."""
        config = json.loads(json.dumps(config))  # a deep copy, JSON types only
        path = config.get("data", {}).get("path")
        if path:
            if path not in self._data:
                self._data[path] = data_fingerprint(path)
            config["data"]["path"] = "sha256:" + self._data[path]
        return {"config": config, "baseline": baseline, "code": self.code}

    def _path(self, material: Mapping[str, Any]) -> str:
        text = json.dumps(material, sort_keys=True)
        return os.path.join(self.cache_dir, hashlib.sha256(text.encode()).hexdigest() + ".json")

    def get(self, material: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """The stored result of the run ``material`` describes, or None."""
        path = self._path(material)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            stored = json.load(f)
        if stored.get("material") != json.loads(json.dumps(material)):
            return None  # a hash collision or a hand-edited file: train again
        return stored["result"]

    def put(self, material: Mapping[str, Any], result: Mapping[str, Any]) -> str:
        """Stores ``result`` (written to a temporary file, then renamed: a kill never leaves a
        half-written entry); returns the entry's path."""
        os.makedirs(self.cache_dir, exist_ok=True)
        path = self._path(material)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"material": material, "result": result}, f)
        os.replace(tmp, path)
        return path
