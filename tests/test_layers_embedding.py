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


# ----------------------------------------------------------------------------- fused tables
def fused_layer(**kw):
    return FeatureEmbedding(VOCAB, DENSE, embedding_dim=4, fused_tables=True, name="embedding",
                            **kw)


def with_oov(x):
    x = dict(x)
    x["user"] = np.array([[-1], [5], [99], [4], [0], [0], [2], [1]], np.int64)
    x["item"] = np.array([-7, 3, 0, 2, 1, 1, 0, 2], np.int64)
    return x


def test_fused_table_gives_the_per_feature_outputs_for_the_same_rows():
    x = with_oov(batch())
    per_feature = make_layer()
    per_feature(x)
    w = lc.set_golden_weights(per_feature)
    fused = fused_layer()
    fused(x)
    assert [v.name for v in fused.weights] == ["embedding/embedding/fused/embeddings:0"]
    assert fused.weights[0].shape == (5 + 3, 4)
    assert fused.row_offsets == {"user": 0, "item": 5}
    fused.weights[0].assign(np.concatenate([w["embedding/user/embeddings"],
                                            w["embedding/item/embeddings"]]))
    lc.assert_close(fused(x), per_feature(x), atol=1e-7)
    lc.assert_close(tf.function(fused)(x), per_feature(x), atol=1e-7)  # graph mode (serving)


@pytest.mark.parametrize("fused", [False, True])
def test_whole_table_l2_is_the_same_in_both_forms(fused):
    layer = FeatureEmbedding(VOCAB, DENSE, 4, embeddings_regularizer_l2=0.01,
                             fused_tables=fused, name="embedding")
    layer(batch())
    w = lc.set_golden_weights(layer)
    expected = 0.01 * sum(np.sum(np.square(v)) for v in w.values())
    np.testing.assert_allclose(float(tf.add_n(layer.losses)), expected, rtol=1e-5)


# ----------------------------------------------------------------------------- batch-row L2
@pytest.mark.parametrize("fused", [False, True])
def test_batch_rows_l2_equals_numpy_reference(fused):
    x = with_oov(batch())  # duplicate ids and OOV ids: each occurrence counts
    layer = FeatureEmbedding(VOCAB, DENSE, 4, l2_batch_rows=0.3, fused_tables=fused,
                             name="embedding")
    layer(x)
    lc.set_golden_weights(layer)
    tables = {"user": layer.weights[0].numpy()[:5], "item": layer.weights[0].numpy()[5:]} \
        if fused else {n: layer.tables[n].embeddings.numpy() for n in VOCAB}
    rows = {"user": np.array([4, 4, 4, 4, 0, 0, 2, 1]), "item": np.array([2, 2, 0, 2, 1, 1, 0, 2])}
    expected = 0.3 * sum(np.mean(np.sum(np.square(tables[f][rows[f]]), axis=1)) for f in VOCAB)
    layer(x)
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(layer.losses[0]), expected, rtol=1e-6)


@pytest.mark.parametrize("fused", [False, True])
def test_batch_rows_l2_touches_only_the_rows_in_the_batch(fused):
    x = batch(n=4)
    x["user"] = np.array([[1], [1], [3], [3]], np.int64)
    x["item"] = np.array([0, 0, 0, 0], np.int64)
    layer = FeatureEmbedding(VOCAB, DENSE, 4, l2_batch_rows=1.0, fused_tables=fused)
    layer(x)
    lc.set_golden_weights(layer)
    with tf.GradientTape() as tape:
        layer(x)
        loss = tf.add_n(layer.losses)
    tables = [layer.tables["fused"].embeddings] if fused else [
        layer.tables["user"].embeddings, layer.tables["item"].embeddings]
    grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, tables)]
    used = np.concatenate([np.abs(g).sum(axis=1) > 0 for g in grads])
    #        user rows 0..4                      item rows 0..2
    assert used.tolist() == [False, True, False, True, False, True, False, False]


# ----------------------------------------------------------------------------- dropout
def test_embedding_dropout_only_in_training_and_never_on_dense():
    x = batch(n=256)
    layer = FeatureEmbedding(VOCAB, DENSE, 4, dropout=0.5)
    inference = layer(x, training=False).numpy()
    reference = FeatureEmbedding(VOCAB, DENSE, 4)
    reference(x)
    reference.set_weights(layer.get_weights())
    np.testing.assert_array_equal(inference, reference(x).numpy())
    trained = layer(x, training=True).numpy()
    np.testing.assert_array_equal(trained[:, 8:], inference[:, 8:])  # dense untouched
    sparse, full = trained[:, :8], inference[:, :8]
    dropped = sparse == 0
    assert 0.4 < dropped.mean() < 0.6
    np.testing.assert_allclose(sparse[~dropped], 2.0 * full[~dropped], rtol=1e-6)


@pytest.mark.parametrize("fused", [False, True])
def test_feature_dropout_drops_whole_embeddings(fused):
    x = batch(n=400)
    layer = FeatureEmbedding(VOCAB, DENSE, 4, feature_dropout=0.25, fused_tables=fused)
    inference = layer(x, training=False).numpy()
    trained = layer(x, training=True).numpy()
    np.testing.assert_array_equal(trained[:, 8:], inference[:, 8:])
    blocks, full = trained[:, :8].reshape(-1, 2, 4), inference[:, :8].reshape(-1, 2, 4)
    zero = np.all(blocks == 0, axis=-1)
    kept = np.isclose(blocks, full / 0.75, rtol=1e-6).all(axis=-1)
    assert np.all(zero | kept)  # every feature's vector is dropped or kept whole
    assert 0.17 < zero.mean() < 0.33
    assert zero[:, 0].tolist() != zero[:, 1].tolist()  # per example AND per feature


@pytest.mark.parametrize("name,value", [
    ("l2_batch_rows", -0.1), ("dropout", 1.0), ("feature_dropout", -0.2),
    ("fused_tables", "yes")])
def test_invalid_new_args(name, value):
    lc.check_rejects(FeatureEmbedding, {"sparse_vocab_sizes": VOCAB, "dense_keys": DENSE},
                     name, value)


def test_config_round_trip_with_every_option():
    lc.check_config_round_trip(
        lambda: fused_layer(l2_batch_rows=0.1, dropout=0.2, feature_dropout=0.1,
                            embeddings_regularizer_l2=0.01), batch())


def regularised_model():
    inputs = {"user": tf.keras.Input((1,), dtype=tf.int64, name="user"),
              "item": tf.keras.Input((1,), dtype=tf.int64, name="item"),
              "price": tf.keras.Input((1,), name="price"),
              "age": tf.keras.Input((1,), name="age")}
    h = fused_layer(l2_batch_rows=0.1, dropout=0.1, feature_dropout=0.1)(inputs)
    return tf.keras.Model(inputs, {"ctr": tf.keras.layers.Dense(1, "sigmoid", name="ctr")(h)})


def test_fused_fit_one_step_with_batch_l2():
    model = regularised_model()
    assert len(model.losses) == 1  # the batch-row L2 reaches the model's losses
    lc.check_fit_one_step(model, model_batch(), {"ctr": lc.labels(["ctr"])["ctr"]},
                          layer=model.get_layer("embedding"))


def test_fused_mirrored_step_then_save_load(two_cpu_strategy, tmp_path):
    lc.check_mirrored_step(two_cpu_strategy, regularised_model, model_batch(),
                           {"ctr": lc.labels(["ctr"])["ctr"]}, save_path=tmp_path / "m")


# ----------------------------------------------------------------------------- config wiring
def network_with(**model):
    from tests import fixtures
    from schemas import config as config_lib
    from trainer.model import build_network

    _, _, info = fixtures.tiny_arrays(200)
    base = {"backbone": "mmoe", "backbone_args": {"num_experts": 2, "expert_units": [8]},
            "embedding_dim": 4, "tower_units": [8]}
    return build_network(config_lib.from_dict({"model": {**base, **model}}).model, info)


def test_model_config_keys_reach_the_embedding():
    network = network_with(embedding_l2=0.5, embedding_l2_mode="batch", embedding_dropout=0.1,
                           embedding_feature_dropout=0.2, embedding_fused=True)
    layer = network.get_layer("embedding")
    assert (layer.l2_batch_rows, layer.embeddings_regularizer_l2, layer.dropout,
            layer.feature_dropout, layer.fused_tables) == (0.5, 0.0, 0.1, 0.2, True)
    assert len(network.losses) == 1
    assert "embedding/embedding/fused/embeddings:0" in [v.name for v in network.weights]
    table = network_with(embedding_l2=0.5).get_layer("embedding")  # the default mode
    assert (table.embeddings_regularizer_l2, table.l2_batch_rows, table.fused_tables) == (
        0.5, 0.0, False)


@pytest.mark.parametrize("key,value", [
    ("embedding_l2_mode", "rows"), ("embedding_dropout", 1.0),
    ("embedding_feature_dropout", -0.1), ("embedding_l2", -1.0)])
def test_invalid_embedding_config_is_a_config_error(key, value):
    from schemas import config as config_lib

    with pytest.raises(config_lib.ConfigError, match=f"model.{key}={value!r}"):
        config_lib.from_dict({"model": {key: value}})
