"""TFX Trainer entry point: ``run_fn`` (referenced as ``trainer.tfx_trainer.run_fn``)."""
from __future__ import annotations

import json
import logging
import time

import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs

from schemas import config as config_lib
from schemas import features
from serving.export import export_serving_model
from trainer.data import (
    collect_rows,
    dataset_columns,
    from_arrays,
    from_transformed,
    load_transformed,
)
from trainer.model import FeatureInfo
from trainer.session import evaluate_heads, fit_model, format_report
from trainer.strategy import make_strategy
from transform.preprocessing import NUM_OOV_BUCKETS, vocab_filename

log = logging.getLogger(__name__)


def feature_info(tft_output: tft.TFTransformOutput, spec: features.DatasetSpec) -> FeatureInfo:
    """Vocabulary sizes (OOV buckets included) from the Transform graph's assets."""
    return FeatureInfo(
        vocab_sizes={k: tft_output.vocabulary_size_by_name(vocab_filename(k)) + NUM_OOV_BUCKETS
                     for k in spec.sparse_keys},
        dense_keys=spec.dense_keys, num_actions=spec.num_actions)


def run_fn(fn_args: FnArgs) -> None:
    """Trains the configured model on transformed examples and exports the serving model.

    ``fn_args.custom_config`` carries the experiment config (``"experiment"``) and the
    dataset spec (``"dataset_spec"``), parsed once here and logged.
    """
    logging.basicConfig(level=logging.INFO)
    cfg, spec = config_lib.from_custom_config(fn_args.custom_config)
    log.info("run_fn config: %s", json.dumps(config_lib.to_dict(cfg), sort_keys=True))
    tf.keras.utils.set_random_seed(cfg.train.seed)  # before the datasets: see train_local
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    info = feature_info(tft_output, spec)
    feature_spec = tft_output.transformed_feature_spec()  # outside any tf.function
    strategy = make_strategy()
    global_batch = cfg.train.batch_size * strategy.num_replicas_in_sync
    if cfg.train.in_memory:
        t0 = time.perf_counter()
        columns = dataset_columns(info.input_names, spec)
        arrays = load_transformed(fn_args.train_files, feature_spec, columns)
        log.info("train.in_memory: %d rows, %.0f MB, parsed in %.1fs",
                 len(arrays[columns[0]]), sum(a.nbytes for a in arrays.values()) / 2**20,
                 time.perf_counter() - t0)
        train_ds = from_arrays(arrays, info.input_names, spec, global_batch, shuffle=True,
                               seed=cfg.train.seed)
    else:
        train_ds = from_transformed(fn_args.train_files, feature_spec, info.input_names, spec,
                                    global_batch, shuffle=True, seed=cfg.train.seed,
                                    shuffle_buffer=cfg.train.shuffle_buffer)
    eval_ds = from_transformed(fn_args.eval_files, feature_spec, info.input_names, spec,
                               cfg.train.eval_batch_size)
    backup_dir = fn_args.model_run_dir + "/backup"

    def meta_rows():
        rows = from_transformed(fn_args.train_files, feature_spec, info.input_names, spec,
                                cfg.train.eval_batch_size)
        return collect_rows(rows, cfg.meta.max_rows), {"click": "click",
                                                       "conversion": "conversion"}

    model, progress = fit_model(cfg, info, train_ds, eval_ds, strategy, backup_dir=backup_dir,
                                meta_rows=meta_rows)
    report = evaluate_heads(model.network, eval_ds)
    log.info("eval split:\n%s", format_report(report))
    log.info("training throughput: %.0f examples/s", progress.examples_per_sec)
    tf.io.gfile.makedirs(fn_args.model_run_dir)
    with tf.io.gfile.GFile(fn_args.model_run_dir + "/metrics.json", "w") as f:
        json.dump({"heads": report, "examples_per_sec": progress.examples_per_sec,
                   **progress.summary}, f, indent=2)
    export_serving_model(model.network, tft_output, spec, fn_args.serving_model_dir)
