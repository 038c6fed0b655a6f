"""The command line: generate, train (fast path) and its error reporting."""
import json
import os
import re

import pandas as pd
import pytest

from funnelrank import cli
from transform.ingest import synthetic

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "ali_ccp_sample")


def test_generate_is_seeded(tmp_path, capsys):
    assert cli.main(["generate", "--rows", "300", "--out", str(tmp_path / "a"), "--seed", "3"]) == 0
    assert cli.main(["generate", "--rows", "300", "--out", str(tmp_path / "b"), "--seed", "3"]) == 0
    a = pd.read_csv(tmp_path / "a" / "impressions.csv")
    b = pd.read_csv(tmp_path / "b" / "impressions.csv")
    assert len(a) == 300
    pd.testing.assert_frame_equal(a, b)
    assert "wrote 300 rows" in capsys.readouterr().out


def test_generate_hard_mode_string_ids_and_missing_cells(tmp_path, capsys):
    from transform.ingest import synthetic

    assert cli.main(["generate", "--rows", "2000", "--out", str(tmp_path / "h"), "--seed", "4",
                     "--mode", "hard", "--string-ids", "--missing-rate", "0.1"]) == 0
    frame = pd.read_csv(tmp_path / "h" / "impressions.csv")
    expected = synthetic.generate(2000, seed=4, mode="hard")
    assert (frame["user_id"] == "u_" + expected["user_id"].astype(str)).all()
    assert 0.05 < frame["item_id"].isna().mean() < 0.15
    assert cli.main(["generate", "--rows", "10", "--out", str(tmp_path / "x"),
                     "--missing-rate", "1.5"]) == 2
    assert "`--missing-rate` must be a finite number >= 0 and < 1, received: " \
           "--missing-rate=1.5" in capsys.readouterr().err


@pytest.mark.slow
def test_train_writes_metrics_json_with_every_head(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--config", "configs/synthetic_mmoe.yaml", "--rows", "40000",
                     "--epochs", "1", "--out", str(out)]) == 0
    metrics = json.load(open(out / "metrics.json"))
    assert metrics["rows"]["train"] + metrics["rows"]["validation"] + \
        metrics["rows"]["eval"] == 40000
    assert set(metrics["heads"]) == {"ctr", "cvr", "ctcvr"}
    for head in ("ctr", "cvr", "ctcvr"):
        assert set(metrics["heads"][head]) >= {"auc", "logloss"}
    assert metrics["heads"]["ctr"]["auc"] > 0.55
    assert metrics["examples_per_sec"] > 0
    printed = capsys.readouterr().out
    assert "ctr: AUC" in printed and "ctcvr: AUC" in printed
    assert os.path.exists(out / "model" / "saved_model.pb")

    # The trained output goes to TF Serving's layout and loads there, from the command line.
    base = tmp_path / "serving"
    assert cli.main(["export", "--model", str(out), "--out", str(base), "--version", "7",
                     "--name", "ranker"]) == 0
    assert os.path.exists(base / "7" / "saved_model.pb")
    assert 'name: "ranker"' in (base / "models.config").read_text()
    assert cli.main(["export", "--model", str(out), "--out", str(base), "--version", "7"]) == 2
    capsys.readouterr()
    assert cli.main(["serve-check", str(base), "--repeats", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"model: {base / '7'}" in printed and "serve-check: OK" in printed
    assert "signature predict_raw:" in printed and "output ctcvr: float32[-1]" in printed


@pytest.mark.slow
def test_train_on_the_real_ali_ccp_sample(tmp_path, ali_ccp_dir):
    out = tmp_path / "ali"
    assert cli.main(["train", "--config", "configs/ali_ccp_mmoe.yaml", "--data", ali_ccp_dir,
                     "--epochs", "1", "--out", str(out)]) == 0
    metrics = json.load(open(out / "metrics.json"))
    assert metrics["rows"] == {"train": 100, "validation": 50, "eval": 50}  # val, test files
    assert metrics["heads"]["ctr"]["count"] == 50
    # validation_heads score the same model on the validation split (the val file, 50 rows).
    assert metrics["validation_heads"]["ctr"]["count"] == 50
    assert set(metrics["validation_heads"]) == {"ctr", "cvr", "ctcvr"}
    # The held-out metrics are on the eval split (the test file): 2 clicks, 1 purchase there.
    assert metrics["heads"]["cvr"]["count"] == 2
    assert metrics["heads"]["ctcvr"]["positives"] == 1


def _bad_csv(tmp_path, mutate):
    frame = synthetic.generate(40, seed=2)
    frame = mutate(frame)
    path = tmp_path / "impressions.csv"
    frame.to_csv(path, index=False)
    return str(path)


def _drop_price(f):
    return f.drop(columns=["price"])


def _text_price(f):
    f = f.astype({"price": object})
    f.loc[4, "price"] = "cheap"
    return f


def _conversion_without_click(f):
    f.loc[9, ["click", "conversion"]] = [0, 1]
    return f


@pytest.mark.parametrize("mutate, pattern", [
    (_drop_price, r"impressions\.csv.*missing.*price"),
    (_text_price, r"impressions\.csv.*row 5.*price.*cheap"),
    (_conversion_without_click, r"impressions\.csv.*row 10.*conversion"),
])
def test_bad_input_fails_before_training_naming_file_row_column(tmp_path, capsys, mutate,
                                                                 pattern):
    path = _bad_csv(tmp_path, mutate)
    code = cli.main(["train", "--config", "configs/synthetic_mmoe.yaml", "--data", path,
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert re.search(pattern, err, re.S), err
    assert not os.path.exists(tmp_path / "out" / "metrics.json")


def test_unknown_config_key_is_reported(tmp_path, capsys):
    bad = tmp_path / "c.yaml"
    bad.write_text("train: {epochz: 1}\n")
    assert cli.main(["train", "--config", str(bad)]) == 2
    assert "unknown key(s) ['epochz']" in capsys.readouterr().err
