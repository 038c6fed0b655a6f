"""Baselines (trainer.baselines): the matrices, the fits against scikit-learn and LightGBM run
directly on the same data, validation-only choices, the metrics shape and the argument errors."""
import json
import os

import lightgbm as lgb
import numpy as np
import pytest
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder

from schemas import config as config_lib
from tests import fixtures
from trainer import baselines
from trainer import metrics as offline

SPEC = fixtures.TINY_SPEC


def splits(rows=3000):
    pre, train, info = fixtures.tiny_arrays(rows, seed=0)
    frames = {"validation": fixtures.tiny_frame(1500, seed=1),
              "eval": fixtures.tiny_frame(1500, seed=2)}
    out = {"train": train, **{k: pre.transform(v) for k, v in frames.items()}}
    return pre.vocab_sizes, out


def direct_matrix(arrays, vocab_sizes, crosses_seen=None):
    """The one-hot design built independently: scikit-learn's OneHotEncoder over every id,
    the dense z-score, and the cross user x item as its own categorical column."""
    ids = np.concatenate([arrays[f"{k}_xf"] for k in vocab_sizes], axis=1)
    enc = OneHotEncoder(categories=[np.arange(s) for s in vocab_sizes.values()])
    parts = [enc.fit_transform(ids), sparse.csr_matrix(arrays["price_xf"].astype(np.float64))]
    if crosses_seen is not None:
        code = arrays["user_xf"][:, 0] * vocab_sizes["item"] + arrays["item_xf"][:, 0]
        cross = OneHotEncoder(categories=[crosses_seen], handle_unknown="ignore")
        parts.append(cross.fit_transform(code.reshape(-1, 1)))
    return sparse.hstack(parts).tocsr()


def test_one_hot_matrix_equals_an_independent_construction():
    vocab_sizes, data = splits()
    design = baselines.OneHot(vocab_sizes, ("price",), (("user", "item"),)).fit(data["train"])
    seen = np.unique(data["train"]["user_xf"][:, 0] * vocab_sizes["item"]
                     + data["train"]["item_xf"][:, 0])
    for split in ("train", "eval"):
        ours = design.transform(data[split]).toarray()
        theirs = direct_matrix(data[split], vocab_sizes, seen).toarray()
        np.testing.assert_array_equal(ours, theirs)
    # An id beyond the vocabulary goes to the OOV column, as in FeatureEmbedding.
    odd = {k: v[:1].copy() for k, v in data["eval"].items()}
    odd["item_xf"][:] = 10_000
    row = design.transform(odd).toarray()[0]
    assert row[vocab_sizes["user"] + vocab_sizes["item"] - 1] == 1.0


def test_logistic_predictions_match_scikit_learn_run_directly():
    vocab_sizes, data = splits()
    baseline = baselines.parse({"name": "logistic", "C": 0.3, "tol": 1e-8})
    fitted = baselines.fit(baseline, SPEC, vocab_sizes, ("ctr", "cvr"), True, data["train"],
                           data["validation"])
    train, ev = data["train"], data["eval"]
    x, x_eval = direct_matrix(train, vocab_sizes), direct_matrix(ev, vocab_sizes)
    click, conv = train["click_xf"][:, 0], train["conversion_xf"][:, 0]
    ctr = LogisticRegression(C=0.3, solver="liblinear", tol=1e-8, max_iter=500).fit(x, click)
    clicked = click > 0.5
    cvr = LogisticRegression(C=0.3, solver="liblinear", tol=1e-8, max_iter=500).fit(
        x[clicked], conv[clicked])
    out = fitted.predict(ev)
    p_ctr, p_cvr = ctr.predict_proba(x_eval)[:, 1], cvr.predict_proba(x_eval)[:, 1]
    np.testing.assert_allclose(out["ctr"], p_ctr, atol=1e-6)
    np.testing.assert_allclose(out["cvr"], p_cvr, atol=1e-6)
    np.testing.assert_allclose(out["ctcvr"], p_ctr * p_cvr, atol=1e-6)  # ESMM's product


def test_logistic_chooses_c_on_the_validation_split_only():
    vocab_sizes, data = splits()
    grid = [0.001, 0.1, 10.0]
    baseline = baselines.parse({"name": "logistic", "C": grid, "tol": 1e-8})
    fitted = baselines.fit(baseline, SPEC, vocab_sizes, ("ctr",), True, data["train"],
                           data["validation"])
    x, x_val = (direct_matrix(data[s], vocab_sizes) for s in ("train", "validation"))
    y, y_val = data["train"]["click_xf"][:, 0], data["validation"]["click_xf"][:, 0]
    losses = [offline.logloss(y_val, LogisticRegression(C=c, solver="liblinear", tol=1e-8,
                                                        max_iter=500).fit(x, y)
                              .predict_proba(x_val)[:, 1]) for c in grid]
    assert fitted.chosen["ctr"]["C"] == grid[int(np.argmin(losses))]
    np.testing.assert_allclose(sorted(fitted.chosen["ctr"]["validation_logloss"].values()),
                               sorted(losses), rtol=1e-4)


def test_lightgbm_predictions_match_lightgbm_run_directly():
    vocab_sizes, data = splits()
    baseline = baselines.parse({"name": "lightgbm", "min_data_in_leaf": 20,
                                "early_stopping_rounds": 10, "num_threads": 1})
    fitted = baselines.fit(baseline, SPEC, vocab_sizes, ("ctr", "cvr"), True, data["train"],
                           data["validation"], seed=5)

    def matrix(a):
        return np.concatenate([a["user_xf"], a["item_xf"], a["price_xf"]], axis=1).astype(
            np.float64)

    params = {"objective": "binary", "metric": "binary_logloss", "learning_rate": 0.05,
              "num_leaves": 31, "min_data_in_leaf": 20, "cat_smooth": 10.0, "cat_l2": 10.0,
              "lambda_l2": 0.0, "num_threads": 1, "seed": 5, "deterministic": True,
              "force_col_wise": True, "verbosity": -1}
    train, val, ev = data["train"], data["validation"], data["eval"]
    expected = {}
    for task, rows, val_rows, label in (
            ("ctr", slice(None), slice(None), "click_xf"),
            ("cvr", train["click_xf"][:, 0] > 0.5, val["click_xf"][:, 0] > 0.5,
             "conversion_xf")):
        ds = lgb.Dataset(matrix(train)[rows], train[label][rows, 0], categorical_feature=[0, 1])
        dv = lgb.Dataset(matrix(val)[val_rows], val[label][val_rows, 0],
                         categorical_feature=[0, 1], reference=ds)
        booster = lgb.train(params, ds, num_boost_round=2000, valid_sets=[dv],
                            callbacks=[lgb.early_stopping(10, verbose=False)])
        expected[task] = booster.predict(matrix(ev), num_iteration=booster.best_iteration)
        assert fitted.chosen[task]["best_iteration"] == booster.best_iteration
    out = fitted.predict(ev)
    np.testing.assert_allclose(out["ctr"], expected["ctr"], atol=1e-12)
    np.testing.assert_allclose(out["cvr"], expected["cvr"], atol=1e-12)
    np.testing.assert_allclose(out["ctcvr"], expected["ctr"] * expected["cvr"], atol=1e-12)


def test_funnel_order_tasks_derive_cvr_as_the_ratio_head_does():
    vocab_sizes, data = splits()
    fitted = baselines.fit(baselines.parse({"name": "logistic", "C": 1.0}), SPEC, vocab_sizes,
                           ("ctr", "ctcvr"), True, data["train"], data["validation"])
    out = fitted.predict(data["eval"])
    np.testing.assert_allclose(out["cvr"], np.clip(out["ctcvr"] / out["ctr"], 0, 1))
    assert set(out) == {"ctr", "cvr", "ctcvr"}


def test_run_scores_heads_as_the_networks_are_scored():
    vocab_sizes, data = splits()
    result = baselines.run(baselines.parse("logistic"), SPEC, vocab_sizes, ("ctr", "cvr"),
                           True, data)
    heads = result["heads"]
    assert set(heads) == {"ctr", "cvr", "ctcvr"}
    clicks = int(data["eval"]["click_xf"].sum())
    assert heads["cvr"]["count"] == clicks  # cvr on clicked rows only
    assert heads["ctr"]["count"] == heads["ctcvr"]["count"] == 1500
    for m in heads.values():
        assert {"auc", "logloss", "gauc", "count", "positives"} <= set(m)
    assert heads["ctr"]["auc"] > 0.7  # clicks depend on item and price: learnable
    assert set(result["validation_heads"]) == {"ctr", "cvr", "ctcvr"}
    assert result["baseline"]["tasks"]["ctr"]["C"] in baselines.LogisticArgs().C


@pytest.mark.parametrize("value, message", [
    ("ridge", r"`baseline.name` must be one of \['logistic', 'lightgbm'\], received: "
              r"baseline.name='ridge'"),
    ({"name": "logistic", "alpha": 1}, r"unknown argument\(s\) \['alpha'\] of the logistic"),
    ({"name": "logistic", "C": 0}, r"`baseline.C` must be a positive number, received: "
                                   r"baseline.C=0"),
    ({"name": "logistic", "C": []}, r"`baseline.C` must be a positive number or a non-empty"),
    ({"name": "logistic", "crosses": [["a"]]}, r"`baseline.crosses\[0\]` must be a pair"),
    ({"name": "logistic", "crosses": [["a", "a"]]}, r"`baseline.crosses\[0\]` must be a pair"),
    ({"name": "logistic", "crosses": "a"}, r"`baseline.crosses` must be a list"),
    ({"name": "logistic", "solver": "newton"}, r"`baseline.solver` must be one of"),
    ({"name": "lightgbm", "num_leaves": 1}, r"`baseline.num_leaves` must be at least 2"),
    ({"name": "lightgbm", "learning_rate": -1}, r"`baseline.learning_rate` must be a positive"),
    ({"name": "lightgbm", "max_rounds": 0}, r"`baseline.max_rounds` must be a positive int"),
    (3, r"baseline: expected a baseline name"),
])
def test_invalid_arguments_are_named(value, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        baselines.parse(value)


def test_cross_of_an_unknown_feature_and_per_action_tasks_are_refused():
    vocab_sizes, data = splits()
    with pytest.raises(config_lib.ConfigError, match=r"`baseline.crosses\[0\]` names 'shop'"):
        baselines.fit(baselines.parse({"name": "logistic", "crosses": [["user", "shop"]]}),
                      SPEC, vocab_sizes, ("ctr",), True, data["train"], data["validation"])
    with pytest.raises(config_lib.ConfigError, match=r"\[ctr, actions\].*has no baseline"):
        baselines.task_rows(("ctr", "actions"), True, SPEC.label_keys)


def test_cli_train_baseline_writes_metrics_json(tmp_path):
    from funnelrank import cli

    out = tmp_path / "lr"
    code = cli.main(["-q", "train", "--config", "configs/mmoe.yaml", "--rows", "3000",
                     "--baseline", "logistic", "--baseline-args",
                     "{C: 0.1, crosses: [[user_segment, category_id]]}", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["heads"]) == {"ctr", "cvr", "ctcvr"}
    assert metrics["baseline"]["name"] == "logistic"
    assert metrics["baseline"]["crosses"] == [["user_segment", "category_id"]]
    assert set(metrics["rows"]) == {"train", "validation", "eval"}
    assert not os.path.exists(out / "model")  # a yardstick: nothing to export
    assert cli.main(["-q", "train", "--config", "configs/mmoe.yaml", "--rows", "3000",
                     "--baseline", "logistic", "--baseline-args", "{C: -1}",
                     "--out", str(out)]) == 2


def test_bench_grid_runs_baselines_beside_networks(tmp_path):
    import yaml

    from funnelrank.commands import bench

    grid_path = tmp_path / "g.yaml"
    grid_path.write_text(yaml.safe_dump({
        "name": "g", "rows": 3000, "seeds": [1], "metrics": ["ctr.auc", "ctcvr.auc"],
        "runs": [{"label": "LR", "config": "configs/mmoe.yaml",
                  "baseline": {"name": "logistic", "C": [0.1, 1.0]}},
                 {"label": "LightGBM", "config": "configs/mmoe.yaml", "baseline": "lightgbm"}]}))
    results = bench.run_grid(bench.load_grid(str(grid_path)), str(tmp_path / "out"),
                             work_dir=str(tmp_path / "work"))
    lr, gbm = results["runs"]
    assert lr["baseline"] == {"name": "logistic", "C": [0.1, 1.0]}
    # Better than random with a margin (measured: 0.685 and 0.600 at seed 1; the old bounds
    # admitted 0.3 for CTCVR, worse than random).
    assert lr["metrics"]["ctr.auc"]["mean"] > 0.62
    assert gbm["metrics"]["ctcvr.auc"]["mean"] > 0.55
    assert "| LR | " in (tmp_path / "out" / "g.md").read_text()

    grid_path.write_text(yaml.safe_dump({
        "name": "g", "seeds": [1], "metrics": ["ctr.auc"],
        "runs": [{"label": "LR", "config": "configs/mmoe.yaml",
                  "baseline": {"name": "logistic", "C": "big"}}]}))
    with pytest.raises(config_lib.ConfigError, match=r"runs\[0\].baseline.C` must be a positive"):
        bench.load_grid(str(grid_path))
