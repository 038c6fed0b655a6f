"""trainer.optimizers: FusedAdam and LazyAdam against NumPy references, the warm-up/decay
schedule."""
import math

import numpy as np
import pytest
import tensorflow as tf

from trainer.optimizers import FusedAdam, LazyAdam, WarmupDecay, make_optimizer


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


def numpy_adam(w, grads, lr=0.05, b1=0.9, b2=0.999, eps=1e-7):
    """Dense Adam (Kingma & Ba, Algorithm 1; bias correction folded into the step size)."""
    w, m, v = w.copy(), np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w -= lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
    return w


def _dense_grads(count=4, shape=(3, 2)):
    rng = np.random.default_rng(1)
    return [rng.normal(size=shape).astype(np.float32) for _ in range(count)]


def test_fused_adam_matches_numpy_and_keras_adam_with_the_same_slots():
    w0 = np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2)
    fused_w, plain_w = tf.Variable(w0), tf.Variable(w0)
    fused, plain = FusedAdam(0.05), tf.keras.optimizers.Adam(0.05)
    grads = _dense_grads()
    for g in grads:
        fused.apply_gradients([(tf.constant(g), fused_w)])
        plain.apply_gradients([(tf.constant(g), plain_w)])
    np.testing.assert_allclose(fused_w.numpy(), numpy_adam(w0.astype(np.float64), grads),
                               rtol=1e-5, atol=1e-6)
    # The same maths as tf-keras' unfused ops, to float32 rounding.
    np.testing.assert_allclose(fused_w.numpy(), plain_w.numpy(), rtol=1e-5, atol=2e-6)
    # The same slot variables as tf-keras' Adam: a checkpoint of one loads into the other.
    assert [v.shape for v in fused.variables] == [v.shape for v in plain.variables]
    for a, b in zip(fused.variables, plain.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=2e-6)


def test_fused_adam_one_kernel_per_dense_weight():
    var, opt = tf.Variable(tf.ones((3, 2))), FusedAdam(0.1)
    step = tf.function(lambda g: opt.apply_gradients([(g, var)]))
    graph = step.get_concrete_function(tf.TensorSpec((3, 2))).graph
    types = [op.type for op in graph.get_operations()]
    assert types.count("ResourceApplyAdam") == 1
    assert "AssignSubVariableOp" not in types  # tf-keras' unfused update writes the weight so


def test_fused_adam_follows_a_schedule_like_keras_adam():
    schedule = WarmupDecay(0.1, "linear", warmup_steps=2, decay_steps=5)
    w0 = np.ones((4, 2), np.float32)
    out = {}
    for name, opt in (("fused", FusedAdam(schedule)), ("plain", tf.keras.optimizers.Adam(
            WarmupDecay(0.1, "linear", warmup_steps=2, decay_steps=5)))):
        dense = tf.Variable(w0)
        for g in _dense_grads(5, (4, 2)):
            opt.apply_gradients([(tf.constant(g), dense)])
        out[name] = dense.numpy()
    np.testing.assert_allclose(out["fused"], out["plain"], rtol=1e-5, atol=2e-6)


def _sparse_steps():
    """Per step the (rows, [n, 2] grads, [5, 2] dense sum) of a 5-row table: duplicates, rows
    absent for a while (their moments decay, they keep moving), an empty step."""
    rng = np.random.default_rng(7)
    steps = []
    for rows in [[2, 0, 2], [4], [1, 1, 1, 3], [], [0, 4]]:
        grads = rng.normal(size=(len(rows), 2)).astype(np.float32)
        dense = np.zeros((5, 2), np.float64)
        np.add.at(dense, rows, grads)
        steps.append((rows, grads, dense))
    return steps


def test_fused_adam_sparse_gradients_are_keras_adams_dense_adam_in_one_kernel():
    w0 = np.linspace(-1, 1, 10, dtype=np.float32).reshape(5, 2)
    fused_w, plain_w = tf.Variable(w0), tf.Variable(w0)
    fused, plain = FusedAdam(0.05), tf.keras.optimizers.Adam(0.05)
    steps = _sparse_steps()
    for rows, grads, _ in steps:
        for opt, var in ((fused, fused_w), (plain, plain_w)):
            opt.apply_gradients([(tf.IndexedSlices(tf.constant(grads.reshape(-1, 2)),
                                                   tf.constant(rows, tf.int64),
                                                   tf.constant([5, 2], tf.int64)), var)])
    dense_grads = [dense for _, _, dense in steps]
    np.testing.assert_allclose(fused_w.numpy(), plain_w.numpy(), rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(fused_w.numpy(), numpy_adam(w0.astype(np.float64), dense_grads),
                               rtol=1e-5, atol=1e-6)
    for a, b in zip(fused.variables, plain.variables):  # slots too
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=2e-6)
    var, opt = tf.Variable(w0), FusedAdam(0.05)
    step = tf.function(lambda g: opt.apply_gradients([(g, var)]))
    graph = step.get_concrete_function(tf.IndexedSlicesSpec(
        [5, 2], tf.float32, indices_dtype=tf.int64, dense_shape_dtype=tf.int64)).graph
    types = [op.type for op in graph.get_operations()]
    assert types.count("ResourceApplyAdam") == 1 and "ResourceScatterAdd" not in types


def _two_cpu_strategy():
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(cpus) == 2, "tests/conftest.py configures 2 logical CPU devices"
    return tf.distribute.MirroredStrategy(
        cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())


def test_fused_adam_under_mirrored_strategy_matches_one_device():
    strategy = _two_cpu_strategy()
    w0 = np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2)
    grads = _dense_grads(3)
    with strategy.scope():
        var, opt = tf.Variable(w0), FusedAdam(0.05)

    @tf.function
    def step(g):
        # Each replica contributes half of the gradient: their sum is g.
        strategy.run(lambda: opt.apply_gradients([(g / 2, var)]))

    for g in grads:
        step(tf.constant(g))
    expected = numpy_adam(w0.astype(np.float64), grads)
    for component in strategy.experimental_local_results(var):
        np.testing.assert_allclose(component.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_fused_adam_sparse_gradients_under_mirrored_strategy_match_one_device():
    strategy = _two_cpu_strategy()
    w0 = np.linspace(-1, 1, 10, dtype=np.float32).reshape(5, 2)
    with strategy.scope():
        var, opt = tf.Variable(w0), FusedAdam(0.05)

    @tf.function
    def step(rows, grads):
        def replica_fn():  # replica i holds every other row of the step's gradient
            i = tf.distribute.get_replica_context().replica_id_in_sync_group
            return opt.apply_gradients([(tf.IndexedSlices(
                grads[i::2], rows[i::2], tf.constant([5, 2], tf.int64)), var)])
        strategy.run(replica_fn)

    steps = _sparse_steps()
    for rows, grads, _ in steps:
        step(tf.constant(rows, tf.int64), tf.constant(grads.reshape(-1, 2)))
    expected = numpy_adam(w0.astype(np.float64), [dense for _, _, dense in steps])
    for component in strategy.experimental_local_results(var):
        np.testing.assert_allclose(component.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_fused_adam_config_round_trip():
    opt = FusedAdam(0.01, beta_1=0.8)
    clone = tf.keras.optimizers.deserialize(tf.keras.optimizers.serialize(opt))
    assert isinstance(clone, FusedAdam) and clone.get_config() == opt.get_config()


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
    lazy, plain = LazyAdam(0.05), FusedAdam(0.05)
    for _ in range(3):
        lazy.apply_gradients([(grads, a)])
        plain.apply_gradients([(grads, b)])
    np.testing.assert_array_equal(a.numpy(), b.numpy())


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
    assert type(make_optimizer("adam", 0.1)) is FusedAdam
    with pytest.raises(ValueError, match=r"`optimizer` must be one of \['adam', 'lazy_adam', "
                                         r"'adagrad'\], received: optimizer='sgd'"):
        make_optimizer("sgd", 0.1)
