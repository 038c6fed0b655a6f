"""trainer.optimizers: LazyAdam against a NumPy reference, the warm-up/decay schedule."""
import math

import numpy as np
import pytest
import tensorflow as tf

from trainer.optimizers import LazyAdam, WarmupDecay, make_optimizer


def numpy_lazy_adam(w, steps, lr=0.1, b1=0.9, b2=0.999, eps=1e-7):
    """Lazy Adam on the rows of each step's gradient only; ``steps`` = [(rows, grads)]."""
    w = w.copy()
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, (rows, grads) in enumerate(steps, start=1):
        summed = {}
        for r, g in zip(rows, grads):  # duplicate rows are summed first (as apply_gradients)
            summed[r] = summed.get(r, 0) + g
        alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        for r, g in summed.items():
            m[r] = b1 * m[r] + (1 - b1) * g
            v[r] = b2 * v[r] + (1 - b2) * g * g
            w[r] -= alpha * m[r] / (np.sqrt(v[r]) + eps)
    return w


def test_lazy_adam_sparse_rows_match_numpy_and_other_rows_never_move():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(6, 3)).astype(np.float32)
    table = tf.Variable(w0)
    opt = LazyAdam(0.1)
    steps = [([1, 3, 1], rng.normal(size=(3, 3)).astype(np.float32)),
             ([0], rng.normal(size=(1, 3)).astype(np.float32)),
             ([3, 5], rng.normal(size=(2, 3)).astype(np.float32))]
    for rows, grads in steps:
        opt.apply_gradients([(tf.IndexedSlices(tf.constant(grads), tf.constant(rows),
                                               tf.constant([6, 3])), table)])
    expected = numpy_lazy_adam(w0.astype(np.float64), steps)
    np.testing.assert_allclose(table.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(table.numpy()[[2, 4]], w0[[2, 4]])  # never in a batch


def test_keras_adam_moves_rows_outside_the_batch_which_lazy_adam_does_not():
    w0 = np.ones((4, 2), np.float32)
    moved = {}
    for name in ("adam", "lazy_adam"):
        table = tf.Variable(w0)
        opt = make_optimizer(name, 0.1)
        for rows in ([0], [1], [1]):  # row 0 only in the first step
            opt.apply_gradients([(tf.IndexedSlices(tf.ones((1, 2)), tf.constant(rows),
                                                   tf.constant([4, 2])), table)])
        moved[name] = float(abs(table.numpy()[0, 0] - (1 - 0.1)))  # beyond its own step
    assert moved["adam"] > 0.05  # momentum keeps moving row 0 in steps 2 and 3
    assert moved["lazy_adam"] < 1e-6


def test_lazy_adam_dense_gradients_are_plain_adam():
    w0 = np.arange(6, dtype=np.float32).reshape(2, 3)
    a, b = tf.Variable(w0), tf.Variable(w0)
    grads = tf.constant(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3))
    lazy, plain = LazyAdam(0.05), tf.keras.optimizers.Adam(0.05)
    for _ in range(3):
        lazy.apply_gradients([(grads, a)])
        plain.apply_gradients([(grads, b)])
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_lazy_adam_trains_an_embedding_in_a_model_and_round_trips():
    model = tf.keras.Sequential([tf.keras.Input((1,), dtype=tf.int64),
                                 tf.keras.layers.Embedding(10, 2), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(1, activation="sigmoid")])
    model.compile(LazyAdam(0.01), "binary_crossentropy")
    table = model.layers[0].embeddings.numpy().copy()
    model.fit(np.array([[1], [2], [1]]), np.array([1.0, 0.0, 1.0]), verbose=0)
    after = model.layers[0].embeddings.numpy()
    assert not np.allclose(after[[1, 2]], table[[1, 2]])
    np.testing.assert_array_equal(after[[0, 3, 9]], table[[0, 3, 9]])
    clone = tf.keras.optimizers.deserialize(tf.keras.optimizers.serialize(model.optimizer))
    assert isinstance(clone, LazyAdam) and clone.get_config() == model.optimizer.get_config()


@pytest.mark.parametrize("schedule, expected", [
    ("constant", [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]),
    ("linear", [0.25, 0.5, 0.75, 1.0, 1.0, 0.85, 0.7]),
    ("cosine", [0.25, 0.5, 0.75, 1.0, 1.0, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 6)),
                0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 3))])])
def test_warmup_decay_values(schedule, expected):
    sched = WarmupDecay(2.0, schedule, warmup_steps=4, decay_steps=10, floor=0.1)
    values = [float(sched(step)) for step in range(7)]
    np.testing.assert_allclose(values, [2.0 * e for e in expected], rtol=1e-6)
    assert float(sched(1000)) == pytest.approx(2.0 if schedule == "constant" else 0.2)
    clone = WarmupDecay.from_config(sched.get_config())
    assert clone.get_config() == sched.get_config()


@pytest.mark.parametrize("kwargs, message", [
    ({"base": 0.0}, r"`base` must be a positive number, received: base=0.0"),
    ({"schedule": "step"}, r"`schedule` must be one of \['constant', 'cosine', 'linear'\]"),
    ({"warmup_steps": -1}, r"`warmup_steps` must be an integer >= 0"),
    ({"schedule": "cosine", "warmup_steps": 5, "decay_steps": 5},
     r"`decay_steps` must be greater than warmup_steps=5, received: decay_steps=5"),
    ({"floor": 1.5}, r"`floor` must be a number in \[0, 1\], received: floor=1.5"),
])
def test_warmup_decay_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WarmupDecay(**{"base": 1.0, "decay_steps": 10, **kwargs})


def test_make_optimizer_names():
    assert isinstance(make_optimizer("adagrad", 0.1), tf.keras.optimizers.Adagrad)
    with pytest.raises(ValueError, match=r"`optimizer` must be one of \['adam', 'lazy_adam', "
                                         r"'adagrad'\], received: optimizer='sgd'"):
        make_optimizer("sgd", 0.1)
