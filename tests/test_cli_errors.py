"""Every user mistake ends the command with exit status 2 and ONE message naming what and where.

Each case goes through the real command line (``funnelrank.cli.main`` in process) and checks
the exit status, that stderr holds exactly one ``funnelrank <command>: error: ...`` line and no
traceback, and what the line says. These are the inputs issue 17 found ending in a traceback
(or, for the ragged row, in a message blaming the wrong column).
"""
import logging
import os
import shutil

import pytest

from funnelrank import cli
from transform.ingest import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(argv, capsys):
    """``funnelrank ARGV`` in process: (exit status, stderr). The root logger's handlers, which
    ``cli.main`` points at this test's captured stderr, are put back afterwards (else a later
    test's log call writes to a closed stream)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    capsys.readouterr()
    try:
        code = cli.main(argv)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return code, capsys.readouterr().err


def _error_line(argv, capsys) -> str:
    """Runs ``argv``; asserts exit 2, no traceback, exactly one error line; returns it."""
    code, err = _cli(argv, capsys)
    assert code == 2, err
    assert "Traceback" not in err, err
    prefix = f"funnelrank {argv[0]}: error: "
    lines = [ln for ln in err.splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, err
    return lines[0][len(prefix):]


def _config(tmp_path, text: str) -> str:
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    return str(path)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("text, message", [
    ("model: {embedding_dim: 0}\n",
     "`model.embedding_dim` must be a positive integer, received: model.embedding_dim=0"),
    ("model: {tower_dropout: 1.5}\n",
     "`model.tower_dropout` must be a float in [0, 1), received: model.tower_dropout=1.5"),
    ("data: {num_actions: 0}\n",
     "`data.num_actions` must be a positive integer, received: data.num_actions=0"),
    ("model: {tower_units: wide}\n", "model.tower_units: expected a list, got 'wide'"),
    ("train: [1, 2]\n", "train: expected a mapping, got [1, 2]"),
    ("model: [mmoe]\n", "model: expected a mapping, got ['mmoe']"),
])
def test_a_bad_config_value_is_exit_2_naming_file_key_and_value(tmp_path, capsys, text,
                                                                message):
    path = _config(tmp_path, text)
    out = tmp_path / "out"
    line = _error_line(["train", "--config", path, "--out", str(out)], capsys)
    assert line == f"{path}: {message}"
    assert not out.exists()  # refused before any data work


def test_a_config_name_escaping_the_work_directory_is_exit_2_and_writes_nothing(tmp_path,
                                                                                capsys,
                                                                                monkeypatch):
    """``name`` becomes ``work/train/<name>`` (and pipeline paths): ``../../../x`` would write
    outside ``work/``. Nothing may be created anywhere under the test's directory."""
    cwd = tmp_path / "a" / "b" / "c"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    path = _config(tmp_path, "name: ../../../x\ndata: {generate_rows: 500}\n")
    line = _error_line(["train", "--config", path], capsys)
    assert line.startswith(f"{path}: name: expected a file name of letters, digits")
    assert line.endswith("got '../../../x'")
    created = sorted(os.path.relpath(os.path.join(d, f), tmp_path)
                     for d, dirs, files in os.walk(tmp_path) for f in dirs + files)
    assert created == ["a", "a/b", "a/b/c", "experiment.yaml"], created


# ----------------------------------------------------------------------------- paths


def test_out_pointing_to_an_existing_file_is_exit_2_and_the_file_is_untouched(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    line = _error_line(["train", "--rows", "500", "--out", str(target)], capsys)
    assert line == f"--out {target}: is an existing file; give a directory"
    assert target.read_text() == "keep me"


def test_out_below_an_existing_file_is_exit_2_naming_the_file(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    out = target / "sub"
    line = _error_line(["train", "--rows", "500", "--out", str(out)], capsys)
    assert line == f"--out {out}: {target} is a file, not a directory"
    assert target.read_text() == "keep me"


def test_a_bad_value_given_on_the_command_line_is_named_as_such(tmp_path, capsys):
    line = _error_line(["train", "--config", "configs/mmoe.yaml", "--rows", "500", "--epochs",
                        "-1", "--out", str(tmp_path / "o")], capsys)
    assert line.endswith("configs/mmoe.yaml (overridden: train.epochs=-1): "
                         "`train.epochs` must be a positive integer, received: train.epochs=-1")


@pytest.mark.parametrize("rows", ["0", "-5"])
def test_generate_without_a_positive_row_count_is_exit_2(tmp_path, capsys, rows):
    out = tmp_path / "gen"
    line = _error_line(["generate", "--rows", rows, "--out", str(out)], capsys)
    assert line == f"`--rows` must be a positive integer, received: --rows={rows}"
    assert not out.exists()


def test_a_seed_numpy_refuses_is_exit_2_before_any_work(tmp_path, capsys):
    """NumPy's legacy seeding (Keras' set_random_seed) takes [0, 2**32 - 1]: a seed outside
    it used to end a `train` in a traceback, after the data work."""
    out = tmp_path / "gen"
    line = _error_line(["generate", "--rows", "10", "--out", str(out), "--seed", "-1"], capsys)
    assert line == "`--seed` must be an integer in [0, 4294967295], received: --seed=-1"
    assert not out.exists()
    out = tmp_path / "train"
    line = _error_line(["train", "--rows", "300", "--out", str(out), "--seed", "4294967296"],
                       capsys)
    assert line.endswith("`train.seed` must be an integer in [0, 4294967295], received: "
                         "train.seed=4294967296")
    assert not out.exists()


def _split_dir(tmp_path, ali_ccp_dir, names):
    folder = tmp_path / "data"
    folder.mkdir()
    for source, name in names.items():
        shutil.copy(os.path.join(ali_ccp_dir, f"ali_ccp_{source}_sample.csv"), folder / name)
    return str(folder)


def test_a_file_matching_no_split_in_a_split_directory_is_exit_2_naming_it(tmp_path, capsys,
                                                                         ali_ccp_dir):
    folder = _split_dir(tmp_path, ali_ccp_dir,
                        {"train": "a_train.csv", "test": "a_test.csv", "val": "notes.csv"})
    out = tmp_path / "out"
    line = _error_line(["train", "--config", "configs/ali_ccp_mmoe.yaml", "--data", folder,
                        "--out", str(out)], capsys)
    assert line == (f"{folder}: in a directory split into train/val/test files each file must "
                    f"name exactly one of train, val, test; these do not: [('notes.csv', [])]")
    assert not (out / "metrics.json").exists()


def test_a_split_directory_without_a_test_file_is_exit_2_listing_the_files(tmp_path, capsys,
                                                                          ali_ccp_dir):
    """It used to be pooled and re-split by hash, silently."""
    folder = _split_dir(tmp_path, ali_ccp_dir, {"train": "a_train.csv", "val": "a_val.csv"})
    line = _error_line(["train", "--config", "configs/ali_ccp_mmoe.yaml", "--data", folder,
                        "--out", str(tmp_path / "out")], capsys)
    assert line.startswith(f"{folder}: ")
    assert "need at least one *train* and one *test* file" in line
    assert "found ['a_train.csv', 'a_val.csv']" in line


# ----------------------------------------------------------------------------- data values


def _csv(tmp_path, frame, name="impressions.csv") -> str:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def _train_on(path, tmp_path):
    return ["train", "--config", "configs/synthetic_mmoe.yaml", "--data", path,
            "--out", str(tmp_path / "out")]


@pytest.mark.parametrize("column, value, expected", [
    ("user_id", "7" * 10_000, "an integer"),  # used to escape as Python's 4300-digit ValueError
    ("user_id", "u" * 10_000, "an integer"),
    ("price", "9" * 10_000, "a number finite in float32 (|x| <= 3.4e38)"),
])
def test_a_ten_thousand_character_value_is_quoted_cut_short(tmp_path, capsys, column, value,
                                                            expected):
    frame = synthetic.generate(40, seed=2).astype({column: object})
    frame.loc[3, column] = value
    path = _csv(tmp_path, frame)
    line = _error_line(_train_on(path, tmp_path), capsys)
    assert line.startswith(f"{path}: data row 4 (line 5), column {column!r}: expected "
                           f"{expected}, found '{value[:40]}"), line
    assert line.endswith("...(10002 chars)"), line
    assert len(line) < len(path) + 250, line


@pytest.mark.parametrize("edit, found", [(lambda s: s + ",1", 42),
                                         (lambda s: s.rsplit(",", 1)[0], 40)])
def test_a_ragged_first_data_row_is_malformed_never_blamed_on_a_shifted_column(tmp_path, capsys,
                                                                               edit, found):
    """pandas took the first column as the index when the first data row had one field more
    than the header, and reported a shifted value in the wrong column."""
    path = _csv(tmp_path, synthetic.generate(40, seed=2))
    lines = open(path).read().splitlines()
    lines[1] = edit(lines[1])
    open(path, "w").write("\n".join(lines) + "\n")
    line = _error_line(_train_on(path, tmp_path), capsys)
    assert line.startswith(f"{path}: data row 1 (line 2): malformed CSV: expected 41 fields "
                           f"(as in the header), found {found}: '"), line
    assert "column '" not in line, line


def test_a_bad_value_in_the_first_data_row_names_its_own_column(tmp_path, capsys):
    frame = synthetic.generate(40, seed=2).astype({"price": object})
    frame.loc[0, "price"] = "cheap"
    path = _csv(tmp_path, frame)
    line = _error_line(_train_on(path, tmp_path), capsys)
    assert line == (f"{path}: data row 1 (line 2), column 'price': expected a number, "
                    f"found 'cheap'")
