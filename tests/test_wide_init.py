"""model.wide_init (trainer.wide_init): the untrained network predicts exactly what the fitted
logistic regression does; training then starts from there; frozen wide weights stay; the
errors of the paths that cannot fit it."""
import numpy as np
import pytest
import tensorflow as tf

from schemas import config as config_lib
from tests import fixtures
from trainer import baselines, wide_init
from trainer import session as session_lib
from trainer.data import from_arrays, load_transformed

SPEC = fixtures.TINY_SPEC


def config(model=None, **train):
    base = {"batch_size": 128, "epochs": 1, "learning_rate": 0.01, "seed": 3}
    base.update(train)
    return config_lib.from_dict({
        "data": {"adapter": "csv", "path": "unused.csv", "labels": {"ctr": "click",
                                                                  "cvr": "conversion"},
                 "features": {"sparse": ["user", "item"], "dense": ["price"], "user": "user"}},
        "model": {"backbone": "mmoe", "backbone_args": {"num_experts": 2, "expert_units": [8]},
                  "embedding_dim": 4, "tower_units": [8], "wide": True,
                  "wide_init": "logistic", "wide_init_C": [0.1, 1.0], **(model or {})},
        "train": base})


def data(rows=3000):
    pre, train, info = fixtures.tiny_arrays(rows, seed=0)
    validation = pre.transform(fixtures.tiny_frame(1500, seed=1))
    evaluation = pre.transform(fixtures.tiny_frame(1500, seed=2))
    return info, train, validation, evaluation


def started(cfg, strategy=None):
    """(session, untrained model, fitted LR, eval arrays) with the LR fitted as fit() does."""
    info, train, validation, evaluation = data()
    session = session_lib.TrainingSession(cfg, SPEC, info, strategy)
    session.wide_start = wide_init.fit_logistic(cfg, SPEC, info.vocab_sizes, train, validation)
    return session, session.build(), session.wide_start, evaluation


def predictions(model, arrays, info):
    ds = from_arrays(arrays, info.input_names, SPEC, 500, shuffle=False)
    out = model.network.predict(ds.map(lambda x, y: x), verbose=0)
    return {k: np.asarray(v).reshape(-1) for k, v in out.items()}


@pytest.mark.parametrize("model", [
    {},
    {"wide_crosses": [["user", "item"]]},  # the product of the sizes: exact codes
    {"wide_crosses": [["user", "item"]], "wide_cross_buckets": 5000},  # exact still
], ids=["ids and dense", "cross", "cross, room to spare"])
def test_the_untrained_network_is_the_fitted_regression(model):
    cfg = config(model)
    session, net, fitted, evaluation = started(cfg)
    got = predictions(net, evaluation, session.info)
    want = fitted.predict(evaluation)
    for head in ("ctr", "cvr", "ctcvr"):
        np.testing.assert_allclose(got[head], want[head], rtol=2e-5, atol=1e-6, err_msg=head)
    # the case is not trivial: the regression's predictions vary across rows
    assert np.std(want["ctr"]) > 0.05 and np.std(want["cvr"]) > 0.05
    assert {t: r["C"] for t, r in session.wide_init_report["tasks"].items()} == {
        t: c["C"] for t, c in fitted.chosen.items()}


def test_hashed_cross_rows_are_the_layers_own():
    """With fewer buckets than joint values, each seen value's weight lands in the row the
    layer looks it up in (summed where two values share a row)."""
    cfg = config({"wide_crosses": [["user", "item"]], "wide_cross_buckets": 97})
    session, net, fitted, _ = started(cfg)
    wide = net.network.get_layer("wide")
    pair = ("user_xf", "item_xf")
    seen = fitted.design.cross_values[0]
    items = fitted.vocab_sizes["item"]  # OOV included
    rows = wide.cross_ids({"user_xf": tf.constant(seen // items),
                           "item_xf": tf.constant(seen % items)}, pair).numpy()
    assert rows.max() < 97 and len(np.unique(rows)) < len(seen)  # hashed, with collisions
    offset = sum(fitted.vocab_sizes.values()) + 1  # ids, then the one dense column
    coef = fitted.models["ctr"].coef_.reshape(-1)[offset:offset + len(seen)]
    want = np.zeros(97)
    np.add.at(want, rows, coef)
    table = wide.cross_tables["user_xf_x_item_xf"].embeddings.numpy()
    np.testing.assert_allclose(table[:, 0], want, rtol=1e-5, atol=1e-7)


def test_fit_starts_from_the_regression_and_frozen_keeps_it():
    info, train, validation, _ = data()
    for frozen in (False, True):
        cfg = config({"wide_frozen": frozen}, epochs=1)
        session = session_lib.TrainingSession(cfg, SPEC, info)
        model, progress = session.fit(session_lib.SplitData(arrays=train),
                                      session_lib.SplitData(arrays=validation))
        want = wide_init.wide_weights(session.wide_start, model.network.get_layer("wide"))
        table = model.network.get_layer("wide").tables["item_xf"].embeddings.numpy()
        report = progress.summary["wide_init"]
        assert report["frozen"] is frozen and set(report["tasks"]) == {"ctr", "cvr"}
        if frozen:
            np.testing.assert_array_equal(table, want["tables"]["item_xf"])
        else:
            assert np.abs(table - want["tables"]["item_xf"]).max() > 1e-3
        kernel = model.network.get_layer("ctr/logit").kernel.numpy()
        assert np.abs(kernel).max() > 0  # the deep logit learned from its zero start


def test_under_two_replicas_the_start_is_the_regression(two_cpu_strategy):
    cfg = config({"wide_crosses": [["user", "item"]]})
    session, net, fitted, evaluation = started(cfg, two_cpu_strategy)
    got = predictions(net, evaluation, session.info)
    np.testing.assert_allclose(got["ctcvr"], fitted.predict(evaluation)["ctcvr"], rtol=2e-5,
                               atol=1e-6)
    wide = net.network.get_layer("wide")
    for value in two_cpu_strategy.experimental_local_results(wide.tables["user_xf"].embeddings):
        np.testing.assert_array_equal(value.numpy(),
                                      wide_init.wide_weights(fitted, wide)["tables"]["user_xf"])


def test_ready_datasets_cannot_fit_the_regression_and_say_so():
    info = data()[0]
    session = session_lib.TrainingSession(config(), SPEC, info)
    with pytest.raises(config_lib.ConfigError,
                       match="model.wide_init needs TrainingSession.fit .*not ready datasets"):
        session.build()


def test_a_large_train_split_gives_the_regression_a_seeded_sample():
    info, train, _, _ = data()
    assert wide_init.sample_rows(train, 3000, seed=1) is train  # small enough: all of it
    a, b = (wide_init.sample_rows(train, 1000, seed=1) for _ in range(2))
    assert {len(v) for v in a.values()} == {1000}
    for k in train:
        np.testing.assert_array_equal(a[k], b[k])
    c = wide_init.sample_rows(train, 1000, seed=2)
    assert not np.array_equal(a["user_xf"], c["user_xf"])


def test_a_streaming_train_split_fits_the_regression_on_its_first_rows(tmp_path, caplog):
    info, train, validation, _ = data()
    columns = sorted(train)
    half = len(train[columns[0]]) // 2
    for i, part in enumerate((slice(0, half), slice(half, None))):
        fixtures.write_gzipped_examples({k: v[part] for k, v in train.items()},
                                        tmp_path / f"t-{i}.gz", columns)
    spec = fixtures.scalar_feature_spec(train, columns)
    streaming = session_lib.SplitData(files=[str(tmp_path / "t-*.gz")], feature_spec=spec,
                                      count=None)
    cfg = config({"wide_init_max_rows": 800}, in_memory=False)
    session = session_lib.TrainingSession(cfg, SPEC, info)
    with caplog.at_level("WARNING"):
        session.fit(streaming, session_lib.SplitData(arrays=validation))
    assert ("the train split streams; the regression is fitted on its first 800 rows (one row "
            "from each file in turn)") in caplog.text
    first = load_transformed(str(tmp_path / "t-*.gz"), spec, session.columns, max_rows=800)
    direct = wide_init.fit_logistic(cfg, SPEC, info.vocab_sizes, first, validation)
    for task, model in direct.models.items():
        np.testing.assert_allclose(session.wide_start.models[task].coef_, model.coef_,
                                   rtol=1e-6, atol=1e-8)


def test_wide_features_must_be_the_regressions():
    cfg = config()
    session, net, fitted, _ = started(cfg)
    other = baselines.fit(baselines.parse({"name": "logistic", "C": 1.0,
                                           "crosses": [["user", "item"]]}),
                          SPEC, fitted.vocab_sizes, ("ctr", "cvr"), True,
                          *data()[1:3])
    with pytest.raises(config_lib.ConfigError, match=r"crosses \[\('user_xf', 'item_xf'\)\]\) "
                                                     r"are not the wide part's"):
        wide_init.wide_weights(other, net.network.get_layer("wide"))


@pytest.mark.parametrize("overrides, message", [
    ({"model.wide_init": "lightgbm"},
     r"`model.wide_init` must be one of \['logistic'\], received: model.wide_init='lightgbm'"),
    ({"model.wide": False, "model.wide_init": "logistic"},
     r"model.wide_init needs model.wide: true"),
    ({"model.wide_init_C": []}, r"model.wide_init_C: expected a non-empty list of numbers > 0"),
    ({"model.wide_init_C": [0.1, -1]}, r"model.wide_init_C: expected .* got \(0.1, -1.0\)"),
    ({"model.wide_init": None, "model.wide_frozen": True},
     r"model.wide_frozen needs model.wide_init"),
    ({"model.wide_init_max_rows": 0}, r"`model.wide_init_max_rows` must be a positive int"),
])
def test_invalid_wide_init_settings_are_named(overrides, message):
    with pytest.raises(config_lib.ConfigError,
                       match=r"configs/mmoe.yaml \(overridden: [^)]+\): " + message):
        config_lib.load("configs/mmoe.yaml", overrides)


def test_per_action_tasks_have_no_regression_to_start_from():
    with pytest.raises(config_lib.ConfigError,
                       match=r"configs/kaml.yaml \(overridden: model.wide_init='logistic'\): "
                             r"model.wide_init: logistic has no regression "
                             r"for model.tasks \['ctr', 'actions'\]"):
        config_lib.load("configs/kaml.yaml", {"model.wide": True, "model.hke": False,
                                               "model.wide_init": "logistic"})


def test_wide_init_round_trips_through_the_config():
    cfg = config_lib.load("configs/mmoe.yaml", {"model.wide_init": "logistic",
                                                "model.wide_init_C": [0.3],
                                                "model.wide_frozen": True})
    again = config_lib.from_dict(config_lib.to_dict(cfg))
    assert again == cfg and again.model.wide_init_C == (0.3,)
