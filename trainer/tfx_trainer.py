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
from trainer.warm_start import RowMap, WarmStart, vocab_row_map
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


def base_model_source(base_model: str, tft_output: tft.TFTransformOutput,
                      spec: features.DatasetSpec) -> WarmStart:
    """The warm start from the last blessed model's serving export: its embedding rows
    follow their vocabulary entries from the vocabularies the export carries
    (``assets/vocab_<key>``, copied there with the Transform graph) to this run's.

    A vocabulary the export lacks maps no row (the table keeps its initialisation): copying
    rows by position would give entries the rows of others.
    """
    row_maps = {}
    for key in spec.sparse_keys:
        if key in spec.hash_buckets:
            continue  # buckets keep their meaning: copied as they are
        name = vocab_filename(key)
        new = [v.decode() if isinstance(v, bytes) else str(v)
               for v in tft_output.vocabulary_by_name(name)]
        asset = f"{base_model}/assets/{name}"
        if tf.io.gfile.exists(asset):
            with tf.io.gfile.GFile(asset) as f:
                old = f.read().splitlines()
            row_maps[features.transformed_name(key)] = vocab_row_map(old, new,
                                                                      NUM_OOV_BUCKETS)
        else:
            log.warning("warm start: %s has no vocabulary %s; the %s embedding starts fresh",
                        base_model, name, key)
            row_maps[features.transformed_name(key)] = RowMap.fresh(len(new) + NUM_OOV_BUCKETS)
    return WarmStart(base_model, row_maps)


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
    source = None
    if cfg.train.warm_start and fn_args.base_model:
        source = base_model_source(fn_args.base_model, tft_output, spec)
    elif cfg.train.warm_start:
        log.info("train.warm_start: no blessed model yet, training from scratch")
    session = TrainingSession(cfg, spec, info, warm_start_from=source)
    run_dir = fn_args.model_run_dir
    tf.io.gfile.makedirs(run_dir)
    model, metrics = session.run(data["train"], data["validation"], data["eval"], rows,
                                 backup_dir=f"{run_dir}/backup", log_dir=run_dir)
    log.info("eval split:\n%s", format_report(metrics["heads"]))
    export_serving_model(model.network, tft_output, spec, fn_args.serving_model_dir)
    write_json(f"{run_dir}/{METRICS_FILE}", metrics)
