"""The options every command shares (``--version``, ``--set``, shipped configs by name) and what
a training run shows: progress lines with ETA, TensorBoard event files."""
import glob
import logging
import os
import re

import pytest
import tensorflow as tf

from funnelrank import cli
from tests import fixtures
from trainer.session import SplitData, TrainingSession


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert re.fullmatch(r"funnelrank \d+\.\d+\.\d+\n", capsys.readouterr().out)


def test_set_reaches_the_command_and_shipped_configs_load_from_anywhere(tmp_path, capsys,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the source tree: `--config mmoe` is a shipped config
    assert cli.main(["prepare", "--config", "mmoe", "--root", str(tmp_path / "w"),
                     "--set", "data.generate_rows=400", "--set", "data.eval_percent=25"]) == 0
    out = capsys.readouterr().out
    rows = {k: int(v) for k, v in re.findall(r"'(\w+)': (\d+)", out)}
    assert sum(rows.values()) == 400 and 70 <= rows["eval"] <= 130, out


@pytest.mark.parametrize("argv, message", [
    (["--set", "train.epochs"], r"--set: expected section.key=value, got 'train.epochs'"),
    (["--set", "train.epochs=two"], r"train.epochs: expected an integer, got 'two'"),
    (["--set", "trian.epochs=2"], r"unknown section\(s\) \['trian'\]"),
    (["--config", "nope"], r"config file not found: nope"),
])
def test_bad_overrides_exit_2_naming_key_and_value(tmp_path, capsys, argv, message):
    assert cli.main(["prepare", "--root", str(tmp_path)] + argv) == 2
    assert re.search(message, capsys.readouterr().err)


def test_training_logs_progress_with_eta_and_writes_tensorboard_events(tmp_path, caplog):
    cfg = fixtures.tiny_config(epochs=2, log_every=2)
    pre, arrays, info = fixtures.tiny_arrays(1200)
    session = TrainingSession(cfg, fixtures.TINY_SPEC, info,
                              tf.distribute.OneDeviceStrategy("/cpu:0"))
    data = SplitData(arrays=arrays)
    with caplog.at_level(logging.INFO, logger="trainer.callbacks"):
        session.run(data, data, data, {"train": 1200}, log_dir=str(tmp_path / "logs"))
    lines = [r.getMessage() for r in caplog.records if r.name == "trainer.callbacks"]
    steps = [m for m in lines if m.startswith("epoch ") and " step " in m]
    assert steps, lines
    # 10 steps per epoch (1200 rows / 128), a line every 2 steps, seen after each call of the
    # train function (8 steps, then the 2 left): examples/s and time left
    assert re.search(r"^epoch 1/2 step 8/10: .*loss=.* \(\d+ examples/s, ETA \d+:\d\d:\d\d\)$",
                     steps[0]), steps[0]
    assert steps[1].startswith("epoch 1/2 step 10/10: "), steps
    assert any(m.startswith("epoch 2/2 done in ") for m in lines), lines
    for split in ("train", "validation"):
        events = glob.glob(str(tmp_path / "logs" / split / "events.out.tfevents.*"))
        assert events and os.path.getsize(events[0]) > 0, split
    summaries = {v.tag for e in tf.compat.v1.train.summary_iterator(events[0])
                 for v in e.summary.value}
    assert "epoch_loss" in summaries, summaries
