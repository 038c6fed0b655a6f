"""``funnelrank export`` and ``funnelrank serve-check`` (wired up in ``funnelrank/cli.py``).

* ``export --model DIR --out BASE``: turns ``funnelrank train`` output (``DIR/model`` and
  ``DIR/preprocessor.json``) into ``BASE/<version>/`` with both serving signatures and a
  warmup file, and writes ``BASE/models.config``.
* ``serve-check MODEL_DIR``: runs :mod:`serving.serve_check` in a fresh interpreter that
  never imports this project (no ``PYTHONPATH``, another working directory).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

from serving import serve_check

WARMUP_CSV_ROWS = 8


def load_trained_network(model_dir: str):
    """``(network, preprocessor)`` of a ``funnelrank train`` output directory, without running
    any code stored in it: the network is rebuilt from the config in ``metrics.json`` and only
    the weights are read from ``model/`` (a Keras SavedModel may hold Lambda layers' Python
    bytecode; ``tf.keras.models.load_model`` would run it).

    Raises:
      UserError: Not a complete ``funnelrank train`` output (a missing or unreadable file,
        weights that do not fit the config's network), naming the file.
    """
    import tensorflow as tf

    from schemas import config as config_lib
    from schemas.errors import UserError
    from trainer.model import FeatureInfo, build_network
    from transform.preprocessor import PreprocessingError, Preprocessor

    paths = {name: os.path.join(model_dir, name)
             for name in ("metrics.json", "preprocessor.json", "model")}
    for name, path in paths.items():
        if not os.path.exists(path):
            raise UserError(f"{path} not found: --model must be a complete `funnelrank train` "
                            f"output directory (model/, preprocessor.json and metrics.json, "
                            f"which is written last)")
    try:
        with open(paths["metrics.json"]) as f:
            cfg = config_lib.from_dict(json.load(f)["config"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise UserError(f"{paths['metrics.json']}: not a metrics.json of funnelrank train "
                        f"({type(e).__name__}: {str(e)[:120]})") from None
    try:
        with open(paths["preprocessor.json"]) as f:
            pre = Preprocessor.from_json(f.read())
    except (PreprocessingError, UnicodeDecodeError) as e:
        raise UserError(f"{paths['preprocessor.json']}: {e}") from None
    _check_saved_model_proto(paths["model"])
    info = FeatureInfo(pre.vocab_sizes, pre.spec.dense_keys, pre.spec.num_actions)
    network = build_network(cfg.model, info, seed=cfg.train.seed, funnel=cfg.funnel)
    weights = os.path.join(paths["model"], "variables", "variables")
    try:
        network.load_weights(weights).assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:
        # IndexError: a truncated variables.data shard ("Read less bytes than requested").
        raise UserError(f"{paths['model']}: its weights do not load into the network of the "
                        f"config in metrics.json ({type(e).__name__}: {str(e)[:100]})") from None
    return network, pre


def _check_saved_model_proto(model_path: str) -> None:
    """Parses ``model/saved_model.pb`` as a protocol buffer (data only: nothing in it runs), so
    a truncated or foreign file is reported instead of exported from the weights alone.

    Raises:
      UserError: The file is missing or is not a ``SavedModel`` message.
    """
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    from schemas.errors import UserError

    path = os.path.join(model_path, "saved_model.pb")
    try:
        with open(path, "rb") as f:
            saved_model_pb2.SavedModel().ParseFromString(f.read())
    except (OSError, DecodeError, RuntimeError) as e:  # RuntimeError: the C++ parser's error
        raise UserError(f"{path}: not a readable SavedModel, truncated or corrupt "
                        f"({type(e).__name__}: {str(e)[:120]})") from None


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
      Exit status 0 (user errors raise ``UserError``).

    Raises:
      UserError: A bad model directory, an existing version, ``--out`` an existing file.
    """
    import tensorflow as tf

    from schemas.errors import UserError
    from serving import export, versioning

    if os.path.isfile(args.out):
        raise UserError(f"--out {args.out}: is an existing file; give a directory")
    network, pre = load_trained_network(args.model)
    warmup_examples = None
    if getattr(args, "warmup_csv", None):
        import pandas as pd

        from serving import client

        rows = pd.read_csv(args.warmup_csv, nrows=WARMUP_CSV_ROWS, dtype=str,
                           keep_default_na=False).to_dict("records")
        types = client.feature_types_from_spec(pre.spec)
        rows = [{k: _typed(v, types.get(k), args.warmup_csv, i, k) for k, v in row.items()}
                for i, row in enumerate(rows)]
        warmup_examples = client.serialize_examples(rows, types, pre.spec.optional_keys)
    try:
        export_dir = versioning.new_version_dir(args.out, getattr(args, "version", None))
    except FileExistsError as e:
        raise UserError(str(e)) from None
    # Written beside the version under a name TF Serving ignores (not an integer), renamed
    # once complete; removed when anything fails, so no half export is ever left.
    staging = os.path.join(args.out, f".{os.path.basename(export_dir)}.tmp-{os.getpid()}")
    try:
        export.export_from_preprocessor(network, pre, staging, warmup_examples)
        tf.io.gfile.rename(staging, export_dir)
    except BaseException:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)
        raise
    config = versioning.write_model_config(args.out, getattr(args, "name", None) or "funnelrank",
                                           getattr(args, "base_path", None))
    print(f"exported {export_dir}")
    print(f"model config: {config}")
    return 0


_INTEGER_TEXT = re.compile(r"\s*([+-]?\d{1,19})(?:\.0*)?\s*")


def _typed(text: str, kind, path: str = "", row: int = 0, column: str = ""):
    """A warmup CSV cell as the request type (``""`` = missing); integers are parsed as
    integers (``17`` or ``17.0``), never through float64.

    Raises:
      UserError: A cell that is not a number of its column's type, naming file, row, column.
    """
    from schemas.checks import short_repr
    from schemas.errors import UserError

    if text == "" or kind is None:
        return None if text == "" else text
    if kind == "float32":
        try:
            return float(text)
        except ValueError:
            pass
    elif kind == "int64":
        match = _INTEGER_TEXT.fullmatch(text)
        if match:
            return int(match.group(1))
    else:
        return text
    raise UserError(f"{path}: data row {row + 1}, column {column!r}: expected {kind}, found "
                    f"{short_repr(text)}")


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
    if proc.returncode == serve_check.EXIT_UNREADABLE:
        from schemas.errors import UserError

        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("serve-check: error:")]
        raise UserError(lines[-1][len("serve-check: error: "):] if lines else
                        f"{args.model_dir}: cannot be read (serve-check exit status 2)")
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
    return proc.returncode
