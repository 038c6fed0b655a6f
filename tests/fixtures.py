"""Tiny data and models shared by the tests (import explicitly: ``from tests import fixtures``)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from schemas import config as config_lib
from schemas import features
from trainer.model import FeatureInfo, build_network
from transform import preprocessor as preprocess

TINY_SPEC = features.DatasetSpec(
    name="tiny", sparse_keys=("user", "item"), dense_keys=("price",),
    label_keys={"ctr": "click", "cvr": "conversion"}, funnel=True, user_key="user",
    sparse_dtypes={"user": "int", "item": "int"})


def synthetic_spec(num_actions: int = 5) -> features.DatasetSpec:
    """The spec of the ``synthetic`` preset, as ``prepare`` starts from it."""
    from transform.ingest import synthetic

    return synthetic.spec(num_actions)


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

    spec = features.with_adm(synthetic_spec())
    log = synthetic.generate(rows, seed=seed)
    frame = adm.add_to_frames({"all": log}, adm.AdmParams.for_spec(
        spec, window_seconds, 1))["all"]
    pre = preprocess.fit(frame, spec)
    info = FeatureInfo(pre.vocab_sizes, spec.dense_keys, num_actions=spec.num_actions)
    return spec, pre, pre.transform(frame), info


def exported_variable_names(export_dir: str):
    """Names of the variables a SavedModel restores (``backbone/attention/query/kernel:0``...).

    ``tf.train.list_variables`` on the checkpoint only shows object-graph paths such as
    ``variables/12/.ATTRIBUTES/VARIABLE_VALUE``, which say nothing about what a variable is;
    :func:`trainer.warm_start.saved_variables` reads the names from the object graph.
    """
    from trainer.warm_start import saved_variables

    return sorted(saved_variables(export_dir))


CENSUS_CONFIG = {
    "name": "census-like",
    "data": {"adapter": "csv",
             "features": {"sparse": ["education", "occupation", "region"],
                          "dense": ["age", "hours"]},
             "labels": {"income": "income_50k", "married": "is_married"}},
    "model": {"backbone": "mmoe", "backbone_args": {"num_experts": 2, "expert_units": [8]},
              "embedding_dim": 4, "tower_units": [8]},
    "train": {"batch_size": 128, "epochs": 5, "learning_rate": 0.01, "seed": 3},
    "eval": {"min_auc": 0.5},
}
EDUCATIONS = ["Bachelors", "HS-grad", "Some college, no degree", "Masters", "?",
              "Not in universe", ""]
OCCUPATIONS = ["Tech-support", "Craft-repair", "Sales", "Exec-managerial", "?", ""]


def census_frame(rows: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Census-like rows: string categoricals with spaces, ``?``, commas and empty cells (which
    pandas writes as empty fields), dense values with gaps, and two unrelated binary tasks
    (income depends on education and age, marriage on age and region)."""
    rng = np.random.default_rng(seed)
    edu = rng.choice(EDUCATIONS, rows, p=[0.2, 0.25, 0.15, 0.1, 0.1, 0.1, 0.1])
    occ = rng.choice(OCCUPATIONS, rows)
    region = rng.choice(["North East", "South", "West, coast", "Mid-west"], rows)
    age = rng.integers(18, 80, rows).astype(np.float64)
    hours = rng.normal(40, 10, rows)
    edu_score = pd.Series(edu).map({"Bachelors": 1.0, "Masters": 1.5, "HS-grad": -0.5}).fillna(
        0.0).to_numpy()
    income = rng.random(rows) < 1 / (1 + np.exp(-(edu_score + 0.03 * (age - 45) - 1.0)))
    married = rng.random(rows) < 1 / (1 + np.exp(-(0.05 * (age - 35) + (region == "South")
                                                   - 0.3)))
    age[rng.random(rows) < 0.05] = np.nan
    hours[rng.random(rows) < 0.1] = np.nan
    return pd.DataFrame({"education": edu, "occupation": occ, "region": region, "age": age,
                         "hours": hours, "income_50k": income.astype(int),
                         "is_married": married.astype(int)})


def write_census_csv(path: str, rows: int = 3000, seed: int = 0) -> str:
    """``census_frame`` as a CSV: empty strings and NaN become empty cells, commas quoted."""
    census_frame(rows, seed).to_csv(path, index=False, na_rep="")
    return path


def scalar_feature_spec(arrays, columns):
    """The parse spec of :func:`write_gzipped_examples`' files: one scalar per column, float32
    for float columns, int64 for the others."""
    return {k: tf.io.FixedLenFeature([], tf.float32 if arrays[k].dtype.kind == "f" else tf.int64)
            for k in columns}


def write_gzipped_examples(arrays, path, columns):
    """Writes the rows of transformed ``arrays`` as gzipped tf.Examples (a TFX Transform
    output stand-in): float columns as float lists, the others as int64 lists."""
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for i in range(len(arrays[columns[0]])):
            feature = {}
            for k in columns:
                value = arrays[k].reshape(-1)[i]
                feature[k] = (tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
                              if arrays[k].dtype.kind == "f" else
                              tf.train.Feature(int64_list=tf.train.Int64List(value=[value])))
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature))
                         .SerializeToString())
