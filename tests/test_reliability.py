"""Faults: divergence, degenerate batches, a killed trainer (mid-run and while saving),
determinism, bad rows skipped."""
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

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


@pytest.mark.parametrize("steps_per_execution, where", [
    (1, r"training diverged at epoch 1, step \d+ \(optimizer step \d+\): non-finite \['"),
    (8, r"training diverged at epoch 1, one of steps \d+-\d+ \(train.steps_per_execution\) "
        r"\(optimizer step \d+\): non-finite \['"),
])
def test_divergence_stops_training_naming_step_terms_and_batch(steps_per_execution, where):
    _, arrays, info = fixtures.tiny_arrays(1000)
    cfg = fixtures.tiny_config(learning_rate=1e12, epochs=3,
                               steps_per_execution=steps_per_execution)
    ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 100, shuffle=True)
    with pytest.raises(TrainingDivergedError) as err:
        fit_model(cfg, info, ds, None, tf.distribute.OneDeviceStrategy("/cpu:0"))
    text = str(err.value)
    assert re.search(where, text), text
    batch = text.split("; batch: ")[1]
    assert re.match(r"ctr_positives=\d+, cvr_positives=\d+, rows=100\. ", batch), batch
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


def _paused(tmp_path, point, argv):
    """``funnelrank ARGV`` in a subprocess paused at ``point`` (``tests/pause_and_run.py``):
    ``(process, marker, stderr file)`` once it waits there (stderr goes to a file: a pipe
    nobody reads could fill and block the process before it gets there)."""
    name = uuid.uuid4().hex
    marker, log = tmp_path / f"paused-{name}", tmp_path / f"stderr-{name}.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tests.pause_and_run", str(marker),
                                 point] + argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                                stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 300
    while not marker.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"never reached {point} (exit {proc.returncode}): "
                        f"{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return proc, marker, log


def _kill_9(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _train_cmd(config, out):
    return [sys.executable, "-m", "funnelrank.cli", "train", "--config", str(config),
            "--out", str(out)]


@pytest.mark.slow
@pytest.mark.parametrize("every, pause, resumed", [
    (None, "step:1:2", {"epoch": 2, "step": 1}),
    (3, "step:0:4", {"epoch": 1, "step": 4}),
], ids=["shipped_defaults_epoch_end", "step_interval_mid_epoch"])
def test_a_killed_trainer_resumes_from_its_checkpoint_and_finishes_the_same_steps(
        tmp_path, every, pause, resumed):
    """kill -9 mid-run, then the same command: it resumes, and ends with the steps and the
    throughput of the whole run.

    ``shipped_defaults_epoch_end``: the shipped config's batch (1024) and checkpoint interval
    (500 steps: more than an epoch has, here 8 steps, at the shipped 200k rows 141), two
    epochs, killed at epoch 2 step 3: only the epoch-end checkpoint can save the first
    epoch. ``step_interval_mid_epoch``: the step-interval checkpoint, which
    only a few hundred thousand rows per epoch would reach at the default 500 steps, so the
    interval is 3: killed at epoch 1 step 5, it resumes at step 4 (after the checkpoint of
    step 3), mid-epoch. The kill lands at a known step: the process waits there
    (``tests/pause_and_run.py``) until killed, instead of a timer racing 25 ms steps.
    """
    settings = f", checkpoint_every_steps: {every}" if every else ""
    config = tmp_path / "c.yaml"
    # Two whole epochs, as the counts below assume: the shipped early stopping (which may end
    # the run sooner) and its 4 validation rounds per epoch (Keras epochs) are turned off;
    # one step per call of the train function, so that the kill lands on the step named.
    config.write_text(f"base: {ROOT}/configs/synthetic_mmoe.yaml\nname: killed\n"
                      f"data: {{generate_rows: 10000}}\ntrain: {{epochs: 2{settings}, "
                      "early_stopping_patience: 0, validations_per_epoch: 1, "
                      "steps_per_execution: 1}\n")
    out = tmp_path / "out"
    proc, _, _ = _paused(tmp_path, pause, _train_cmd(config, out)[3:])
    backup = out / "backup"
    saved = json.loads((backup / "progress.json").read_text())  # the counters of the checkpoint
    _kill_9(proc)
    assert not (out / "metrics.json").exists() and not (out / "model").exists()

    done = subprocess.run(_train_cmd(config, out), cwd=ROOT, env={**os.environ,
                          "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    steps_per_epoch = -(-metrics["rows"]["train"] // 1024)
    assert steps_per_epoch < 500  # what makes the epoch-end checkpoint the one that counts
    assert metrics["config"]["train"]["batch_size"] == 1024
    assert metrics["steps"] == 2 * steps_per_epoch  # as uninterrupted: resumed, not restarted
    assert metrics["resumed_at"] == resumed
    assert (f"resumed from a checkpoint at epoch {resumed['epoch']}, step {resumed['step']}"
            in done.stderr)
    assert saved["train_examples"] == ((resumed["epoch"] - 1) * steps_per_epoch
                                       + resumed["step"] - 1) * 1024
    # Throughput over the whole run: every step's examples, and the seconds before the kill.
    assert metrics["train_examples"] == 2 * steps_per_epoch * 1024
    whole_run_seconds = metrics["train_examples"] / metrics["examples_per_sec"]
    assert whole_run_seconds > saved["train_seconds"] > 0
    assert (out / "model" / "saved_model.pb").exists() and (out / "preprocessor.json").exists()
    assert not backup.exists() or not os.listdir(backup)  # deleted after a finished run


def _cli_main(argv) -> int:
    """``cli.main`` in process, the root logger's handlers put back afterwards (it points them
    at the current, captured, stderr)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return cli.main(argv)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_exits_143_and_the_same_command_resumes_there(tmp_path):
    """What Kubernetes sends before it kills a pod: the step under way finishes, a checkpoint
    is written, the command exits 143 (no metrics.json), and the same command resumes at the
    next step. Shipped checkpoint settings (500 steps, never reached here): only the SIGTERM
    checkpoint holds the first 5 steps."""
    config = tmp_path / "c.yaml"
    # Two whole epochs, as the counts below assume (no early stopping, 1 validation / epoch),
    # one step per call of the train function (SIGTERM is seen after the step named).
    config.write_text(f"base: {ROOT}/configs/synthetic_mmoe.yaml\nname: preempted\n"
                      "data: {generate_rows: 10000}\ntrain: {epochs: 2, "
                      "early_stopping_patience: 0, validations_per_epoch: 1, "
                      "steps_per_execution: 1}\n")
    out = tmp_path / "out"
    proc, marker, log = _paused(tmp_path, "step:0:4", _train_cmd(config, out)[3:])
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the handler runs in the waiting main thread
    marker.unlink()  # go on: the checkpoint is written at the end of this step
    proc.wait(timeout=120)
    err = log.read_text()
    assert proc.returncode == 143, err[-3000:]
    assert "funnelrank train: stopped by SIGTERM at epoch 1, step 5; the checkpoint in " in err
    assert "Traceback" not in err
    assert not (out / "metrics.json").exists()
    assert json.loads((out / "backup" / "progress.json").read_text())["train_examples"] == \
        5 * 1024
    done = subprocess.run(_train_cmd(config, out), cwd=ROOT, env={**os.environ,
                          "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_at"] == {"epoch": 1, "step": 6}
    assert metrics["steps"] == 2 * -(-metrics["rows"]["train"] // 1024)
    assert metrics["train_examples"] == metrics["steps"] * 1024


@pytest.fixture(scope="module")
def previous_output(tmp_path_factory):
    """A complete ``funnelrank train`` output (2000 rows) that a second run replaces."""
    out = tmp_path_factory.mktemp("previous") / "out"
    assert _cli_main(["-q", "train", "--config", f"{ROOT}/configs/mmoe.yaml", "--rows", "2000",
                      "--epochs", "1", "--out", str(out)]) == 0
    return out


def _file_bytes(folder):
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(folder) for f in files}


@pytest.mark.slow
@pytest.mark.parametrize("point, complete", [
    ("remove:metrics.json", True),  # saving begins: the old outputs are still whole
    ("replace:preprocessor.json", False),  # new model beside the old preprocessor
    ("rename:metrics.json", False),  # everything new but metrics.json (still .tmp)
])
def test_a_kill_while_saving_leaves_the_previous_outputs_or_no_metrics_json(
        tmp_path, capsys, previous_output, point, complete):
    """kill -9 of a run replacing a previous output, at the first and the last step of the
    save and where the new model sits beside the old preprocessor (the process waits there
    until killed: ``tests/pause_and_run.py``). Either the previous outputs are
    all there, byte for byte, or ``metrics.json`` (written last) is missing and ``export``
    refuses the directory; never a ``metrics.json`` beside another run's model."""
    out = tmp_path / "out"
    shutil.copytree(previous_output, out)
    before = _file_bytes(out)
    proc, _, _ = _paused(tmp_path, point, ["-q", "train", "--config", "configs/mmoe.yaml",
                                        "--rows", "3000", "--epochs", "1", "--out", str(out)])
    _kill_9(proc)
    assert (out / "metrics.json").exists() == complete
    if complete:
        after = _file_bytes(out)
        for name in ("metrics.json", "preprocessor.json"):
            assert after[name] == before[name]
        assert {k: v for k, v in after.items() if k.startswith("model" + os.sep)} == \
            {k: v for k, v in before.items() if k.startswith("model" + os.sep)}
        assert json.loads(after["metrics.json"])["rows"]["train"] < 0.8 * 2000  # not 3000's
    else:
        capsys.readouterr()
        assert _cli_main(["export", "--model", str(out), "--out", str(tmp_path / "srv")]) == 2
        assert f"{out / 'metrics.json'} not found: --model must be a complete `funnelrank " \
               f"train` output directory" in capsys.readouterr().err
        assert not (tmp_path / "srv").exists() or not os.listdir(tmp_path / "srv")


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
                      "data: {generate_rows: 6000}\ntrain: {seed: 5, epochs: 1}\n")
    cfg = config_lib.load(str(config))
    first = train_local.train(cfg, str(tmp_path / "a"))["heads"]
    tf.keras.utils.set_random_seed(999)  # what another run before it would leave behind
    tf.random.uniform([3])
    second = train_local.train(cfg, str(tmp_path / "b"))["heads"]
    for head in first:
        assert np.isfinite(first[head]["auc"]) and np.isfinite(first[head]["logloss"])
        for key in ("auc", "logloss", "gauc"):  # gauc is NaN when no user has both labels
            assert first[head][key] == pytest.approx(second[head][key], abs=1e-6, nan_ok=True)
