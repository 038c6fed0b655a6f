"""``funnelrank export`` and ``funnelrank serve-check`` (wired up in ``funnelrank/cli.py``).

* ``export --model DIR --out BASE``: turns ``funnelrank train`` output (``DIR/model`` and
  ``DIR/preprocessor.json``) into ``BASE/<version>/`` with both serving signatures and a
  warmup file, and writes ``BASE/models.config``.
* ``serve-check MODEL_DIR``: runs :mod:`serving.serve_check` in a fresh interpreter that
  never imports this project (no ``PYTHONPATH``, another working directory).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from serving import serve_check

WARMUP_CSV_ROWS = 8


def export_main(args) -> int:
    """``funnelrank export``.

    Args:
      args: Namespace with ``model`` (``funnelrank train`` output directory), ``out`` (base
        directory of versions), ``version`` (int or None: unix seconds), ``name``
        (model name for ``models.config``), ``warmup_csv`` (optional CSV whose first
        rows become the warmup requests; default: rows from the vocabularies) and
        ``base_path`` (``--out`` as the server sees it, e.g. ``/models/funnelrank`` in a
        container; default: the absolute ``--out``).

    Returns:
      Exit status: 0, or 2 when the requested version already exists.
    """
    import tensorflow as tf

    import trainer.model  # noqa: F401  registers the project's Keras layers for loading
    from serving import export, versioning
    from transform.preprocessor import Preprocessor

    pre_path = os.path.join(args.model, "preprocessor.json")
    model_path = os.path.join(args.model, "model")
    for path in (pre_path, model_path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found: --model must be a `funnelrank train` "
                                    "output directory (holding model/ and preprocessor.json)")
    with open(pre_path) as f:
        pre = Preprocessor.from_json(f.read())
    network = tf.keras.models.load_model(model_path, compile=False)
    warmup_examples = None
    if getattr(args, "warmup_csv", None):
        import pandas as pd

        from serving import client

        rows = pd.read_csv(args.warmup_csv, nrows=WARMUP_CSV_ROWS).to_dict("records")
        warmup_examples = client.serialize_examples(
            rows, client.feature_types_from_spec(pre.spec))
    try:
        export_dir = versioning.new_version_dir(args.out, getattr(args, "version", None))
    except FileExistsError as e:
        print(f"funnelrank export: error: {e}", file=sys.stderr)
        return 2
    export.export_from_preprocessor(network, pre, export_dir, warmup_examples)
    config = versioning.write_model_config(args.out, getattr(args, "name", None) or "funnelrank",
                                           getattr(args, "base_path", None))
    print(f"exported {export_dir}")
    print(f"model config: {config}")
    return 0


def serve_check_command(model_dir: str, repeats: int = 20, json_path: str | None = None):
    """The argv running the standalone checker on ``model_dir``."""
    # -I: isolated mode, neither PYTHONPATH nor the script's own directory is on sys.path.
    cmd = [sys.executable, "-I", os.path.abspath(serve_check.__file__),
           os.path.abspath(model_dir), "--repeats", str(repeats)]
    if json_path:
        cmd += ["--json", os.path.abspath(json_path)]
    return cmd


def serve_check_main(args) -> int:
    """``funnelrank serve-check``: exit status of the fresh-process check (0 = passed).

    Args:
      args: Namespace with ``model_dir`` (a version directory or a base of versions),
        optional ``repeats`` (timed calls per warmup record) and ``json`` (report path).
    """
    if not os.path.exists(args.model_dir):
        raise FileNotFoundError(f"{args.model_dir} not found")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = serve_check_command(args.model_dir, getattr(args, "repeats", 20) or 20,
                              getattr(args, "json", None))
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=getattr(args, "timeout", 600) or 600)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
    return proc.returncode
