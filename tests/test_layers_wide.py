"""WideLogits: per-task linear logits over ids, id crosses and dense features (Wide & Deep)."""
import numpy as np
import pytest
import tensorflow as tf

from tests import layer_checks as lc
from trainer.layers.wide import WideLogits

VOCAB = {"user": 5, "item": 3}
DENSE = ["price", "age"]
TASKS = ["ctr", "cvr"]


def make_layer(**kw):
    return WideLogits(VOCAB, DENSE, TASKS, crosses=[["user", "item"]], name="wide", **kw)


def batch(n=lc.BATCH, seed=0):
    rng = np.random.default_rng(seed)
    return {"user": rng.integers(0, 5, size=(n, 1)).astype(np.int64),
            "item": rng.integers(0, 3, size=(n,)).astype(np.int64),
            "price": rng.normal(size=(n, 1)).astype(np.float32),
            "age": rng.normal(size=(n,)).astype(np.float32)}


def with_oov(x):
    x = dict(x)
    x["user"] = np.array([[-1], [5], [99], [4], [0], [0], [2], [1]], np.int64)
    x["item"] = np.array([-7, 3, 0, 2, 1, 1, 0, 2], np.int64)
    return x


def wide_model(**kw):
    inputs = {"user": tf.keras.Input((1,), dtype=tf.int64, name="user"),
              "item": tf.keras.Input((1,), dtype=tf.int64, name="item"),
              "price": tf.keras.Input((1,), name="price"),
              "age": tf.keras.Input((1,), name="age")}
    logits = make_layer(**kw)(inputs)
    return tf.keras.Model(inputs, {t: tf.keras.layers.Activation("sigmoid", name=t)(logits[t])
                                   for t in TASKS})


def model_batch():
    return {k: v.reshape(-1, 1) for k, v in batch().items()}


def numpy_logits(layer, x):
    """The wide logits from the weights, with NumPy: sum of the id rows, the cross row
    (user * 3 + item), and the dense kernel; out-of-range ids -> the last id."""
    user = np.asarray(x["user"]).reshape(-1)
    item = np.asarray(x["item"]).reshape(-1)
    user = np.where((user < 0) | (user >= 5), 4, user)
    item = np.where((item < 0) | (item >= 3), 2, item)
    w = {v.name.split("/")[-2] if "dense" not in v.name else "dense": v.numpy()
         for v in layer.weights}
    dense = np.stack([np.asarray(x[k], np.float32).reshape(-1) for k in DENSE], axis=1)
    total = w["user"][user] + w["item"][item] + w["user_x_item"][user * 3 + item] + \
        dense @ w["dense"]
    return {t: total[:, i:i + 1] for i, t in enumerate(TASKS)}


def test_starts_at_zero_then_golden_against_numpy():
    layer = make_layer()
    x = with_oov(batch())
    out = layer(x)
    for t in TASKS:  # zero-initialised: the network starts as its deep part alone
        np.testing.assert_array_equal(out[t].numpy(), np.zeros((lc.BATCH, 1)))
    lc.set_golden_weights(layer)
    assert sorted(v.name for v in layer.weights) == [
        "wide/wide/dense/kernel:0", "wide/wide/item/embeddings:0", "wide/wide/user/embeddings:0",
        "wide/wide/user_x_item/embeddings:0"]
    assert layer.cross_tables["user_x_item"].embeddings.shape == (15, 2)
    lc.assert_close(layer(x), numpy_logits(layer, x))


def test_large_cross_is_hashed_into_the_buckets():
    layer = make_layer(cross_buckets=7)
    x = batch()
    layer(x)
    assert layer.cross_tables["user_x_item"].embeddings.shape == (7, 2)
    rows = layer.cross_ids(x, ("user", "item")).numpy()
    exact = x["user"].reshape(-1) * 3 + x["item"]
    assert rows.min() >= 0 and rows.max() < 7
    expected = tf.strings.to_hash_bucket_fast([str(v) for v in exact], 7).numpy()
    np.testing.assert_array_equal(rows, expected)


def test_batch_rows_l2_equals_numpy_reference():
    layer = make_layer(l2_batch_rows=0.2)
    x = with_oov(batch())
    layer(x)
    lc.set_golden_weights(layer)
    layer(x)
    user = np.array([4, 4, 4, 4, 0, 0, 2, 1])
    item = np.array([2, 2, 0, 2, 1, 1, 0, 2])
    tables = {n: layer.tables[n].embeddings.numpy() for n in VOCAB}
    cross = layer.cross_tables["user_x_item"].embeddings.numpy()[user * 3 + item]
    squared = np.sum(tables["user"][user] ** 2) + np.sum(tables["item"][item] ** 2) + \
        np.sum(cross ** 2)
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(layer.losses[0]), 0.2 * squared / 8, rtol=1e-6)


def test_config_round_trip():
    lc.check_config_round_trip(lambda: make_layer(cross_buckets=11, l2_batch_rows=0.1),
                               batch())


@pytest.mark.parametrize("name, value", [
    ("cross_buckets", 0), ("l2_batch_rows", -1.0), ("tasks", []),
    ("crosses", [["user", "shop"]]), ("crosses", [["user", "user"]]), ("crosses", ["user"])])
def test_invalid_args(name, value):
    kwargs = {"sparse_vocab_sizes": VOCAB, "dense_keys": DENSE, "tasks": TASKS}
    if name == "crosses":
        with pytest.raises(ValueError, match=r"`crosses\[0\]` must be a pair of two different"):
            WideLogits(**kwargs, crosses=value)
    else:
        lc.check_rejects(WideLogits, kwargs, name, value)


def test_missing_feature_is_a_clear_error():
    x = batch()
    del x["age"]
    with pytest.raises(KeyError, match=r"inputs lack feature\(s\) \['age'\]"):
        make_layer()(x)


def test_fit_one_step():
    model = wide_model(l2_batch_rows=0.01)
    lc.check_fit_one_step(model, model_batch(), lc.labels(TASKS),
                          layer=model.get_layer("wide"))


def test_mirrored_step_then_save_load(two_cpu_strategy, tmp_path):
    lc.check_mirrored_step(two_cpu_strategy, wide_model, model_batch(), lc.labels(TASKS),
                           save_path=tmp_path / "m")
