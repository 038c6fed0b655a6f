"""The public Keras surface (``from funnelrank import layers, losses``) in a plain Keras model.

Issue 21's acceptance: a two-tower Keras model written here (no project helpers) compiles with
each loss class and trains a step under MirroredStrategy with 2 logical CPU replicas; each
loss equals its NumPy reference on the global batch; get_config round-trips; a saved and
reloaded model (custom_objects from the registry) gives the same loss. The README's example
runs as written.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from funnelrank import layers, losses
from tests.test_contrastive import _reference as np_info_nce
from tests.test_kaml import _ref_kaml, _ref_masked_bce, _ref_rlu, _sigmoid
from tests.test_pwiser import _reference as np_pwiser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, F = 32, 6  # global batch (16 rows per replica), features
LOSSES = {  # model output -> the loss class under test
    "rank": lambda: losses.PWiseR(m1=0.2, m2=0.3),
    "contrast": lambda: losses.AdaptiveInfoNCE(),
    "masked_bce": lambda: losses.MaskedBCE(),
    "rlu": lambda: losses.RLURanking([1.0, 0.5]),
    "kaml": lambda: losses.KamlLoss(gamma=0.7, beta=[1.0, 2.0], ranking_positives="submitted")}


def test_import_funnelrank_does_not_import_tensorflow():
    code = ("import sys, funnelrank; assert 'tensorflow' not in sys.modules, 'eager TF'; "
            "from funnelrank import layers, losses; print(layers.MMoE.__name__, "
            "losses.KamlLoss.__name__, funnelrank.losses is losses)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["MMoE", "KamlLoss", "True"]


def test_public_names_are_the_registered_implementation():
    for module in (layers, losses):
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type):
                assert tf.keras.utils.get_registered_name(obj) == f"funnelrank>{name}"
                assert obj.__module__.startswith("trainer.")  # one implementation
    objects = losses.custom_objects()
    assert objects["funnelrank>KamlLoss"] is losses.KamlLoss and objects["MMoE"] is layers.MMoE


def _two_towers() -> tf.keras.Model:
    """features -> a ctr tower and a cvr tower (plain Dense) -> one output per loss."""
    x = tf.keras.Input(shape=(F,), name="x")
    h_ctr = tf.keras.layers.Dense(4, activation="tanh", name="ctr_tower")(x)
    h_cvr = tf.keras.layers.Dense(4, activation="tanh", name="cvr_tower")(x)
    logit_ctr = tf.keras.layers.Dense(1, name="ctr_logit")(h_ctr)
    logit_cvr = tf.keras.layers.Dense(1, name="cvr_logit")(h_cvr)
    tau = tf.keras.layers.Dense(1, activation="sigmoid", name="relatedness")(x)
    tau = tf.keras.layers.Rescaling(0.95, offset=0.05, name="tau")(tau)  # eq. 12's range
    outputs = {
        "rank": tf.keras.layers.Activation("sigmoid", name="rank")(logit_ctr),
        "contrast": tf.keras.layers.Concatenate(name="contrast")([h_ctr, h_cvr, tau])}
    for name in ("masked_bce", "rlu", "kaml"):
        outputs[name] = tf.keras.layers.Concatenate(name=name)([logit_ctr, logit_cvr])
    return tf.keras.Model(x, outputs)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, F)).astype(np.float32)
    click = (rng.random(B) < 0.5).astype(np.float32)
    conv = click * (rng.random(B) < 0.5).astype(np.float32)
    labels = (rng.random((B, 2)) < 0.4).astype(np.float32)
    mask = (rng.random((B, 2)) < 0.7).astype(np.float32)
    packed = np.concatenate([labels, mask], axis=1)
    y = {"rank": np.stack([click, conv], axis=1), "contrast": np.zeros(B, np.float32),
         "masked_bce": packed, "rlu": labels * mask, "kaml": packed}
    return x, y, (click, conv, labels, mask)


def _np_losses(pred, raw):
    click, conv, labels, mask = raw
    c = pred["contrast"].astype(np.float64)
    logits = pred["kaml"].astype(np.float64)
    return {"rank": np_pwiser(click, conv, pred["rank"], m1=0.2, m2=0.3),
            "contrast": np_info_nce(c[:, :4], c[:, 4:8], c[:, 8]),
            "masked_bce": _ref_masked_bce(labels, _sigmoid(logits), mask),
            "rlu": _ref_rlu(labels * mask, logits, [1.0, 0.5]),
            "kaml": _ref_kaml(labels, logits, mask, [1.0, 2.0], 0.7, "submitted")}


def _evaluate(model, x, y):
    return model.evaluate(x, y, batch_size=B, verbose=0, return_dict=True)


def test_each_loss_class_trains_a_plain_model_under_two_replicas_and_survives_save(
        two_cpu_strategy, tmp_path):
    x, y, raw = _batch()
    with two_cpu_strategy.scope():
        tf.keras.utils.set_random_seed(1)
        model = _two_towers()
        model.compile(optimizer=tf.keras.optimizers.SGD(0.1),
                      loss={name: make() for name, make in LOSSES.items()})
    before = _evaluate(model, x, y)
    want = _np_losses(model.predict(x, batch_size=B, verbose=0), raw)
    for name in LOSSES:  # the global batch's value, through compile, under 2 replicas
        assert before[f"{name}_loss"] == pytest.approx(want[name], rel=1e-4, abs=1e-6), name
        assert want[name] > 0, name
    weights = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=B, epochs=1, verbose=0).history
    for name in LOSSES:  # fit's step loss is the pre-update value
        assert history[f"{name}_loss"][0] == pytest.approx(want[name], rel=1e-4, abs=1e-6)
    frozen = [w.name for a, w in zip(weights, model.trainable_weights)
              if np.array_equal(a, w.numpy())]
    # Everything moves but the temperature net: tau enters eq. 13 through stop_gradient.
    assert frozen == ["relatedness/kernel:0", "relatedness/bias:0"]
    after = _evaluate(model, x, y)
    model.save(str(tmp_path / "model"), save_format="tf")
    reloaded = tf.keras.models.load_model(str(tmp_path / "model"),
                                          custom_objects=losses.custom_objects())
    again = _evaluate(reloaded, x, y)
    for name, make in LOSSES.items():
        assert again[f"{name}_loss"] == pytest.approx(after[f"{name}_loss"], rel=1e-5), name
        loss = reloaded.loss[name]  # the reloaded model's own loss object
        assert type(loss) is type(make()) and loss.get_config() == make().get_config()
        config = make().get_config()
        assert type(make()).from_config(config).get_config() == config


class UncertaintyTowers(tf.keras.Model):
    """Two towers whose two BCE task losses are combined by learned uncertainty weights."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.ctr = tf.keras.layers.Dense(1, activation="sigmoid", name="ctr")
        self.ctcvr = tf.keras.layers.Dense(1, activation="sigmoid", name="ctcvr")
        self.weighting = losses.UncertaintyWeighting(num_tasks=2, initial_log_sigma=0.2)
        self.tracker = tf.keras.metrics.Mean(name="loss")

    def call(self, x):
        return {"ctr": self.ctr(x), "ctcvr": self.ctcvr(x)}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        bce = tf.keras.losses.BinaryCrossentropy(reduction="none")
        task_losses = {k: tf.reduce_mean(bce(y[k][:, None], y_pred[k])) for k in ("ctr", "ctcvr")}
        loss = self.weighting(task_losses)  # MAN eq. 3
        self.tracker.update_state(loss)
        return loss / tf.distribute.get_strategy().num_replicas_in_sync  # gradients are summed

    @property
    def metrics(self):
        return [self.tracker]

    def get_config(self):
        return {"name": self.name}


def test_uncertainty_weighting_trains_a_plain_model_under_two_replicas(two_cpu_strategy,
                                                                        tmp_path):
    x, _, (click, conv, _, _) = _batch(3)
    y = {"ctr": click, "ctcvr": click * conv}
    with two_cpu_strategy.scope():
        tf.keras.utils.set_random_seed(2)
        model = UncertaintyTowers(name="uw")
        model.compile(optimizer=tf.keras.optimizers.SGD(0.1))
    before = _evaluate(model, x, y)["loss"]
    pred = model.predict(x, batch_size=B, verbose=0)
    s = model.weighting.log_sigma.numpy().astype(np.float64)
    np.testing.assert_allclose(s, [0.2, 0.2])
    task = [-np.mean(t * np.log(p[:, 0]) + (1 - t) * np.log(1 - p[:, 0]))
            for t, p in ((y["ctr"], pred["ctr"]), (y["ctcvr"], pred["ctcvr"]))]
    want = sum(0.5 * np.exp(-2 * s[k]) * task[k] + s[k] for k in range(2))
    assert before == pytest.approx(want, rel=1e-5)
    model.fit(x, y, batch_size=B, epochs=1, verbose=0)
    s_after = model.weighting.log_sigma.numpy()
    # One SGD step on the global batch: d/ds (0.5 e^{-2s} L + s) = 1 - e^{-2s} L.
    np.testing.assert_allclose(s_after, s - 0.1 * (1 - np.exp(-2 * s) * np.array(task)),
                               rtol=1e-4)
    config = model.weighting.get_config()
    assert losses.UncertaintyWeighting.from_config(config).get_config() == config
    after = _evaluate(model, x, y)["loss"]
    model.save(str(tmp_path / "uw"), save_format="tf")
    reloaded = tf.keras.models.load_model(
        str(tmp_path / "uw"),
        custom_objects={"UncertaintyTowers": UncertaintyTowers, **losses.custom_objects()})
    reloaded.compile(optimizer=tf.keras.optimizers.SGD(0.1))
    np.testing.assert_allclose(reloaded.weighting.log_sigma.numpy(), s_after, rtol=1e-6)
    assert _evaluate(reloaded, x, y)["loss"] == pytest.approx(after, rel=1e-5)


def _readme_blocks():
    text = open(os.path.join(ROOT, "README.md")).read()
    match = re.search(r"^## Use the layers and losses in your own Keras model\n(.*?)(?=^## )",
                      text, flags=re.S | re.M)
    assert match, "README section missing"
    return re.findall(r"```python\n(.*?)```", match.group(1), flags=re.S)


def test_readme_example_runs(tmp_path, monkeypatch):
    blocks = _readme_blocks()
    assert blocks
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        namespace = {"__name__": "readme_example"}
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
