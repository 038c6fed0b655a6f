"""The Transform component's preprocessing_fn against expected values and against the NumPy
twin of ``funnelrank train`` (``transform.preprocessor``): both must feed the model the same
numbers, with string categoricals, missing values (sparse and dense), min_count and hash
buckets, on examples read through the schema ``prepare`` derives (optional features VarLen)."""
import functools
import json
import math

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from schemas import config as config_lib
from schemas import features
from schemas.config import SPEC_KEY
from tests import fixtures
from transform import preprocessor as preprocess
from transform.ingest import examples, prepare, schema as schema_lib
from transform.preprocessing import (NUM_OOV_BUCKETS, VOCAB_MISSING, preprocessing_fn,
                                      vocab_filename)


def _fn(spec):
    return functools.partial(preprocessing_fn,
                             custom_config={SPEC_KEY: features.spec_to_dict(spec)})


def _instances(frame: pd.DataFrame, feature_spec):
    """Instance dicts for ``feature_spec``: ``[v]`` per value, ``[]`` for a missing one."""
    rows = []
    for record in frame.to_dict("records"):
        row = {}
        for key, kind in feature_spec.items():
            value = record[key]
            missing = value is None or value is pd.NA or (isinstance(value, float)
                                                          and math.isnan(value))
            if isinstance(kind, tf.io.FixedLenFeature):
                assert not missing, key  # required columns are never missing
            row[key] = [] if missing else [value.encode() if isinstance(value, str) else value]
        rows.append(row)
    return rows


def _run_tft(train: pd.DataFrame, other: pd.DataFrame, spec, tmp_path):
    """Analyze ``train`` and transform ``other`` (instance dicts through the derived schema)."""
    schema = schema_lib.schema_from_spec(spec)
    feature_spec = schema_utils.schema_as_feature_spec(schema).feature_spec
    for key in spec.optional_keys:  # optional features are sparse in tf.Transform
        assert isinstance(feature_spec[key], tf.io.VarLenFeature), key
    metadata = dataset_metadata.DatasetMetadata(schema)
    with tft_beam.Context(temp_dir=str(tmp_path / "tft"), force_tf_compat_v1=False):
        (_, _), transform_fn = (_instances(train, feature_spec), metadata) | \
            tft_beam.AnalyzeAndTransformDataset(_fn(spec))
        transformed, _ = ((_instances(other, feature_spec), metadata), transform_fn) | \
            tft_beam.TransformDataset()
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "out"))
    return transformed, tft.TFTransformOutput(str(tmp_path / "out"))


HAND_SPEC = features.DatasetSpec(
    name="hand", sparse_keys=("user", "s"), dense_keys=("price",),
    label_keys={"ctr": "click", "cvr": "conversion"}, funnel=True, user_key="user",
    sparse_dtypes={"user": "int", "s": "string"}, optional_keys=("s", "price"),
    min_counts={"s": 2})


@pytest.mark.slow
def test_transform_matches_expected_and_in_process_preprocessing(tmp_path):
    spec = HAND_SPEC
    train = pd.DataFrame({
        "click": [1, 0, 0, 1, 0, 0], "conversion": [1, 0, 0, 0, 0, 0],
        "user": [7, 7, 7, 3, 3, 12],
        "s": np.array(["a b", None, "a b", "?", None, "x, y"], dtype=object),
        "price": np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0], np.float32)})
    other = pd.DataFrame({
        "click": [0, 1, 1], "conversion": [0, 1, 0], "user": [3, 99, 7],
        "s": np.array([None, "?", "a b"], dtype=object),
        "price": np.array([np.nan, -1.0, 3.6], np.float32)})
    rows, tft_output = _run_tft(train, other, spec, tmp_path)

    # By hand: vocabularies by frequency, ties in decreasing byte order; the missing value is
    # an entry of its own (not OOV; written NUL in Transform's file, "" in the twin's);
    # min_count 2 leaves "?" and "x, y" out; unseen -> OOV.
    assert tft_output.vocabulary_by_name(vocab_filename("user")) == [b"7", b"3", b"12"]
    assert tft_output.vocabulary_by_name(vocab_filename("s")) == [
        b"a b", VOCAB_MISSING.encode()]
    present = np.array([1, 2, 4, 5, 6], np.float64)
    mean, std = present.mean(), present.std()
    assert [int(r["user_xf"]) for r in rows] == [1, 3, 0]  # 99 unseen -> OOV id 3
    assert [int(r["s_xf"]) for r in rows] == [1, 2, 0]  # missing -> 1, "?" -> OOV 2
    np.testing.assert_allclose(np.ravel([r["price_xf"] for r in rows]),
                               [0.0, (-1.0 - mean) / std, (np.float32(3.6) - mean) / std],
                               rtol=1e-5)
    assert np.ravel([r["conversion_xf"] for r in rows]).tolist() == [0.0, 1.0, 0.0]

    # The served model (a SavedModel with the transform layer) maps a missing value to its
    # entry too.
    raw_spec = schema_utils.schema_as_feature_spec(
        schema_lib.schema_from_spec(spec)).feature_spec
    module = tf.Module()
    module.layer = tft_output.transform_features_layer()
    module.serve = tf.function(lambda serialized: module.layer(
        tf.io.parse_example(serialized, raw_spec)), input_signature=[
            tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(module, str(tmp_path / "saved"))
    served = tf.saved_model.load(str(tmp_path / "saved")).serve(
        tf.constant(examples.encode(other, spec)))
    assert served["s_xf"].numpy().reshape(-1).tolist() == [1, 2, 0]
    assert served["user_xf"].numpy().reshape(-1).tolist() == [1, 3, 0]

    pre = preprocess.fit(train, spec)
    assert pre.vocabularies == {"user": ["7", "3", "12"], "s": ["a b", ""]}
    assert pre.vocab_sizes == {"user": 3 + NUM_OOV_BUCKETS, "s": 2 + NUM_OOV_BUCKETS}
    mine = pre.transform(other)
    for key in ("user_xf", "s_xf", "price_xf", "click_xf", "conversion_xf"):
        np.testing.assert_allclose(mine[key].reshape(-1), np.ravel([r[key] for r in rows]),
                                   rtol=1e-5, err_msg=key)


def _analyze_prepared(prepared, tmp_path):
    """Transform's analysis as TFX runs it: the prepared train TFRecords through TFXIO with
    the derived schema, then the transform graph applied to parsed raw examples."""
    from tensorflow_metadata.proto.v0 import schema_pb2
    from google.protobuf import text_format
    from tfx_bsl.public import tfxio

    with tf.io.gfile.GFile(prepared.schema_path) as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    record = tfxio.TFExampleRecord(file_pattern=prepared.splits["train"],
                                   telemetry_descriptors=["test"], schema=schema)
    with beam.Pipeline() as pipeline:
        with tft_beam.Context(temp_dir=str(tmp_path / "tft"), force_tf_compat_v1=False):
            raw = pipeline | "Read" >> record.BeamSource()
            transform_fn = (raw, record.TensorAdapterConfig()) | tft_beam.AnalyzeDataset(
                _fn(prepared.spec))
            _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "out"))
    # Raw examples parse with the derived schema (TFX writes no raw metadata with TFXIO).
    raw_spec = schema_utils.schema_as_feature_spec(schema).feature_spec
    return tft.TFTransformOutput(str(tmp_path / "out")), raw_spec


def _transform_split(tft_output, raw_spec, files):
    records = [r for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    parsed = tf.io.parse_example(tf.stack(records), raw_spec)
    return {k: v.numpy() for k, v in tft_output.transform_raw_features(parsed).items()}


@pytest.mark.slow
def test_transform_equals_the_numpy_twin_on_prepared_strings_gaps_min_count_and_hashing(
        tmp_path):
    frame = fixtures.census_frame(1500, seed=6)
    rng = np.random.default_rng(6)
    uid = rng.integers(0, 400, len(frame)) * 10 ** 12 + 7  # big ids, many unseen in eval
    frame["uid"] = pd.array(np.where(rng.random(len(frame)) < 0.05, None, uid), dtype="Int64")
    rare = rng.random(len(frame))  # values under min_count 50 in train (~30 and ~10 rows)
    frame.loc[rare < 0.03, "education"] = "PhD"
    frame.loc[rare > 0.99, "education"] = "Rare, value"
    path = tmp_path / "census.csv"
    frame.to_csv(path, index=False, na_rep="")
    raw = json.loads(json.dumps(fixtures.CENSUS_CONFIG))
    raw["data"]["path"] = str(path)
    raw["data"]["features"] = {
        "sparse": [{"name": "education", "min_count": 50}, {"name": "occupation",
                                                             "hash_buckets": 7},
                   "region", "uid"],
        "dense": ["age", "hours"], "user": "uid"}
    cfg = config_lib.from_dict(raw)
    prepared = prepare.prepare(cfg.data, features.spec_from_config(cfg.data, cfg.funnel),
                               str(tmp_path / "work"))
    spec = prepared.spec
    assert spec.sparse_dtypes["uid"] == "int" and spec.sparse_dtypes["education"] == "string"
    assert set(spec.optional_keys) == {"education", "occupation", "uid", "age", "hours"}
    assert spec.min_counts == {"education": 50} and spec.hash_buckets == {"occupation": 7}

    tft_output, raw_spec = _analyze_prepared(prepared, tmp_path)
    for key in spec.optional_keys:
        assert isinstance(raw_spec[key], tf.io.VarLenFeature), key
    frames = prepare.load_frames(prepared)
    pre = preprocess.fit(frames["train"], spec)
    for key, vocab in pre.vocabularies.items():
        assert tft_output.vocabulary_by_name(vocab_filename(key)) == [
            (v or VOCAB_MISSING).encode() for v in vocab], key
    assert "" in pre.vocabularies["education"] and "" in pre.vocabularies["uid"]
    assert "PhD" not in pre.vocabularies["education"]
    for split in ("train", "eval"):
        theirs = _transform_split(tft_output, raw_spec, prepared.splits[split])
        mine = pre.transform(frames[split])
        assert sorted(mine) == sorted(theirs)
        for key, values in mine.items():
            if values.dtype.kind == "f":
                np.testing.assert_allclose(values.reshape(-1), theirs[key].reshape(-1),
                                           rtol=1e-5, atol=1e-6, err_msg=f"{split} {key}")
            else:
                np.testing.assert_array_equal(values.reshape(-1), theirs[key].reshape(-1),
                                              err_msg=f"{split} {key}")
    # The cases compared above all occur: missing ids with an id of their own, values under
    # min_count and unseen ids in OOV, hashed buckets, missing dense values at the mean.
    mine = pre.transform(frames["eval"])
    edu = frames["eval"]["education"]
    edu_ids = mine["education_xf"].reshape(-1)
    oov = len(pre.vocabularies["education"])
    assert (edu_ids[edu.isna().to_numpy()] == pre.vocabularies["education"].index("")).all()
    rare = ~edu.isin(pre.vocabularies["education"]).to_numpy() & edu.notna().to_numpy()
    assert rare.any() and (edu_ids[rare] == oov).all()
    uid_ids = mine["uid_xf"].reshape(-1)
    assert (uid_ids == len(pre.vocabularies["uid"])).any()
    assert set(mine["occupation_xf"].reshape(-1)) <= set(range(7))
    assert len(set(mine["occupation_xf"].reshape(-1))) > 2
    age = frames["eval"]["age"].isna().to_numpy()
    assert age.any() and (mine["age_xf"].reshape(-1)[age] == 0).all()


def test_fit_refuses_a_dense_column_without_a_finite_mean():
    """Issue 17: a train split where a dense column is missing everywhere."""
    spec = features.DatasetSpec(name="d", sparse_keys=("s",), dense_keys=("x", "gap"),
                                label_keys={"t": "y"}, sparse_dtypes={"s": "string"},
                                optional_keys=("gap",))
    frame = pd.DataFrame({"y": [0, 1, 1], "s": ["a", "b", "a"],
                          "x": np.array([1.0, 2.0, 3.0], np.float32),
                          "gap": np.array([np.nan] * 3, np.float32)})
    with pytest.raises(preprocess.PreprocessingError,
                       match=r"dense feature 'gap': the train split gives no finite mean/std "
                             r"\(mean=nan, std=nan, 0 present values\)"):
        preprocess.fit(frame, spec)
    pre = preprocess.fit(frame.assign(gap=np.array([np.nan, 4.0, np.nan], np.float32)), spec)
    assert (pre.means["gap"], pre.stds["gap"]) == (4.0, 0.0)
    np.testing.assert_array_equal(pre.transform(frame.assign(gap=np.float32(5.0)))["gap_xf"],
                                  [[1.0], [1.0], [1.0]])  # constant column: only centred
    text = json.loads(pre.to_json())
    text["means"]["gap"] = float("nan")
    with pytest.raises(preprocess.PreprocessingError,
                       match=r"dense feature\(s\) \['gap'\] have no finite mean/std"):
        preprocess.Preprocessor.from_json(json.dumps(text))


def test_adm_without_its_columns_in_the_schema_names_them():
    spec = features.with_adm(fixtures.synthetic_spec())
    inputs = {k: tf.zeros([2, 1], tf.int64) for k in spec.columns}  # no adm_* columns
    with pytest.raises(ValueError, match=r"lacks \['adm_mask_0', 'adm_mask_1', 'adm_mask_2'.*"
                                         r"prepared/schema.pbtxt"):
        preprocessing_fn(inputs, {SPEC_KEY: features.spec_to_dict(spec)})
