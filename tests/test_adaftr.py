"""The AdaFTR recipe (trainer/objectives/adaftr.py): terms, gradient routing, ablation
variants, model integration, and an export free of the relatedness net."""
import os

import numpy as np
import pytest
import tensorflow as tf

from schemas import config as config_lib
from tests import fixtures
from tests import layer_checks as lc
from tests.test_contrastive import _np_single_negative
from tests.test_contrastive import _reference as np_info_nce
from trainer.data import from_arrays
from trainer.objectives.base import HIDDEN, REPS
from trainer.objectives import build_objective
from trainer.session import build_model, fit_model

B, V, H = 12, 4, 6  # batch, backbone width, first tower layer width


def _cfg(**args):
    return config_lib.from_dict({"loss": {"name": "adaftr", "args": args}}).loss


def _training_network(tasks=("ctr", "cvr")):
    """A stand-in training network with the aux outputs AdaFTR reads (2 tower layers)."""
    x = tf.keras.Input(shape=(3,))
    outputs = {"ctr": tf.keras.layers.Dense(1)(x), REPS: {}, HIDDEN: {}}
    for t in tasks:
        outputs[REPS][t] = tf.keras.layers.Dense(V, name=f"{t}_v")(x)
        outputs[HIDDEN][t] = [tf.keras.layers.Dense(H, name=f"{t}_h0")(x),
                              tf.keras.layers.Dense(2, name=f"{t}_h1")(x)]
    return tf.keras.Model(x, outputs)


def _batch(tasks=("ctr", "cvr"), seed=0):
    rng = np.random.default_rng(seed)
    click = (rng.random(B) < 0.5).astype(np.float32)
    conversion = click * (rng.random(B) < 0.5).astype(np.float32)
    labels = {"ctr": click, "cvr": conversion}
    outputs = {"ctr": rng.uniform(0.1, 0.9, B).astype(np.float32),
               "cvr": rng.uniform(0.05, 0.6, B).astype(np.float32),
               "ctcvr": rng.uniform(0.01, 0.3, B).astype(np.float32),
               REPS: {t: rng.normal(size=(B, V)).astype(np.float32) for t in tasks},
               HIDDEN: {t: [rng.normal(size=(B, H)).astype(np.float32),
                            rng.normal(size=(B, 2)).astype(np.float32)] for t in tasks}}
    for t in tasks[2:]:  # extra tasks' heads
        outputs[t] = rng.uniform(0.05, 0.9, B).astype(np.float32)
    return labels, outputs


def _bce(y, p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))


def _np_relatedness(net, a, b):
    w = {v.name.split(net.name + "/")[-1][:-2]: v.numpy() for v in net.weights}
    hidden = lc.np_mlp(a * b, w, "mlp", 1)
    return 1 / (1 + np.exp(-(hidden @ w["logit/kernel"] + w["logit/bias"])))[:, 0]


def test_adaptive_terms_match_numpy():
    objective = build_objective(_cfg(alpha=0.7, beta=0.3, tau_lower=0.1, tau_upper=0.9,
                                     relatedness_units=[5]))
    objective.build(_training_network())
    labels, outputs = _batch()
    terms = objective(labels, outputs)
    assert sorted(terms) == ["bce_ctcvr", "bce_ctr", "cl", "rel"]
    assert objective.term_names(["ctr", "cvr", "ctcvr"]) == ["bce_ctr", "bce_ctcvr", "rel", "cl"]
    click, conv = labels["ctr"], labels["cvr"]
    y_rel_hat = _np_relatedness(objective.relatedness["cvr"], outputs[REPS]["ctr"],
                                outputs[REPS]["cvr"])
    y_rel = (click == conv).astype(np.float64)  # eq. 10: y_ctr == y_cvr
    tau = 0.8 * (1 - y_rel_hat) + 0.1  # eq. 12
    want_cl = np_info_nce(outputs[HIDDEN]["ctr"][0].astype(np.float64),
                          outputs[HIDDEN]["cvr"][0].astype(np.float64), tau)
    assert float(terms["rel"]) == pytest.approx(0.7 * _bce(y_rel, y_rel_hat), rel=1e-5)
    assert float(terms["cl"]) == pytest.approx(0.3 * want_cl, rel=1e-5)
    assert float(terms["bce_ctr"]) == pytest.approx(_bce(click, outputs["ctr"]), rel=1e-5)
    assert float(terms["bce_ctcvr"]) == pytest.approx(_bce(click * conv, outputs["ctcvr"]),
                                                      rel=1e-5)


@pytest.mark.parametrize("variant", ["fixed_tau", "single_negative", "regression",
                                     "learnable_tau"])
def test_ablation_variants_match_numpy(variant):
    objective = build_objective(_cfg(variant=variant, beta=2.0, fixed_tau=0.2,
                                     initial_tau=0.3, contrast_layer=1))
    objective.build(_training_network())
    labels, outputs = _batch(seed=1)
    terms = objective(labels, outputs)
    assert "rel" not in terms and not objective.relatedness
    a = outputs[HIDDEN]["ctr"][1].astype(np.float64)  # contrast_layer=1: the second layer
    p = outputs[HIDDEN]["cvr"][1].astype(np.float64)
    want = {"fixed_tau": lambda: np_info_nce(a, p, np.full(B, 0.2)),
            "learnable_tau": lambda: np_info_nce(a, p, np.full(B, 0.3)),
            "single_negative": lambda: _np_single_negative(a, p),
            "regression": lambda: np.mean((a - p) ** 2)}[variant]()
    assert float(terms["cl"]) == pytest.approx(2.0 * want, rel=1e-5)
    variables = [v.name for v in objective.trainable_variables]
    assert variables == (["temperature/tau_logit:0"] if variant == "learnable_tau" else [])


def test_gradient_routing_follows_algorithm_1_and_can_be_changed():
    labels, outputs = _batch(seed=2)
    reps = {t: tf.Variable(v) for t, v in outputs[REPS].items()}
    hidden = {t: [tf.Variable(v) for v in hs] for t, hs in outputs[HIDDEN].items()}
    outs = {**outputs, REPS: reps, HIDDEN: hidden}

    def grads(**args):
        objective = build_objective(_cfg(**args))
        objective.build(_training_network())
        rel_vars = objective.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            terms = objective(labels, outs)
        return {"cl->rel": [tape.gradient(terms["cl"], v) for v in rel_vars],
                "rel->reps": [tape.gradient(terms["rel"], v) for v in reps.values()],
                "rel->net": [tape.gradient(terms["rel"], v) for v in rel_vars],
                "cl->h": [tape.gradient(terms["cl"], hidden[t][0]) for t in hidden]}

    default = grads()
    assert all(g is None for g in default["cl->rel"])  # tau is stop-gradient in L_cl
    assert all(g is None for g in default["rel->reps"])  # L_rel does not move the backbone
    assert all(g is not None for g in default["rel->net"] + default["cl->h"])
    changed = grads(tau_gradient=True, relatedness_input_gradient=True)
    assert any(g is not None and np.any(g.numpy() != 0) for g in changed["cl->rel"])
    assert all(g is not None for g in changed["rel->reps"])


@pytest.mark.parametrize("source", ["labels", "actions"])
def test_three_tasks_contrast_click_with_each_other_task(source):
    """Sec. 3.3.4: click, view, conversion; the view label from the labels or an action column."""
    tasks = ("ctr", "cvr", "view")
    args = {"beta": 1.0, **({"task_labels": {"view": 1}} if source == "actions" else {})}
    objective = build_objective(_cfg(**args))
    objective.build(_training_network(tasks))
    labels, outputs = _batch(tasks, seed=3)
    view = labels["ctr"] * (np.arange(B) % 2).astype(np.float32)
    if source == "labels":
        labels["view"] = view
    else:
        labels["actions"] = np.stack([np.zeros(B, np.float32), view], axis=1)
    terms = objective(labels, outputs)
    assert sorted(objective.relatedness) == ["cvr", "view"]
    assert sorted(terms) == ["bce_ctcvr", "bce_ctr", "bce_view", "cl_cvr", "cl_view", "rel_cvr",
                             "rel_view"]
    assert objective.term_names(["ctr", "cvr", "ctcvr"]) == [
        "bce_ctr", "bce_ctcvr", "bce_view", "rel_cvr", "cl_cvr", "rel_view", "cl_view"]
    assert float(terms["bce_view"]) == pytest.approx(_bce(view, outputs["view"]), rel=1e-5)
    y_rel_hat = _np_relatedness(objective.relatedness["view"], outputs[REPS]["ctr"],
                                outputs[REPS]["view"])
    y_rel = (labels["ctr"] == view).astype(np.float64)
    assert float(terms["rel_view"]) == pytest.approx(_bce(y_rel, y_rel_hat), rel=1e-5)
    want = np_info_nce(outputs[HIDDEN]["ctr"][0].astype(np.float64),
                       outputs[HIDDEN]["view"][0].astype(np.float64), 0.95 * (1 - y_rel_hat)
                       + 0.05)
    assert float(terms["cl_view"]) == pytest.approx(want, rel=1e-5)


def test_cvr_loss_clicked_is_eq_4_on_the_cvr_head_over_clicked_rows():
    objective = build_objective(config_lib.from_dict({"loss": {
        "name": "adaftr", "weights": {"ctr": 1.0, "cvr": 0.5},
        "args": {"cvr_loss": "clicked"}}}).loss)
    objective.build(_training_network())
    labels, outputs = _batch(seed=4)
    terms = objective(labels, outputs)
    assert objective.term_names(["ctr", "cvr", "ctcvr"]) == ["bce_ctr", "bce_cvr", "rel", "cl"]
    click, conv = labels["ctr"], labels["cvr"]
    clicked = click > 0.5
    assert 0 < clicked.sum() < B
    assert float(terms["bce_cvr"]) == pytest.approx(
        0.5 * _bce(conv[clicked], outputs["cvr"][clicked]), rel=1e-5)
    assert float(terms["bce_ctr"]) == pytest.approx(_bce(click, outputs["ctr"]), rel=1e-5)
    assert "bce_ctcvr" not in terms
    with pytest.raises(config_lib.ConfigError, match=r"cvr_loss=clicked trains the cvr head"):
        objective.term_names(["ctr"])


@pytest.mark.parametrize("variant", ["adaptive", "fixed_tau", "regression"])
def test_cl_reduction_sum_is_eq_6_as_printed(variant):
    labels, outputs = _batch(seed=5)
    terms = {}
    for reduction in ("mean", "sum"):
        objective = build_objective(_cfg(cl_reduction=reduction, variant=variant, beta=0.5))
        objective.build(_training_network())
        objective.relatedness = terms.get("nets", objective.relatedness)  # same net weights
        terms["nets"] = objective.relatedness
        terms[reduction] = float(objective(labels, outputs)["cl"])
    a = outputs[HIDDEN]["ctr"][0].astype(np.float64)
    p = outputs[HIDDEN]["cvr"][0].astype(np.float64)
    if variant == "fixed_tau":
        want_mean = np_info_nce(a, p, np.full(B, 0.05))
        assert terms["mean"] == pytest.approx(0.5 * want_mean, rel=1e-5)
    if variant == "regression":
        assert terms["mean"] == pytest.approx(0.5 * np.mean((a - p) ** 2), rel=1e-5)
    assert terms["sum"] == pytest.approx(B * terms["mean"], rel=1e-5)


def test_l2_term_is_sum_of_squared_network_weights():
    network = _training_network()
    objective = build_objective(_cfg(l2=0.01))
    objective.build(network)
    labels, outputs = _batch()
    want = 0.01 * sum(float(np.sum(w.numpy() ** 2)) for w in network.trainable_weights)
    assert float(objective(labels, outputs)["l2"]) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("args, message", [
    ({"variant": "infonce"}, r"`loss.args.variant` must be one of \['adaptive', "),
    ({"beta": -1}, r"loss.args.beta` must be a finite number >= 0, received: loss.args.beta=-1"),
    ({"tau_lower": 0.5, "tau_upper": 0.2}, r"`loss.args.tau_upper` must be a finite number > 0.5"),
    ({"contrast_layer": -1}, r"contrast_layer: expected an integer >= 0, got -1"),
    ({"relatedness_units": [0]}, r"units=\[0\]"),
    ({"tau_gradient": "yes"}, r"tau_gradient: expected true/false, got 'yes'"),
    ({"temperature": 1}, r"adaftr takes \[.*\] arguments, got \['temperature'\]"),
    ({"cvr_loss": "bce"}, r"`loss.args.cvr_loss` must be one of \['esmm', 'clicked'\], "
                          r"received: loss.args.cvr_loss='bce'"),
    ({"cl_reduction": "max"}, r"`loss.args.cl_reduction` must be one of \['mean', 'sum'\], "
                              r"received: loss.args.cl_reduction='max'"),
    ({"task_labels": {"view": -1}}, r"`loss.args.task_labels` must map extra task names .* "
                                    r"received: loss.args.task_labels=\{'view': -1\}"),
    ({"task_labels": {"cvr": 0}}, r"received: loss.args.task_labels=\{'cvr': 0\}"),
    ({"task_labels": ["view"]}, r"received: loss.args.task_labels=\['view'\]")])
def test_bad_arguments_are_named(args, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        build_objective(_cfg(**args))


def test_cvr_weight_needs_cvr_loss_clicked_and_calibrator_a_ctcvr_head():
    with pytest.raises(config_lib.ConfigError, match=r"'cvr' weighs the BCE term of "
                                                     r"loss.args.cvr_loss=clicked"):
        build_objective(config_lib.from_dict({"loss": {"name": "adaftr",
                                                       "weights": {"cvr": 2.0}}}).loss)
    objective = build_objective(_cfg(cvr_loss="clicked", calibrator=0.5))
    objective.build(_training_network())
    assert objective.term_names(["ctr", "cvr", "ctcvr"])[:3] == ["bce_ctr", "bce_cvr",
                                                               "calibrator"]
    with pytest.raises(config_lib.ConfigError, match="calibrator needs a ctcvr head"):
        objective.term_names(["ctr", "cvr"])
    with pytest.raises(config_lib.ConfigError, match=r"cvr_loss=clicked already trains cvr "
                                                     r"on clicked rows only, got "
                                                     r"cvr_clicked=1.0"):
        build_objective(_cfg(cvr_loss="clicked", cvr_clicked=1.0))


@pytest.mark.parametrize("model, message", [
    ({"backbone": "aitm", "backbone_args": {}, "tasks": ["ctr", "ctcvr"]},
     r"backbone 'aitm' .* has no separate towers"),
    ({"backbone": "dnn", "backbone_args": {}, "tasks": ["ctr"]},
     r"the model's tasks are \['ctr'\]"),
    ({"tower_units": [8]}, r"contrast_layer=1 but the towers have 1 layer")])
def test_models_adaftr_cannot_train_are_refused(model, message):
    _, _, info = fixtures.tiny_arrays(200)
    args = {"contrast_layer": 1} if "tower_units" in model else {}
    cfg = config_lib.from_dict({"model": model, "loss": {"name": "adaftr", "args": args}})
    with pytest.raises(config_lib.ConfigError, match=message):
        build_model(cfg, info)


@pytest.mark.parametrize("backbone", ["mmoe", "shared_bottom", "ple"])
def test_trains_on_each_backbone_of_table_6(backbone):
    _, arrays, info = fixtures.tiny_arrays(1200)
    base = config_lib.to_dict(fixtures.tiny_config(epochs=2))
    args = {"ple": {"num_levels": 2, "num_shared_experts": 1, "num_task_experts": 1,
                    "expert_units": [8]},
            "shared_bottom": {"bottom_units": [8]}}.get(backbone, base["model"]["backbone_args"])
    base["model"].update({"backbone": backbone, "backbone_args": args})
    base["loss"] = {"name": "adaftr"}
    cfg = config_lib.from_dict(base)
    ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 200, shuffle=True, seed=1)
    model, _ = fit_model(cfg, info, ds, None, tf.distribute.OneDeviceStrategy("/cpu:0"))
    history = model.history.history
    for term in ("rel", "cl", "bce_ctr", "bce_ctcvr"):
        assert np.all(np.isfinite(history[term])), term
    assert history["rel"][-1] < history["rel"][0]  # the relatedness net learns


def test_two_replicas_then_export_has_no_relatedness_net(two_cpu_strategy, tmp_path):
    from serving import export

    pre, arrays, info = fixtures.tiny_arrays(2000)
    cfg = config_lib.from_dict({**config_lib.to_dict(fixtures.tiny_config(epochs=1)),
                                "loss": {"name": "adaftr", "args": {"beta": 0.1}}})
    ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 256, shuffle=True, seed=1)
    model, _ = fit_model(cfg, info, ds, None, two_cpu_strategy)
    assert np.all(np.isfinite(model.history.history["cl"]))
    assert any("relatedness/cvr" in v.name for v in model.step_variables)
    out_dir = export.export_from_preprocessor(model.network, pre, str(tmp_path / "1"))
    names = fixtures.exported_variable_names(out_dir)
    assert "cvr/tower/dense_0/kernel:0" in names  # the names are real ones...
    assert not [n for n in names if "relatedness" in n or "temperature" in n]  # ...none of these
    sizes = sorted(int(np.prod(s)) for n, s in tf.train.list_variables(
        os.path.join(out_dir, "variables", "variables")) if s)
    assert sizes == sorted(int(np.prod(w.shape)) for w in model.network.weights)
    # The served heads equal the training-time heads of the training network.
    trained = model.training_network({k: arrays[k] for k in info.input_names}, training=False)
    assert sorted(trained["_reps"]) == ["ctr", "cvr"]  # the aux outputs exist in training
    served = tf.saved_model.load(out_dir).signatures["predict_raw"]
    frame = fixtures.tiny_frame(2000)
    feeds = {k: tf.constant(frame[k].to_numpy().astype("float32" if k == "price" else "int64"))
             for k in fixtures.TINY_SPEC.feature_keys}
    got = served(**feeds)
    for head in ("ctr", "cvr", "ctcvr"):
        np.testing.assert_allclose(got[head].numpy(), trained[head].numpy(), atol=1e-5)


def test_extra_task_label_must_exist_and_task_labels_must_name_extra_tasks():
    objective = build_objective(_cfg(task_labels={"cart": 0}))
    with pytest.raises(config_lib.ConfigError, match=r"task_labels names \['cart'\], which are "
                                                     r"not extra tasks of the model"):
        objective.build(_training_network(("ctr", "cvr", "view")))
    objective = build_objective(_cfg())
    objective.build(_training_network(("ctr", "cvr", "view")))
    labels, outputs = _batch(("ctr", "cvr", "view"))
    with pytest.raises(config_lib.ConfigError, match=r"no label for task 'view': the labels hold "
                                                     r"\['ctr', 'cvr'\]; name a "
                                                     r"per-action label column in "
                                                     r"loss.args.task_labels"):
        objective(labels, outputs)


@pytest.mark.parametrize("tasks, loss, message", [
    (["ctr", "cvr", "view"], "esmm", r"only loss.name adaftr trains extra tasks"),
    (["ctr", "cvr", "ctcvr"], "adaftr", r"model.tasks: loss 'adaftr' needs one of .* got "
                                        r"\['ctr', 'cvr', 'ctcvr'\]"),
    (["ctr", "cvr", "View"], "adaftr", r"got \['ctr', 'cvr', 'View'\]"),
    (["ctr", "cvr", "cvr_1"], "adaftr", r"got \['ctr', 'cvr', 'cvr_1'\]")])
def test_bad_extra_tasks_are_refused(tasks, loss, message):
    _, _, info = fixtures.tiny_arrays(200)
    with pytest.raises(config_lib.ConfigError, match=message):
        cfg = config_lib.from_dict({"model": {"tasks": tasks}, "loss": {"name": loss}})
        build_model(cfg, info)


def test_three_task_config_trains_end_to_end_on_synthetic_action_labels():
    """Sec. 3.3.4 from config alone: model.tasks [ctr, cvr, view], view = the log's action 0."""
    from trainer.evaluation import evaluate_heads
    from trainer.model import FeatureInfo
    from transform import preprocessor as preprocess
    from transform.ingest import synthetic

    spec = fixtures.synthetic_spec()
    frame = synthetic.generate(1500, seed=2)
    pre = preprocess.fit(frame, spec)
    arrays = pre.transform(frame)
    info = FeatureInfo(pre.vocab_sizes, spec.dense_keys)
    cfg = config_lib.from_dict({
        "model": {"tasks": ["ctr", "cvr", "view"], "embedding_dim": 4, "tower_units": [8],
                  "backbone_args": {"num_experts": 2, "expert_units": [8]}},
        "loss": {"name": "adaftr", "args": {"task_labels": {"view": 0}, "cvr_loss": "clicked",
                                            "beta": 0.1}},
        "train": {"batch_size": 250, "epochs": 2, "learning_rate": 0.01, "seed": 3}})
    ds = from_arrays(arrays, info.input_names, spec, 250, shuffle=True, seed=1)
    model, _ = fit_model(cfg, info, ds, None, tf.distribute.OneDeviceStrategy("/cpu:0"),
                         spec=spec)
    history = model.history.history
    for term in ("bce_ctr", "bce_cvr", "bce_view", "rel_cvr", "rel_view", "cl_cvr", "cl_view"):
        assert np.all(np.isfinite(history[term])), term
    assert history["bce_view"][-1] < history["bce_view"][0]  # the view head learns
    assert sorted(model.network.output_names) == ["ctcvr", "ctr", "cvr", "view"]
    report = evaluate_heads(model.network, from_arrays(arrays, info.input_names, spec, 500))
    assert sorted(report) == ["ctcvr", "ctr", "cvr"]  # no label for view at evaluation
