"""TAML (Liu et al., WWW'23; KAML Table 2): multi-learner towers, fusion, self-distillation."""
import numpy as np
import pytest
import tensorflow as tf

from tests import layer_checks as lc
from trainer.layers.taml import TAML, fuse_learner_logits, self_distillation

T = 1.5  # gate temperature of the golden tests


def small(tasks=lc.TASKS2, **kw):
    args = {"num_learners": 2, "num_shared_experts": 2, "num_task_experts": 1,
            "num_learner_experts": 1, "expert_units": [5, 4], "tower_units": [3],
            "gate_temperature": T, "distill_weight": 0.7, **kw}
    return lambda: TAML(tasks, name="taml", **args)


def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_taml(x, w, tasks, num_learners):
    """Per task: the [B, L] learner logits (own + general + shared experts, gate, tower)."""
    shared = [lc.np_mlp(x, w, f"shared/expert_{i}", 2) for i in range(2)]
    out = {}
    for t in tasks:
        general = [lc.np_mlp(x, w, f"{t}/expert_0", 2)]
        columns = []
        for l in range(num_learners):
            p = f"{t}/learner_{l}"
            own = [lc.np_mlp(x, w, f"{p}/expert_0", 2)]
            mixed = lc.np_gate(x, np.stack(own + general + shared, 1), w, f"{p}/gate", T)
            columns.append(lc.np_dense(lc.np_mlp(mixed, w, f"{p}/tower", 1), w, f"{p}/logit"))
        out[t] = np.concatenate(columns, 1)
    return out


def np_kl(p, q):
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def test_defaults():
    layer = TAML(["ctr", "cvr"])
    assert (layer.num_learners, layer.num_shared_experts, layer.num_task_experts,
            layer.num_learner_experts, layer.expert_units, layer.tower_units,
            layer.distill_weight) == (2, 2, 1, 1, [256, 128], [64], 1.0)


def test_config_round_trip():
    lc.check_config_round_trip(small(), lc.features())


def test_golden_three_tasks_with_self_distillation():
    layer = small(lc.TASKS3, num_learners=3)()
    x = lc.features()
    layer(x)
    w = lc.set_golden_weights(layer, scale=0.8)
    z = np_taml(x, w, lc.TASKS3, 3)
    fused = {t: np.log(np_sigmoid(v).mean(1, keepdims=True))
             - np.log(1 - np_sigmoid(v).mean(1, keepdims=True)) for t, v in z.items()}
    lc.assert_close(layer.learner_logits(x), z)
    lc.assert_close(layer(x), fused)
    # Distillation: sum over tasks of the mean over rows and learners of KL(p_fused || p_l).
    expected = 0.7 * sum(np.mean(np_kl(np_sigmoid(fused[t]), np_sigmoid(z[t])))
                         for t in lc.TASKS3)
    assert len(layer.losses) == 1
    assert float(layer.losses[0]) == pytest.approx(expected, rel=1e-4)
    assert expected > 1e-4  # the learners really disagree under these weights


def test_fusion_is_the_logit_of_the_mean_probability_and_stays_finite():
    z = np.array([[0.3, -1.2, 2.0], [80.0, 90.0, -85.0], [-200.0, -150.0, -300.0]], np.float32)
    fused = fuse_learner_logits(tf.constant(z)).numpy()
    assert np.all(np.isfinite(fused)) and fused.shape == (3, 1)
    p = np_sigmoid(z[0].astype(np.float64)).mean()
    assert fused[0, 0] == pytest.approx(np.log(p / (1 - p)), rel=1e-5)
    assert fused[1, 0] == pytest.approx(np.log(2.0), abs=1e-4)  # mean p = 2/3
    assert fused[2, 0] == pytest.approx(-150.0 - np.log(3.0), abs=1e-3)  # the largest p dominates


def test_self_distillation_teaches_the_learners_only_and_is_zero_on_agreement_or_no_rows():
    z = tf.Variable([[0.5, -1.0], [2.0, 1.5]])
    with tf.GradientTape() as tape:
        fused = fuse_learner_logits(z)
        loss = self_distillation(z, fused)
    grad = tape.gradient(loss, z).numpy()
    # d KL / d z_l = (sigmoid(z_l) - p_fused) / (B * L), the teacher held fixed.
    p = np_sigmoid(fused.numpy())
    np.testing.assert_allclose(grad, (np_sigmoid(z.numpy()) - p) / 4.0, rtol=1e-5)
    agree = tf.constant([[1.3, 1.3]])
    assert float(self_distillation(agree, fuse_learner_logits(agree))) == pytest.approx(0, abs=1e-6)
    empty = tf.zeros([0, 2])
    assert float(self_distillation(empty, tf.zeros([0, 1]))) == 0.0


def test_one_learner_or_zero_weight_adds_no_distillation_pull():
    one = small(num_learners=1)()
    out = one(lc.features())
    np.testing.assert_allclose(lc.to_numpy(out)["ctr"],
                               lc.to_numpy(one.learner_logits(lc.features()))["ctr"], rtol=1e-5,
                               atol=1e-5)
    assert float(one.losses[0]) == pytest.approx(0.0, abs=1e-6)
    off = small(distill_weight=0.0)()
    off(lc.features())
    assert off.losses == []


def test_functional_model_carries_the_loss_in_training_and_inference_calls():
    model = lc.backbone_model(small(), lc.TASKS2)
    assert len(model.losses) == 1  # FunnelModel sees a layer loss when it is built

    @tf.function
    def run(x, training):
        model(x, training=training)
        return tf.add_n(model.losses)

    x = tf.constant(lc.features())
    assert float(run(x, True)) > 0 and float(run(x, False)) > 0


@pytest.mark.parametrize("name,value", [
    ("tasks", ["shared", "ctr"]), ("num_learners", 0), ("num_shared_experts", -1),
    ("num_task_experts", 1.5), ("num_learner_experts", 0), ("expert_units", []),
    ("tower_units", [0]), ("expert_dropout", 1.0), ("gate_temperature", 0),
    ("distill_weight", -0.1)])
def test_invalid_args(name, value):
    lc.check_rejects(TAML, {"tasks": ["ctr", "cvr"]}, name, value)


def test_fit_one_step_three_tasks():
    lc.check_backbone_fit_one_step(small(lc.TASKS3), lc.TASKS3)


def test_mirrored_step_then_save_load(two_cpu_strategy, tmp_path):
    make = lambda: TAML(lc.TASKS2, num_learners=2, num_shared_experts=1, num_task_experts=1,
                        num_learner_experts=1, expert_units=[4], tower_units=[2])
    lc.check_backbone_mirrored_and_saved(two_cpu_strategy, make, lc.TASKS2, tmp_path / "m")


def test_funnel_model_trains_on_the_distillation_term():
    """The production wrapper adds the layer loss to its terms (as ``regularization``)."""
    from tests import fixtures
    from schemas import config as config_lib
    from trainer.session import build_model

    d = config_lib.to_dict(fixtures.tiny_config())
    d["model"].update({"backbone": "taml", "backbone_args": {
        "num_learners": 2, "num_shared_experts": 1, "expert_units": [4], "tower_units": [2]}})
    _, arrays, info = fixtures.tiny_arrays(64)
    model = build_model(config_lib.from_dict(d), info)
    assert "regularization" in model.term_trackers
    x = {k: tf.constant(arrays[k][:32]) for k in info.input_names}
    y = {"ctr": tf.constant(arrays["click_xf"][:32].reshape(-1)),
         "cvr": tf.constant(arrays["conversion_xf"][:32].reshape(-1))}
    terms = model.loss_terms(y, model.training_outputs(x, y, training=True))
    backbone = model.network.get_layer("backbone")
    z = backbone.learner_logits(model.network.get_layer("embedding")(x))
    expected = sum(float(self_distillation(v, fuse_learner_logits(v))) for v in z.values())
    assert float(terms["regularization"]) == pytest.approx(expected, rel=1e-5)
    assert expected > 0
