"""CSV validation, dataset adapters (prepare / load_frames) and the schema files."""
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from schemas import features
from schemas.config import DataConfig
from transform.ingest import adapters, csv_io, synthetic, validate
from transform.ingest.validate import DataValidationError

SCHEMAS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schemas")
SPEC = features.synthetic_spec()


@pytest.fixture(scope="module")
def good_frame():
    """300 valid synthetic rows (with ground truth), clicks and conversions included."""
    frame = synthetic.generate(300, seed=11)
    assert frame["click"].sum() > 3
    return frame


def _write(tmp_path, frame, name="data.csv"):
    path = str(tmp_path / name)
    frame.to_csv(path, index=False)
    return path


def _with(frame, row, column, value):
    """Copy of ``frame`` (as text) with one cell replaced; ``row`` is 0-based."""
    out = frame.astype(object).copy()
    out.loc[row, column] = value
    return out


def _non_clicked_row(frame):
    """A row index >= 20 without a click (clear of the rows other tests edit)."""
    no_click = np.flatnonzero(frame["click"].to_numpy() == 0)
    return int(no_click[no_click >= 20][0])


# ----------------------------------------------------------------------------- validation


def test_valid_file_passes_with_stats(tmp_path, good_frame):
    stats = validate.validate_csv(_write(tmp_path, good_frame), SPEC)
    assert (stats.rows_read, stats.rows_kept, stats.dropped) == (300, 300, {})


@pytest.mark.parametrize("column, value, expected, found", [
    ("price", "abc", "expected a number", "'abc'"),
    ("price", "", "expected a number", "an empty value"),
    ("item_quality", "nan", "expected a finite number", "'nan'"),
    ("ad_bid", "inf", "expected a finite number", "inf"),
    ("user_id", "12.5", "expected an integer", "12.5"),
    ("item_id", "x7", "expected an integer", "'x7'"),
    ("timestamp", "", "expected an integer", "an empty value"),
    ("click", "2", "expected 0 or 1", "found 2"),
    ("conv_2", "-1", "expected 0 or 1", "found -1"),
    ("timestamp", "-5", "expected a timestamp >= 0", "found -5"),
])
def test_bad_value_names_file_row_column(tmp_path, good_frame, column, value, expected, found):
    path = _write(tmp_path, _with(good_frame, 41, column, value), "bad_values.csv")
    with pytest.raises(DataValidationError) as err:
        validate.validate_csv(path, SPEC)
    msg = str(err.value)
    assert path in msg
    assert "data row 42 (line 43)" in msg
    assert f"column {column!r}" in msg
    assert expected in msg and found in msg


@pytest.mark.parametrize("column", ["conversion", "conv_0", "conv_4"])
def test_conversion_without_click(tmp_path, good_frame, column):
    row = _non_clicked_row(good_frame)
    path = _write(tmp_path, _with(good_frame, row, column, 1), "conv.csv")
    with pytest.raises(DataValidationError,
                       match=rf"conv\.csv: data row {row + 1} \(line {row + 2}\), column "
                             rf"'{column}': expected 0 because 'click' is 0"):
        validate.validate_csv(path, SPEC)


def test_first_bad_row_is_reported(tmp_path, good_frame):
    frame = _with(_with(good_frame, 200, "price", "bad"), 9, "user_id", "u9")
    with pytest.raises(DataValidationError, match=r"data row 10 \(line 11\), column 'user_id'"):
        validate.validate_csv(_write(tmp_path, frame), SPEC, chunk_rows=64)


def test_row_numbers_across_chunks(tmp_path, good_frame):
    path = _write(tmp_path, _with(good_frame, 250, "hour", "noon"))
    with pytest.raises(DataValidationError, match=r"data row 251 \(line 252\), column 'hour'"):
        validate.validate_csv(path, SPEC, chunk_rows=64)


def test_integral_float_text_is_an_integer(tmp_path, good_frame):
    path = _write(tmp_path, _with(good_frame, 5, "user_id", "17.0"))
    assert validate.validate_csv(path, SPEC).rows_kept == 300


def test_empty_and_header_only_files(tmp_path, good_frame):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataValidationError, match=r"empty\.csv: empty file"):
        validate.validate_csv(str(empty), SPEC)
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(good_frame.columns) + "\n")
    with pytest.raises(DataValidationError, match=r"header\.csv: no data rows \(header only\)"):
        validate.validate_csv(str(header_only), SPEC)
    with pytest.raises(DataValidationError, match=r"nowhere\.csv: file not found"):
        validate.validate_csv(str(tmp_path / "nowhere.csv"), SPEC)


def test_missing_and_extra_columns_are_listed(tmp_path, good_frame):
    path = _write(tmp_path, good_frame.drop(columns=["price", "conv_3"]), "missing.csv")
    with pytest.raises(DataValidationError,
                       match=r"missing\.csv: missing column\(s\) \['conv_3', 'price'\]"):
        validate.validate_csv(path, SPEC)
    extra = good_frame.assign(shoe_size=1, colour=2)
    path = _write(tmp_path, extra, "extra.csv")
    with pytest.raises(DataValidationError,
                       match=r"extra\.csv: unexpected column\(s\) \['shoe_size', 'colour'\]"):
        validate.validate_csv(path, SPEC)
    # Ground-truth columns are allowed, and skip_bad_rows does not excuse structure.
    assert validate.validate_csv(_write(tmp_path, good_frame.assign(gt_extra=0.5)),
                                 SPEC).rows_kept == 300
    with pytest.raises(DataValidationError, match="missing column"):
        validate.validate_csv(_write(tmp_path, good_frame.drop(columns=["hour"])), SPEC,
                              skip_bad_rows=True)


def test_ragged_line_fails(tmp_path, good_frame):
    path = _write(tmp_path, good_frame, "ragged.csv")
    lines = open(path).read().splitlines()
    lines[7] += ",1"
    open(path, "w").write("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError, match=r"ragged\.csv: malformed CSV.*line 8"):
        validate.validate_csv(path, SPEC)


def test_skip_bad_rows_counts_per_reason(tmp_path, good_frame):
    row = _non_clicked_row(good_frame)
    frame = good_frame
    for r, col, value in [(1, "price", "x"), (2, "price", "inf"), (3, "item_id", "1.5"),
                          (4, "click", "3"), (row, "conversion", 1), (6, "timestamp", -1),
                          (7, "price", "y"), (7, "user_id", "z")]:  # row 7: first reason wins
        frame = _with(frame, r, col, value)
    stats = validate.validate_csv(_write(tmp_path, frame), SPEC, skip_bad_rows=True,
                                  chunk_rows=100)
    assert stats.rows_read == 300
    assert stats.rows_kept == 293
    assert stats.rows_dropped == 7
    assert stats.dropped == {"not_a_number": 2, "not_finite": 1, "not_an_integer": 1,
                             "label_not_binary": 1, "conversion_without_click": 1,
                             "negative_timestamp": 1}


def test_validation_of_the_real_ali_ccp_sample(ali_ccp_dir):
    for name, rows in [("ali_ccp_train_sample.csv", 100), ("ali_ccp_val_sample.csv", 50)]:
        stats = validate.validate_csv(os.path.join(ali_ccp_dir, name), features.ali_ccp_spec())
        assert stats.rows_kept == rows
    with pytest.raises(DataValidationError, match="missing column"):
        validate.validate_csv(os.path.join(ali_ccp_dir, "ali_ccp_train_sample.csv"), SPEC)


# ----------------------------------------------------------------------------- adapters


def test_prepare_ali_ccp_sample_as_three_splits(tmp_path, ali_ccp_dir):
    cfg = DataConfig(adapter="ali_ccp", path=ali_ccp_dir)
    prepared = adapters.prepare(cfg, str(tmp_path))
    spec = features.ali_ccp_spec()
    assert prepared.spec == spec
    assert prepared.hash_split is False
    assert prepared.rows == {"train": 100, "eval": 50, "test": 50}
    assert prepared.splits == {
        "train": [str(tmp_path / "prepared" / "train" / "ali_ccp_train_sample.csv")],
        "eval": [str(tmp_path / "prepared" / "eval" / "ali_ccp_val_sample.csv")],
        "test": [str(tmp_path / "prepared" / "test" / "ali_ccp_test_sample.csv")]}
    assert set(prepared.stats) == {os.path.join(ali_ccp_dir, f"ali_ccp_{s}_sample.csv")
                                   for s in ("train", "val", "test")}
    frames = adapters.load_frames(prepared)
    assert {k: len(v) for k, v in frames.items()} == {"train": 100, "eval": 50, "test": 50}
    for frame in frames.values():
        assert list(frame.columns) == list(spec.columns)
        assert all(frame[k].dtype == np.int64 for k in spec.integer_keys)
        assert all(frame[k].dtype == np.float32 for k in spec.dense_keys)
    source = pd.read_csv(os.path.join(ali_ccp_dir, "ali_ccp_train_sample.csv"))
    np.testing.assert_array_equal(frames["train"]["205"], source["205"])
    np.testing.assert_allclose(frames["train"]["D508"], source["D508"], rtol=1e-6)
    # Dense values keep a decimal point even when whole (CsvExampleGen must infer FLOAT).
    text = open(prepared.splits["train"][0]).read().splitlines()
    assert text[0] == ",".join(spec.columns)
    d509 = spec.columns.index("D509")
    assert all("." in line.split(",")[d509] for line in text[1:])


def test_train_test_directory_without_val(tmp_path, ali_ccp_dir):
    src = tmp_path / "src"
    src.mkdir()
    for s in ("train", "test"):
        shutil.copy(os.path.join(ali_ccp_dir, f"ali_ccp_{s}_sample.csv"), src)
    prepared = adapters.prepare(DataConfig(adapter="ali_ccp", path=str(src)),
                                str(tmp_path / "w"))
    assert prepared.rows == {"train": 100, "eval": 50}
    assert not prepared.hash_split


def test_single_csv_and_unsplit_directory_give_hash_split(tmp_path, ali_ccp_dir):
    one = os.path.join(ali_ccp_dir, "ali_ccp_val_sample.csv")
    prepared = adapters.prepare(DataConfig(adapter="ali_ccp", path=one), str(tmp_path / "a"))
    assert prepared.hash_split is True
    assert prepared.splits == {"all": [str(tmp_path / "a" / "prepared" / "all" /
                                           "ali_ccp_val_sample.csv")]}
    assert prepared.rows == {"all": 50}
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(one, src / "part1.csv")
    shutil.copy(os.path.join(ali_ccp_dir, "ali_ccp_train_sample.csv"), src / "part2.csv")
    prepared = adapters.prepare(DataConfig(adapter="ali_ccp", path=str(src)), str(tmp_path / "b"))
    assert prepared.hash_split is True
    assert prepared.rows == {"all": 150}
    assert len(adapters.load_frames(prepared)["all"]) == 150


def test_generated_synthetic_data_drops_ground_truth(tmp_path):
    cfg = DataConfig(adapter="synthetic", generate_rows=1500, num_actions=3, seed=9)
    prepared = adapters.prepare(cfg, str(tmp_path))
    spec = features.synthetic_spec(3)
    assert prepared.spec == spec and prepared.hash_split
    assert prepared.rows == {"all": 1500}
    assert os.path.isfile(tmp_path / "raw" / "impressions.csv")
    frame = adapters.load_frames(prepared)["all"]
    assert list(frame.columns) == list(spec.columns)
    header = open(prepared.splits["all"][0]).readline().strip().split(",")
    assert header == list(spec.columns)
    expected = synthetic.generate(1500, seed=9, num_actions=3)
    np.testing.assert_array_equal(frame["timestamp"], expected["timestamp"])
    np.testing.assert_allclose(frame["price"], expected["price"], rtol=1e-6)


def test_prepare_is_idempotent_and_removes_stale_splits(tmp_path, ali_ccp_dir):
    work = str(tmp_path / "w")
    first = adapters.prepare(DataConfig(adapter="ali_ccp", path=ali_ccp_dir), work)
    content = open(first.splits["eval"][0]).read()
    again = adapters.prepare(DataConfig(adapter="ali_ccp", path=ali_ccp_dir), work)
    assert again.splits == first.splits and open(again.splits["eval"][0]).read() == content
    one = os.path.join(ali_ccp_dir, "ali_ccp_test_sample.csv")
    adapters.prepare(DataConfig(adapter="ali_ccp", path=one), work)
    assert sorted(os.listdir(os.path.join(work, "prepared"))) == ["all"]


def test_prepare_errors(tmp_path, good_frame):
    with pytest.raises(FileNotFoundError, match="does not exist: .*nope"):
        adapters.prepare(DataConfig(adapter="ali_ccp", path=str(tmp_path / "nope")),
                         str(tmp_path / "w"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match=r"no \*\.csv files in data directory .*empty"):
        adapters.prepare(DataConfig(adapter="ali_ccp", path=str(empty)), str(tmp_path / "w"))
    with pytest.raises(ValueError, match="unknown data adapter 'parquet'"):
        adapters.prepare(DataConfig(adapter="parquet", path=str(empty)), str(tmp_path / "w"))
    with pytest.raises(ValueError, match="data.path is required"):
        adapters.prepare(DataConfig(adapter="ali_ccp"), str(tmp_path / "w"))
    # An invalid file inside a split directory is named in the error.
    split_dir = tmp_path / "split"
    split_dir.mkdir()
    _write(split_dir, good_frame, "my_train.csv")
    _write(split_dir, _with(good_frame, 3, "device", "phone"), "my_test.csv")
    with pytest.raises(DataValidationError,
                       match=r"my_test\.csv: data row 4 \(line 5\), column 'device'"):
        adapters.prepare(DataConfig(path=str(split_dir)), str(tmp_path / "w"))


def test_prepare_skip_bad_rows(tmp_path, good_frame):
    bad = _with(_with(good_frame, 3, "device", "phone"), 8, "price", "")
    path = _write(tmp_path, bad, "impressions.csv")
    prepared = adapters.prepare(DataConfig(path=path, skip_bad_rows=True), str(tmp_path / "w"))
    assert prepared.rows == {"all": 298}
    assert prepared.stats[path].dropped == {"not_an_integer": 1, "not_a_number": 1}
    assert prepared.total_stats.rows_read == 300
    frame = adapters.load_frames(prepared)["all"]
    assert len(frame) == 298
    np.testing.assert_array_equal(frame["user_id"],
                                  good_frame["user_id"].drop(index=[3, 8]).to_numpy())


def test_csv_writer_keeps_float_text():
    frame = pd.DataFrame({"a": [0.0, 2.0, 0.25], "b": [1, 2, 3]})
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"csv_io_{os.getpid()}.csv")
    try:
        csv_io.write_frame(frame, path)
        assert open(path).read() == "a,b\n0.0,1\n2.0,2\n0.25,3\n"
    finally:
        os.remove(path)


# ----------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("name, spec", [("synthetic", features.synthetic_spec()),
                                        ("ali_ccp", features.ali_ccp_spec())])
def test_schema_files_match_specs(name, spec):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    with open(os.path.join(SCHEMAS, f"{name}.pbtxt")) as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    by_name = {feat.name: feat for feat in schema.feature}
    assert sorted(by_name) == sorted(spec.columns)
    for key in spec.columns:
        feat = by_name[key]
        want = schema_pb2.FLOAT if key in spec.dense_keys else schema_pb2.INT
        assert feat.type == want, key
        assert feat.presence.min_fraction == 1.0, key
        assert [d.size for d in feat.shape.dim] == [1], key
        assert feat.WhichOneof("domain_info") is None, key
    assert not schema.string_domain
