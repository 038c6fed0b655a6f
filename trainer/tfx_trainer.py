"""The TFX Trainer's entry point, ``run_fn`` (referenced as ``trainer.tfx_trainer.run_fn``).

A thin adapter around :class:`trainer.session.TrainingSession`: the splits are the Transform
component's transformed examples (``train`` to train on, ``validation`` as the Trainer's eval
split, ``eval`` beside them for the held-out report), the model goes to TFX's serving model
directory with the tf.Transform graph attached, and ``metrics.json`` (the same shape as
``funnelrank train`` writes) to the model run directory, with the TensorBoard logs.
"""
from __future__ import annotations

import logging
import re
from typing import List, Sequence

import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs

from schemas import config as config_lib
from schemas import features
from serving.export import export_serving_model
from trainer.data import count_records
from trainer.evaluation import format_report
from trainer.model import FeatureInfo
from trainer.session import METRICS_FILE, SplitData, TrainingSession, write_json
from transform.preprocessing import NUM_OOV_BUCKETS, vocab_filename

log = logging.getLogger(__name__)


def feature_info(tft_output: tft.TFTransformOutput, spec: features.DatasetSpec) -> FeatureInfo:
    """Vocabulary sizes (OOV buckets included, or hash buckets) from the Transform graph."""
    sizes = {}
    for key in spec.sparse_keys:
        if key in spec.hash_buckets:
            sizes[key] = spec.hash_buckets[key]
        else:
            sizes[key] = tft_output.vocabulary_size_by_name(vocab_filename(key)) + \
                NUM_OOV_BUCKETS
    return FeatureInfo(vocab_sizes=sizes, dense_keys=spec.dense_keys,
                       num_actions=spec.num_actions)


def sibling_split(files: Sequence[str], split: str) -> List[str]:
    """The transformed files of another split of the same artifact (``Split-train/*`` ->
    ``Split-<split>/*``).

    Raises:
      FileNotFoundError: The artifact has no such split.
    """
    pattern = [re.sub(r"Split-[^/]+", f"Split-{split}", f, count=1) for f in files]
    found = sorted({g for p in pattern for g in tf.io.gfile.glob(p)})
    if not found:
        raise FileNotFoundError(f"no transformed examples of split {split!r} beside "
                                f"{list(files)[:1]} (tried {pattern[:1]})")
    return found


def run_fn(fn_args: FnArgs) -> None:
    """Trains the configured model on transformed examples and exports the serving model.

    ``fn_args.custom_config`` carries the experiment config and the dataset spec (parsed once
    here; the session logs the config).
    """
    logging.basicConfig(level=logging.INFO)
    cfg, spec = config_lib.from_custom_config(fn_args.custom_config)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    info = feature_info(tft_output, spec)
    feature_spec = tft_output.transformed_feature_spec()  # outside any tf.function
    eval_files = sibling_split(fn_args.train_files, "eval")
    splits = {"train": list(fn_args.train_files), "validation": list(fn_args.eval_files),
              "eval": eval_files}
    rows = {k: count_records(v) for k, v in splits.items()}
    data = {k: SplitData(files=v, feature_spec=feature_spec, count=rows[k])
            for k, v in splits.items()}
    session = TrainingSession(cfg, spec, info)
    run_dir = fn_args.model_run_dir
    tf.io.gfile.makedirs(run_dir)
    model, metrics = session.run(data["train"], data["validation"], data["eval"], rows,
                                 backup_dir=f"{run_dir}/backup", log_dir=run_dir)
    log.info("eval split:\n%s", format_report(metrics["heads"]))
    export_serving_model(model.network, tft_output, spec, fn_args.serving_model_dir)
    write_json(f"{run_dir}/{METRICS_FILE}", metrics)
