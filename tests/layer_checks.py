"""Reusable checks for the layers in ``trainer/layers`` so each layer test stays a few lines.

Every check takes a layer *factory* (a zero-argument callable returning a fresh, unbuilt layer)
where it must build more than one copy, so the same check works for every backbone:

- ``check_config_round_trip``: registered under ``funnelrank``, ``from_config(get_config())``
  gives the same config and, with the same weights, the same output.
- ``set_golden_weights`` + the ``np_*`` helpers: deterministic weights for a golden output
  computed independently with NumPy in the test.
- ``check_rejects``: a bad constructor argument raises ValueError naming the received value.
- ``check_fit_one_step`` / ``check_save_load`` / ``check_mirrored_step`` on a tiny functional
  model (``backbone_model``: ``Input[F] -> layer -> {task: Dense(1, sigmoid)}``); the
  ``check_backbone_*`` shortcuts build that model for a backbone factory.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, Mapping, Sequence

import numpy as np
import pytest
import tensorflow as tf

from trainer.layers.common import PACKAGE

TASKS2 = ("ctr", "cvr")
TASKS3 = ("click", "view", "conversion")
BATCH, DIM = 8, 6
# The mirrored step runs fit's graph train function (the production path). Tracing it for 2
# replicas is ~5 s per tiny model on 2 shared cores, most of this suite's runtime; True runs the
# 2-replica step eagerly instead (~1 s each, about 40 s less for the whole suite).
MIRRORED_RUN_EAGERLY = False


def features(batch: int = BATCH, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, dim)).astype(np.float32)


def labels(tasks: Sequence[str], batch: int = BATCH, seed: int = 1) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {t: rng.integers(0, 2, size=(batch, 1)).astype(np.float32) for t in tasks}


def to_numpy(out):
    return tf.nest.map_structure(lambda t: np.asarray(t), out)


def assert_close(actual, expected, atol=1e-5):
    actual, expected = to_numpy(actual), to_numpy(expected)
    if isinstance(expected, Mapping):
        assert sorted(actual) == sorted(expected)
        for k in expected:
            np.testing.assert_allclose(actual[k], expected[k], atol=atol, err_msg=str(k))
    else:
        np.testing.assert_allclose(actual, expected, atol=atol)


# ----------------------------------------------------------------------------- config / args
def check_config_round_trip(make_layer: Callable[[], tf.keras.layers.Layer], x) -> None:
    """Registration, ``from_config(get_config())`` identity, and same output with same weights."""
    layer = make_layer()
    cls = type(layer)
    assert tf.keras.utils.get_registered_name(cls) == f"{PACKAGE}>{cls.__name__}"
    out = layer(x, training=False)
    config = layer.get_config()
    clone = cls.from_config(config)
    assert clone.get_config() == config
    clone(x, training=False)
    clone.set_weights(layer.get_weights())
    assert_close(clone(x, training=False), out)
    # The generic Keras path (what load_model uses) finds the class by its registered name.
    revived = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
    assert type(revived) is cls and revived.get_config() == config


def check_rejects(cls, base_kwargs: Mapping, name: str, value, exc=ValueError) -> None:
    """``cls(**base_kwargs, name=value)`` raises, naming the argument and the received value
    as ``name=<repr(value)>`` (the format of ``trainer.layers.common``'s checks)."""
    with pytest.raises(exc, match=re.escape(f"{name}={value!r}")):
        cls(**{**base_kwargs, name: value})


# ----------------------------------------------------------------------------- golden values
def set_golden_weights(layer: tf.keras.layers.Layer, scale: float = 0.5) -> Dict[str, np.ndarray]:
    """Assigns every variable a fixed, distinct, non-random pattern; returns them by name.

    A single constant for every variable would make all experts, gates and columns identical
    (uniform softmax, symmetric tasks) and hide wiring bugs, so each variable ``i`` gets
    ``scale * sin(0.7 * arange(size) + i + 1)``. Keys are variable names without the layer's
    own prefix and ``:0``, e.g. ``shared/expert_0/dense_0/kernel``.
    """
    weights = {}
    prefix = layer.name + "/"
    for i, var in enumerate(layer.weights):
        size = int(np.prod(var.shape))
        value = (scale * np.sin(0.7 * np.arange(size) + i + 1)).reshape(var.shape)
        var.assign(value.astype(var.dtype.as_numpy_dtype))
        name = var.name[:-2] if var.name.endswith(":0") else var.name
        weights[name[len(prefix):] if name.startswith(prefix) else name] = value
    return weights


def np_relu(x):
    return np.maximum(x, 0.0)


def np_softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def np_dense(x, w, prefix, activation=None, bias=True):
    y = x @ w[f"{prefix}/kernel"] + (w[f"{prefix}/bias"] if bias else 0.0)
    return np_relu(y) if activation == "relu" else y


def np_mlp(x, w, prefix, num_layers, activation="relu"):
    """``trainer.layers.mlp.MLP`` without batch norm / dropout: relu after every layer."""
    for i in range(num_layers):
        x = np_dense(x, w, f"{prefix}/dense_{i}", activation)
    return x


def np_gate(gate_input, experts, w, prefix, temperature=1.0):
    """``SoftmaxGate``: softmax(x W / T) mixes ``experts`` ``[B, E, d]`` -> ``[B, d]``."""
    g = np_softmax(gate_input @ w[f"{prefix}/logits/kernel"] / temperature)
    return np.einsum("be,bed->bd", g, experts)


def np_layer_norm(x, w, prefix, eps=1e-3):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w[f"{prefix}/gamma"] + w[f"{prefix}/beta"]


# ----------------------------------------------------------------------------- training / saving
def backbone_model(make_layer: Callable[[], tf.keras.layers.Layer], tasks: Sequence[str],
                   dim: int = DIM, seed: int = 0) -> tf.keras.Model:
    """``Input[dim] -> backbone -> {task: Dense(1, sigmoid)}``, the model assembly in small.

    Seeded: with tiny ReLU experts an unlucky initialisation can leave one expert dead on the
    whole batch (no gradient anywhere in it), which would make ``check_fit_one_step`` flaky.
    """
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input(shape=(dim,), name="x")
    reps = make_layer()(inputs)
    assert sorted(reps) == sorted(tasks), sorted(reps)
    outputs = {t: tf.keras.layers.Dense(1, activation="sigmoid", name=t)(reps[t])
               for t in tasks}
    return tf.keras.Model(inputs, outputs)


def _compile(model, learning_rate=0.05, run_eagerly=False):
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate),
                  loss=tf.keras.losses.BinaryCrossentropy(), run_eagerly=run_eagerly)


def _backbone_of(model):
    return [layer for layer in model.layers if layer.weights and
            not isinstance(layer, (tf.keras.layers.Dense, tf.keras.layers.InputLayer))]


def check_fit_one_step(model: tf.keras.Model, x, y, layer: tf.keras.layers.Layer = None) -> None:
    """One optimizer step: the loss is finite and EVERY trainable variable of the layer under
    test moved (every sub-layer receives gradient, i.e. it is wired into the output).

    Runs eagerly (tracing the train function costs seconds per model on 2 cores); the graph
    path is covered by ``check_mirrored_step``, which keeps ``fit``'s default graph mode.
    """
    layer = layer or _backbone_of(model)[0]
    _compile(model, run_eagerly=True)
    before = {v.name: v.numpy().copy() for v in layer.trainable_variables}
    assert before, "layer has no trainable variables"
    history = model.fit(x, y, batch_size=len(next(iter(tf.nest.flatten(x)))), epochs=1,
                        verbose=0)
    assert np.isfinite(history.history["loss"][0])
    frozen = [v.name for v in layer.trainable_variables
              if np.array_equal(v.numpy(), before[v.name])]
    assert not frozen, f"variables without gradient: {frozen}"


def check_save_load(model: tf.keras.Model, x, path) -> None:
    """``model.save(save_format="tf")`` -> ``load_model`` -> same predictions."""
    expected = model.predict(x, verbose=0)
    model.save(str(path), save_format="tf")
    loaded = tf.keras.models.load_model(str(path))
    assert_close(loaded.predict(x, verbose=0), expected)


def check_mirrored_step(strategy: tf.distribute.Strategy, build_model: Callable[[], tf.keras.Model],
                        x, y, save_path=None) -> tf.keras.Model:
    """One training step under MirroredStrategy with 2 replicas (model built in its scope).

    With ``save_path`` the trained model then goes through ``check_save_load``: the production
    path (train under the strategy, export a SavedModel) in one model build, which keeps the
    suite fast on 2 cores (SavedModel tracing is the most expensive step of these checks).
    """
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = build_model()
        _compile(model, run_eagerly=MIRRORED_RUN_EAGERLY)
    before = [v.numpy().copy() for v in model.trainable_variables]
    batch = len(next(iter(tf.nest.flatten(x))))
    history = model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
    if save_path is not None:
        check_save_load(model, x, save_path)
    return model


# ----------------------------------------------------------------------------- backbone shortcuts
def check_backbone_fit_one_step(make_layer, tasks) -> None:
    """``check_fit_one_step`` on the tiny backbone model (no strategy)."""
    check_fit_one_step(backbone_model(make_layer, tasks), features(), labels(tasks))


def check_backbone_mirrored_and_saved(strategy, make_layer, tasks, path) -> None:
    """``check_mirrored_step`` then ``check_save_load`` on the tiny backbone model."""
    check_mirrored_step(strategy, lambda: backbone_model(make_layer, tasks), features(),
                        labels(tasks), save_path=path)


def check_output_shapes(make_layer, tasks, width: int, x=None) -> None:
    x = features() if x is None else x
    out = make_layer()(x, training=False)
    assert sorted(out) == sorted(tasks)
    for t in tasks:
        assert out[t].shape == (x.shape[0], width), (t, out[t].shape)
