"""Tiny data and models shared by the tests (import explicitly: ``from tests import fixtures``)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from schemas import config as config_lib
from schemas import features
from trainer.model import FeatureInfo, build_network
from transform import preprocessor as preprocess

TINY_SPEC = features.DatasetSpec(name="tiny", sparse_keys=("user", "item"), dense_keys=("price",),
                                 click_key="click", conversion_key="conversion", user_key="user")


def tiny_frame(rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    """A learnable funnel: clicks depend on item and price, conversions on user parity."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 40, rows)
    item = rng.integers(0, 25, rows)
    price = rng.normal(10.0, 3.0, rows)
    p_click = 1 / (1 + np.exp(-((item % 3) - 1.5 + 0.3 * (price - 10))))
    click = (rng.random(rows) < p_click).astype(np.int64)
    conversion = click * (rng.random(rows) < 0.1 + 0.4 * (user % 2)).astype(np.int64)
    return pd.DataFrame({"click": click, "conversion": conversion, "user": user, "item": item,
                         "price": price.astype(np.float32)})


def tiny_config(**train) -> config_lib.ExperimentConfig:
    base = {"batch_size": 128, "epochs": 1, "learning_rate": 0.01, "seed": 3}
    base.update(train)
    return config_lib.from_dict({
        "model": {"backbone": "mmoe", "backbone_args": {"num_experts": 2, "expert_units": [8]},
                  "embedding_dim": 4, "tower_units": [8]},
        "train": base})


def tiny_arrays(rows: int = 2000, seed: int = 0):
    """(preprocessor, transformed arrays, FeatureInfo) for ``tiny_frame``."""
    frame = tiny_frame(rows, seed)
    pre = preprocess.fit(frame, TINY_SPEC)
    return pre, pre.transform(frame), FeatureInfo(pre.vocab_sizes, TINY_SPEC.dense_keys)


def tiny_network(seed: int = 3):
    _, arrays, info = tiny_arrays()
    return build_network(tiny_config().model, info, seed=seed), arrays, info


def adm_arrays(rows: int = 1200, seed: int = 3, window_seconds: int = 86_400):
    """(spec, preprocessor, transformed arrays, FeatureInfo) of a small synthetic log with
    ADM columns, for per-action (KAML) models."""
    from transform import adm
    from transform.ingest import synthetic

    spec = features.with_adm(features.synthetic_spec())
    log = synthetic.generate(rows, seed=seed)
    frame = adm.add_to_frames({"all": log}, adm.AdmParams.for_spec(
        spec, window_seconds, 1))["all"]
    pre = preprocess.fit(frame, spec)
    info = FeatureInfo(pre.vocab_sizes, spec.dense_keys, num_actions=spec.num_actions)
    return spec, pre, pre.transform(frame), info


def exported_variable_names(export_dir: str):
    """Names of the variables a SavedModel restores (``backbone/attention/query/kernel:0``...).

    ``tf.train.list_variables`` on the checkpoint only shows object-graph paths such as
    ``variables/12/.ATTRIBUTES/VARIABLE_VALUE``, which say nothing about what a variable is.
    """
    import tensorflow as tf

    return sorted({v.name for v in tf.saved_model.load(export_dir).variables})
