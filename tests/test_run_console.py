"""A run you can watch: ``funnelrank run`` prints a line per component and its result, not the
libraries' logs (those go to the log file under the root); ``-q`` and ``--log-level``. The
whole run as a user starts it is checked in test_pipeline_e2e.py (its module fixture)."""
import logging
import os
import re

import pytest

from funnelrank import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _args(*argv):
    return cli.build_parser().parse_args(list(argv))


@pytest.mark.parametrize("argv, level", [
    (["run"], "WARNING"), (["train"], "INFO"), (["-q", "train"], "WARNING"),
    (["-v", "run"], "DEBUG"), (["--log-level", "ERROR", "-v", "train"], "ERROR"),
    (["--log-level", "INFO", "run"], "INFO"),
])
def test_console_level(argv, level):
    assert cli.console_level(_args(*argv)) == level


def _emit(capsys, argv):
    """Configures logging as ``main`` does and logs one record of each kind; returns stderr."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        cli.configure_logging(_args(*argv))
        logging.getLogger("trainer.session").info("own info")
        logging.getLogger("trainer.session").warning("own warning")
        logging.getLogger("absl").warning("library warning")
        logging.getLogger("apache_beam.typehints").info("library info")
        logging.getLogger("absl").error("library error")
        import warnings

        # a new text each time: Python shows a warning once per text and place (and a kind
        # pytest.ini does not ignore)
        warnings.warn(f"a library's warning ({argv})", RuntimeWarning)
        return capsys.readouterr().err
    finally:
        logging.captureWarnings(False)
        root.handlers[:], root.level = saved


def test_console_shows_own_records_and_only_library_errors(capsys):
    err = _emit(capsys, ["train"])
    assert "own info" in err and "own warning" in err and "library error" in err
    assert "library warning" not in err and "library info" not in err
    assert "RuntimeWarning" not in err


def test_quiet_and_log_level_and_verbose(capsys):
    err = _emit(capsys, ["-q", "train"])
    assert "own info" not in err and "own warning" in err
    err = _emit(capsys, ["--log-level", "ERROR", "train"])
    assert "own warning" not in err and "library error" in err
    err = _emit(capsys, ["-v", "train"])
    assert "library warning" in err and "library info" in err and "RuntimeWarning" in err


def test_the_level_holds_when_a_log_file_lowers_the_root_level(capsys, tmp_path):
    from pipeline.local_runner import watched

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        cli.configure_logging(_args("run"))
        with watched(str(tmp_path / "logs" / "run.log"), 3, progress=False):
            logging.getLogger("trainer.session").info("to the file only")
            logging.getLogger("absl").info("Component Transform is running.")
        assert "to the file only" not in capsys.readouterr().err
    finally:
        logging.captureWarnings(False)
        root.handlers[:], root.level = saved
    text = (tmp_path / "logs" / "run.log").read_text()
    assert "to the file only" in text and "Component Transform is running." in text


def test_progress_lines_come_from_the_runner_records_even_after_absl_flags_reparse(
        tmp_path, capsys):
    from absl import flags

    from pipeline.local_runner import watched

    with watched(str(tmp_path / "run.log"), 2, progress=True):
        absl = logging.getLogger("absl")
        absl.info("Component Transform is running.")
        flags.FLAGS.unparse_flags()  # what happens inside Transform: absl's level is reset
        flags.FLAGS(["x"], known_only=True)
        absl.info("Component Transform is finished.")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[1/2] Transform ..."
    assert re.fullmatch(r"\[1/2\] Transform done in \d+ s", out[1])


def test_a_component_taken_from_the_cache_says_so(tmp_path, capsys):
    from pipeline.local_runner import watched

    with watched(str(tmp_path / "run.log"), 2, progress=True):
        absl = logging.getLogger("absl")
        absl.info("Component Transform is running.")
        absl.info("A cached execution 21 is used.")
        absl.info("Component Transform is finished.")
        absl.info("Component Trainer is running.")
        absl.info("Component Trainer is finished.")
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["[1/2] Transform ...", "[1/2] Transform reused from the cache"]
    assert out[2] == "[2/2] Trainer ..."
    assert re.fullmatch(r"\[2/2\] Trainer done in \d+ s", out[3])


@pytest.mark.parametrize("blessed, code", [(True, 0), (False, 3)])
def test_a_run_whose_pusher_came_from_the_cache_is_not_a_failed_push(
        tmp_path, capsys, monkeypatch, blessed, code):
    """Nothing changed since an earlier run (``pipeline.enable_cache``): no new push is not
    "the Evaluator did not bless it"; the exit code follows the cached blessing."""
    from pipeline import local_runner

    def run(cfg, progress=True):
        return {"pushed_model": None, "blessed": blessed, "bless_head": "ctr",
                "cached": ["Evaluator", "Pusher", "Trainer", "Transform"],
                "last_pushed_model": "/srv/serving/17", "evaluation": {"ctr": {"auc": 0.7}},
                "trainer": {}, "seconds": 3.0, "log_file": "/x/run.log"}

    monkeypatch.setattr(local_runner, "run", run)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "--root", str(tmp_path / "work")]) == code
    out = capsys.readouterr().out
    assert "model NOT pushed: the Evaluator did not bless it" not in out
    assert (f"nothing new to push: the model, its evaluation and its push came from the cache "
            f"(an earlier run with the same data and settings; "
            f"{'blessed' if blessed else 'NOT blessed'}); the newest pushed model: "
            f"/srv/serving/17") in out
    assert out.splitlines()[-1] == "pipeline wall time: 3s; full log: /x/run.log"
