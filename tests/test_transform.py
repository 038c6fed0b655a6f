"""The Transform component's preprocessing_fn against expected values and against the
in-process preprocessing of ``funnelrank train`` (both must feed the model the same numbers)."""
import functools

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from schemas import features
from schemas.config import SPEC_KEY
from tests import fixtures
from transform import preprocessor as preprocess
from transform.preprocessing import NUM_OOV_BUCKETS, preprocessing_fn, vocab_filename


def _run_tft(train: pd.DataFrame, other: pd.DataFrame, spec, tmp_path):
    feature_spec = {}
    for key in spec.columns:
        dtype = tf.float32 if key in spec.dense_keys else tf.int64
        feature_spec[key] = tf.io.FixedLenFeature([], dtype)
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(feature_spec))
    fn = functools.partial(preprocessing_fn,
                           custom_config={SPEC_KEY: features.spec_to_dict(spec)})
    with tft_beam.Context(temp_dir=str(tmp_path / "tft"), force_tf_compat_v1=False):
        (_, _), transform_fn = (train.to_dict("records"), metadata) | \
            tft_beam.AnalyzeAndTransformDataset(fn)
        transformed, _ = ((other.to_dict("records"), metadata), transform_fn) | \
            tft_beam.TransformDataset()
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "out"))
    return transformed, tft.TFTransformOutput(str(tmp_path / "out"))


@pytest.mark.slow
def test_transform_matches_expected_and_in_process_preprocessing(tmp_path):
    spec = fixtures.TINY_SPEC
    train = pd.DataFrame({"click": [1, 0, 0, 1, 0, 0], "conversion": [1, 0, 0, 0, 0, 0],
                          "user": [7, 7, 7, 3, 3, 12], "item": [5, 6, 5, 6, 9, 6],
                          "price": np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], np.float32)})
    other = pd.DataFrame({"click": [0, 1], "conversion": [0, 1], "user": [3, 99],
                          "item": [9, 5], "price": np.array([3.5, -1.0], np.float32)})
    rows, tft_output = _run_tft(train, other, spec, tmp_path)

    # Expected by hand: vocab by frequency, ties in decreasing byte order; unseen -> OOV id.
    assert tft_output.vocabulary_by_name(vocab_filename("user")) == [b"7", b"3", b"12"]
    assert tft_output.vocabulary_by_name(vocab_filename("item")) == [b"6", b"5", b"9"]
    mean, std = 3.5, np.std([1, 2, 3, 4, 5, 6])
    assert [int(r["user_xf"]) for r in rows] == [1, 3]  # 99 unseen -> OOV bucket 3
    assert [int(r["item_xf"]) for r in rows] == [2, 1]
    np.testing.assert_allclose(np.ravel([r["price_xf"] for r in rows]),
                               [(3.5 - mean) / std, (-1.0 - mean) / std], rtol=1e-5)
    assert np.ravel([r["conversion_xf"] for r in rows]).tolist() == [0.0, 1.0]

    pre = preprocess.fit(train, spec)
    assert pre.vocab_sizes == {"user": 3 + NUM_OOV_BUCKETS, "item": 3 + NUM_OOV_BUCKETS}
    mine = pre.transform(other)
    for key in ("user_xf", "item_xf", "price_xf", "click_xf", "conversion_xf"):
        np.testing.assert_allclose(mine[key].reshape(-1), np.ravel([r[key] for r in rows]),
                                   rtol=1e-5)


@pytest.mark.slow
def test_transform_agrees_with_in_process_on_random_data(tmp_path):
    spec = fixtures.TINY_SPEC
    frame = fixtures.tiny_frame(400, seed=4)
    train, other = frame.iloc[:300].reset_index(drop=True), frame.iloc[300:].reset_index(drop=True)
    rows, _ = _run_tft(train, other, spec, tmp_path)
    mine = preprocess.fit(train, spec).transform(other)
    for key in ("user_xf", "item_xf", "price_xf"):
        np.testing.assert_allclose(mine[key].reshape(-1), np.ravel([r[key] for r in rows]),
                                   rtol=1e-5,
                                   atol=1e-6, err_msg=key)


def test_adm_without_its_columns_in_the_schema_names_them():
    spec = features.with_adm(fixtures.synthetic_spec())
    inputs = {k: tf.zeros([2, 1], tf.int64) for k in spec.columns}  # no adm_* columns
    with pytest.raises(ValueError, match=r"lacks \['adm_mask_0', 'adm_mask_1', 'adm_mask_2'\]"
                                         r".*schemas/synthetic_adm.pbtxt"):
        preprocessing_fn(inputs, {SPEC_KEY: features.spec_to_dict(spec)})
