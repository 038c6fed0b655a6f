"""FeatureEmbedding: sparse id embeddings + dense pass-through, OOV ids into the last bucket."""
import numpy as np
import pytest
import tensorflow as tf

from tests import layer_checks as lc
from trainer.layers.embedding import FeatureEmbedding

VOCAB = {"user": 5, "item": 3}
DENSE = ["price", "age"]


def make_layer():
    return FeatureEmbedding(VOCAB, DENSE, embedding_dim=4, name="embedding")


def batch(n=lc.BATCH, seed=0):
    rng = np.random.default_rng(seed)
    return {"user": rng.integers(0, 5, size=(n, 1)).astype(np.int64),   # [B, 1] ids
            "item": rng.integers(0, 3, size=(n,)).astype(np.int64),     # [B] ids
            "price": rng.normal(size=(n, 1)).astype(np.float32),
            "age": rng.normal(size=(n,)).astype(np.float32)}


def embedding_model():
    inputs = {"user": tf.keras.Input((1,), dtype=tf.int64, name="user"),
              "item": tf.keras.Input((1,), dtype=tf.int64, name="item"),
              "price": tf.keras.Input((1,), name="price"),
              "age": tf.keras.Input((1,), name="age")}
    h = make_layer()(inputs)
    return tf.keras.Model(inputs, {"ctr": tf.keras.layers.Dense(1, "sigmoid", name="ctr")(h)})


def model_batch():
    return {k: v.reshape(-1, 1) for k, v in batch().items()}


def test_config_round_trip():
    lc.check_config_round_trip(make_layer, batch())


def test_golden_lookup_and_concat_order():
    layer = make_layer()
    x = batch()
    out = layer(x)
    assert out.shape == (lc.BATCH, 2 * 4 + 2)
    w = lc.set_golden_weights(layer)
    assert sorted(w) == ["embedding/item/embeddings", "embedding/user/embeddings"]
    expected = np.concatenate([w["embedding/user/embeddings"][x["user"][:, 0]],
                               w["embedding/item/embeddings"][x["item"]],
                               x["price"], x["age"][:, None]], axis=1)
    lc.assert_close(layer(x), expected)


def test_out_of_range_ids_go_to_the_last_oov_bucket():
    layer = make_layer()
    x = batch(n=4)
    x["user"] = np.array([[-1], [5], [99], [4]], np.int64)
    x["item"] = np.array([-7, 3, 0, 2], np.int64)
    layer(x)
    w = lc.set_golden_weights(layer)
    out = layer(x).numpy()
    np.testing.assert_allclose(out[:, :4], w["embedding/user/embeddings"][[4, 4, 4, 4]], atol=1e-6)
    np.testing.assert_allclose(out[:, 4:8], w["embedding/item/embeddings"][[2, 2, 0, 2]], atol=1e-6)
    graph_out = tf.function(layer)(x)  # same mapping in graph mode (serving)
    np.testing.assert_allclose(graph_out.numpy(), out, atol=1e-6)


def test_sparse_only_and_dense_only():
    x = batch()
    assert FeatureEmbedding(VOCAB, [], 3)(x).shape == (lc.BATCH, 6)
    assert FeatureEmbedding({}, DENSE)(x).shape == (lc.BATCH, 2)


def test_missing_feature_is_a_clear_error():
    x = batch()
    del x["price"]
    with pytest.raises(KeyError, match="price"):
        make_layer()(x)


@pytest.mark.parametrize("name,value", [
    ("embedding_dim", 0), ("embedding_dim", "8"), ("sparse_vocab_sizes", [5]),
    ("embeddings_regularizer_l2", -1.0)])
def test_invalid_args(name, value):
    lc.check_rejects(FeatureEmbedding, {"sparse_vocab_sizes": VOCAB, "dense_keys": DENSE},
                     name, value)


def test_invalid_vocab_size_names_the_feature():
    with pytest.raises(ValueError, match=r"sparse_vocab_sizes\['user'\]=0"):
        FeatureEmbedding({"user": 0}, DENSE)


def test_no_feature_at_all_is_rejected():
    with pytest.raises(ValueError, match=r"sparse_vocab_sizes=\{\}, dense_keys=\[\]"):
        FeatureEmbedding({}, [])


def test_fit_one_step():
    model = embedding_model()
    lc.check_fit_one_step(model, model_batch(), {"ctr": lc.labels(["ctr"])["ctr"]},
                          layer=model.get_layer("embedding"))


def test_mirrored_step_then_save_load(two_cpu_strategy, tmp_path):
    lc.check_mirrored_step(two_cpu_strategy, embedding_model, model_batch(),
                           {"ctr": lc.labels(["ctr"])["ctr"]}, save_path=tmp_path / "m")
