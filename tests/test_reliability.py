"""Faults: divergence, degenerate batches, a killed trainer, determinism, bad rows skipped."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from funnelrank import cli
from schemas import config as config_lib
from tests import fixtures
from tests.test_kaml_recipe import _cfg as kaml_cfg
from trainer.data import from_arrays
from trainer.errors import TrainingDivergedError
from trainer.session import build_model, fit_model
from transform.ingest import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_divergence_stops_training_naming_step_terms_and_batch():
    _, arrays, info = fixtures.tiny_arrays(1000)
    cfg = fixtures.tiny_config(learning_rate=1e12, epochs=3)
    ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 100, shuffle=True)
    with pytest.raises(TrainingDivergedError) as err:
        fit_model(cfg, info, ds, None, tf.distribute.OneDeviceStrategy("/cpu:0"))
    text = str(err.value)
    assert "training diverged at epoch 1, step" in text and "non-finite ['" in text
    batch = text.split("; batch: ")[1]
    assert batch.startswith("ctcvr_positives=") and "ctr_positives=" in batch
    assert "rows=100." in batch
    assert "Lower train.learning_rate" in text


RECIPES = {
    "esmm": {}, "pwiser": {"loss": {"name": "pwiser"}},
    "pwiser_ctcvr": {"loss": {"name": "pwiser", "args": {"head": "ctcvr"}}},
    "adaftr": {"loss": {"name": "adaftr"}},
    "uncertainty": {"loss": {"name": "uncertainty", "weights": {}}},
}


@pytest.mark.parametrize("recipe", list(RECIPES) + ["kaml"])
@pytest.mark.parametrize("batch", ["no_clicks", "no_conversions", "all_converted"])
def test_no_loss_is_ever_nan_on_degenerate_batches(recipe, batch):
    if recipe == "kaml":
        cfg = kaml_cfg()
        spec, _, arrays, info = fixtures.adm_arrays()
    else:
        _, arrays, info = fixtures.tiny_arrays(600)
        spec = fixtures.TINY_SPEC
        d = config_lib.to_dict(fixtures.tiny_config())
        for key, value in RECIPES[recipe].items():
            d[key] = {**d[key], **value}
        cfg = config_lib.from_dict(d)
    model = build_model(cfg, info)
    x, labels = next(iter(from_arrays(arrays, info.input_names, spec, 64)))
    labels = dict(labels)
    ones, zeros = tf.ones_like(labels["ctr"]), tf.zeros_like(labels["ctr"])
    labels["ctr"], labels["cvr"] = {
        "no_clicks": (zeros, zeros), "no_conversions": (ones, zeros),
        "all_converted": (ones, ones)}[batch]
    if "actions" in labels:
        labels["actions"] = labels["actions"] * labels["cvr"][:, None]
    with tf.GradientTape() as tape:
        terms = model.loss_terms(labels, model.training_outputs(x, labels, training=True))
        total = tf.add_n(list(terms.values()))
    grads = tape.gradient(total, model.step_variables)
    assert all(np.isfinite(float(v)) for v in terms.values()), terms
    assert all(g is None or np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in grads)


TRAIN_CONFIG = """\
base: {root}/configs/synthetic_mmoe.yaml
name: killed
data: {{generate_rows: 30000}}
train: {{batch_size: 32, epochs: 2, checkpoint_every_steps: 40}}
"""


def _train_cmd(config, out):
    return [sys.executable, "-m", "funnelrank.cli", "train", "--config", str(config),
            "--out", str(out)]


@pytest.mark.slow
def test_a_killed_trainer_resumes_from_its_checkpoint_and_finishes_the_same_steps(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(TRAIN_CONFIG.format(root=ROOT))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen(_train_cmd(config, out), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    backup = out / "backup"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        saved = [f for _, _, files in os.walk(backup) for f in files if f.startswith("ckpt")]
        if len(saved) >= 2:  # a checkpoint past the first one: mid-epoch, well under way
            break
        time.sleep(0.5)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "metrics.json").exists() and backup.exists()
    done = subprocess.run(_train_cmd(config, out), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    steps_per_epoch = -(-metrics["rows"]["train"] // 32)
    assert metrics["steps"] == 2 * steps_per_epoch
    resumed = metrics["resumed_at"]
    assert resumed["epoch"] > 1 or resumed["step"] > 1
    assert "resumed from a checkpoint" in done.stderr
    assert not backup.exists() or not os.listdir(backup)  # deleted after a finished run


def test_skip_bad_rows_drops_and_reports_instead_of_failing(tmp_path, capsys):
    frame = synthetic.generate(300, seed=2)
    frame = frame.astype({"price": object})
    frame.loc[4, "price"] = "cheap"
    frame.loc[9, ["click", "conversion"]] = [0, 1]
    frame.loc[11, "click"] = 3
    path = tmp_path / "impressions.csv"
    frame.to_csv(path, index=False)
    config = tmp_path / "c.yaml"
    config.write_text(f"base: {ROOT}/configs/synthetic_mmoe.yaml\n"
                      f"pipeline: {{root: {tmp_path / 'work'}}}\n")
    assert cli.main(["prepare", "--config", str(config), "--data", str(path)]) == 2
    capsys.readouterr()
    assert cli.main(["prepare", "--config", str(config), "--data", str(path),
                     "--skip-bad-rows"]) == 0
    printed = capsys.readouterr().out
    assert ("validated 300 rows, kept 297, dropped 3 (conversion_without_click: 1, "
            "label_not_binary: 1, not_a_number: 1)") in printed


@pytest.mark.slow
def test_same_seed_and_data_give_the_same_metrics_whatever_ran_before(tmp_path):
    """Determinism on CPU: two runs with the same seed and data give the same metrics, even
    with another seed used in between (a shuffle's order also depends on TF's global seed, so
    train() must set it before making the datasets)."""
    from funnelrank.commands import train as train_local

    config = tmp_path / "c.yaml"
    config.write_text(f"base: {ROOT}/configs/synthetic_mmoe.yaml\n"
                      "data: {generate_rows: 6000}\ntrain: {seed: 5}\n")
    cfg = config_lib.load(str(config))
    first = train_local.train(cfg, str(tmp_path / "a"))["heads"]
    tf.keras.utils.set_random_seed(999)  # what another run before it would leave behind
    tf.random.uniform([3])
    second = train_local.train(cfg, str(tmp_path / "b"))["heads"]
    for head in first:
        assert np.isfinite(first[head]["auc"]) and np.isfinite(first[head]["logloss"])
        for key in ("auc", "logloss", "gauc"):  # gauc is NaN when no user has both labels
            assert first[head][key] == pytest.approx(second[head][key], abs=1e-6, nan_ok=True)
