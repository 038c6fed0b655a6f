"""Data ingest (``transform/ingest``): CSV and Parquet read as text, every value validated and
typed by one set of rules, rows split once, written as tf.Examples with a derived TFDV schema,
and read back exactly (``load_frames``)."""
import csv
import dataclasses
import json
import logging
import os
import re
import shutil
import uuid

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from schemas import config as config_lib
from schemas import features
from tests import fixtures
from transform import preprocessor
from transform.ingest import csv_io, examples, prepare, readers, splits, synthetic
from transform.ingest.splits import SplitError
from transform.ingest.validate import DataValidationError

F32_FINITE = "a number finite in float32 (|x| <= 3.4e38)"


# ----------------------------------------------------------------------------- helpers


def _synthetic_cfg(path, **data):
    """The ``synthetic`` preset read from a CSV: funnel labels, per-action labels, timestamp."""
    return config_lib.from_dict({"data": {"adapter": "synthetic", "path": str(path), **data}})


def _ali_ccp_cfg(path, **data):
    """The ``ali_ccp`` preset (funnel labels click/purchase, integer ids)."""
    return config_lib.from_dict({"data": {"adapter": "ali_ccp", "path": str(path), **data}})


def _own_cfg(path, sparse, dense, labels, adapter="csv", **data):
    """A config of the generic adapters (``csv``/``parquet``): roles declared by the user."""
    return config_lib.from_dict({"data": {
        "adapter": adapter, "path": str(path), "features": {"sparse": sparse, "dense": dense},
        "labels": labels, **data}})


def _prepare(cfg, work, chunk_rows=readers.DEFAULT_CHUNK_ROWS):
    spec = features.spec_from_config(cfg.data, cfg.funnel)
    return prepare.prepare(cfg.data, spec, str(work), chunk_rows=chunk_rows)


def _all_rows(prepared, by=None):
    """Every prepared row (all splits), sorted by ``by`` (default: every column)."""
    frame = pd.concat(prepare.load_frames(prepared).values(), ignore_index=True)
    return frame.sort_values(by or list(frame.columns), kind="stable").reset_index(drop=True)


def _write_rows(path, header, rows):
    """A CSV written cell by cell (quotes where needed, nothing converted)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def _with(frame, row, column, value):
    """Copy of ``frame`` (as objects) with one cell replaced; ``row`` is 0-based."""
    out = frame.astype(object).copy()
    out.loc[row, column] = value
    return out


def _csv(tmp_path, frame, name="data.csv"):
    path = str(tmp_path / name)
    frame.to_csv(path, index=False)
    return path


def _non_clicked_row(frame, start=20):
    no_click = np.flatnonzero(frame["click"].to_numpy() == 0)
    return int(no_click[no_click >= start][0])


@pytest.fixture(scope="module")
def good_frame():
    """300 valid synthetic rows (ground truth columns included: they are never reported)."""
    frame = synthetic.generate(300, seed=11)
    assert frame["click"].sum() > 3 and frame["conversion"].sum() >= 1
    return frame


SYNTHETIC = fixtures.synthetic_spec()


def _typed(frame, spec):
    """``frame`` typed as load_frames gives it: int64 ints, float32 dense."""
    out = frame[list(spec.columns)].copy()
    for key in spec.dense_keys:
        out[key] = out[key].astype(np.float32)
    return out.reset_index(drop=True)


# ----------------------------------------------------------------------------- validation


def test_a_valid_file_is_kept_whole(tmp_path, good_frame):
    path = _csv(tmp_path, good_frame)
    prepared = _prepare(_synthetic_cfg(path), tmp_path / "w")
    stats = prepared.stats[path]
    assert (stats.rows_read, stats.rows_kept, stats.dropped, stats.missing) == (300, 300, {}, {})
    assert sum(prepared.rows.values()) == 300
    assert prepared.spec.optional_keys == ()
    expected = _typed(good_frame, SYNTHETIC).sort_values(list(SYNTHETIC.columns))
    pd.testing.assert_frame_equal(_all_rows(prepared), expected.reset_index(drop=True))


@pytest.mark.parametrize("column, value, expected, found", [
    ("price", "abc", "a number", "'abc'"),
    ("price", "1,5", "a number", "'1,5'"),
    ("item_quality", "nan", F32_FINITE, "'nan'"),
    ("ad_bid", "inf", F32_FINITE, "'inf'"),
    ("ad_bid", "-Infinity", F32_FINITE, "'-Infinity'"),
    ("price", "1e39", F32_FINITE, "'1e39'"),  # finite in float64, not in float32 (issue 17)
    ("price", "-1e39", F32_FINITE, "'-1e39'"),
    ("price", "1e400", F32_FINITE, "'1e400'"),  # a number beyond float64 is still a number
    ("user_id", "12.5", "an integer", "'12.5'"),
    ("item_id", "x7", "an integer", "'x7'"),
    ("item_id", "٣", "an integer", "'٣'"),  # a digit of another script is not the id 3
    ("user_id", str(2 ** 63), "an integer", f"'{2 ** 63}'"),  # beyond int64
    ("timestamp", "", "an integer", "an empty value"),
    ("click", "", "an integer", "an empty value"),  # labels are never missing
    ("click", "2", "0 or 1", "'2'"),
    ("conv_2", "-1", "0 or 1", "'-1'"),
    ("timestamp", "-5", "a timestamp >= 0", "'-5'"),
])
def test_bad_value_names_file_row_line_column_expected_and_found(tmp_path, good_frame, column,
                                                                 value, expected, found):
    path = _csv(tmp_path, _with(good_frame, 41, column, value), "bad_values.csv")
    with pytest.raises(DataValidationError) as err:
        _prepare(_synthetic_cfg(path), tmp_path / "w")
    assert str(err.value) == (f"{path}: data row 42 (line 43), column {column!r}: expected "
                              f"{expected}, found {found}")


@pytest.mark.parametrize("column", ["conversion", "conv_0", "conv_4"])
def test_conversion_without_click_in_a_funnel(tmp_path, good_frame, column):
    row = _non_clicked_row(good_frame)
    path = _csv(tmp_path, _with(good_frame, row, column, 1), "conv.csv")
    with pytest.raises(DataValidationError) as err:
        _prepare(_synthetic_cfg(path), tmp_path / "w")
    assert str(err.value) == (f"{path}: data row {row + 1} (line {row + 2}), column "
                              f"{column!r}: expected 0 because 'click' is 0 (conversion implies "
                              f"click), found '1'")


def test_conversion_without_click_is_fine_for_unrelated_tasks(tmp_path, good_frame):
    """Only the funnel recipes tie the labels: two independent tasks may be 1 and 0."""
    row = _non_clicked_row(good_frame)
    path = _csv(tmp_path, _with(good_frame, row, "conversion", 1))
    cfg = _own_cfg(path, ["user_id", "item_id"], ["price"],
                   {"clicked": "click", "bought": "conversion"})
    assert not cfg.funnel
    prepared = _prepare(cfg, tmp_path / "w")
    assert prepared.stats[path].rows_kept == 300
    rows = _all_rows(prepared)
    assert ((rows["conversion"] == 1) & (rows["click"] == 0)).sum() == 1


def test_a_row_with_several_problems_reports_the_first_reason(tmp_path, good_frame):
    frame = _with(_with(good_frame, 9, "user_id", "u9"), 9, "price", "cheap")
    path = _csv(tmp_path, frame)
    with pytest.raises(DataValidationError, match=r"data row 10 \(line 11\), column 'price': "
                                                  r"expected a number, found 'cheap'"):
        _prepare(_synthetic_cfg(path), tmp_path / "w")


@pytest.mark.parametrize("chunk_rows", [7, 64, 1000])
def test_the_first_bad_row_of_the_file_is_reported_across_chunks(tmp_path, good_frame,
                                                                 chunk_rows):
    frame = _with(_with(good_frame, 200, "price", "bad"), 70, "user_id", "u70")
    path = _csv(tmp_path, frame)
    with pytest.raises(DataValidationError, match=r"data row 71 \(line 72\), column 'user_id'"):
        _prepare(_synthetic_cfg(path), tmp_path / "w", chunk_rows=chunk_rows)


@pytest.mark.parametrize("row", [0, 63, 64, 250, 299])
def test_row_numbers_count_across_chunks(tmp_path, good_frame, row):
    path = _csv(tmp_path, _with(good_frame, row, "hour", "noon"))
    with pytest.raises(DataValidationError,
                       match=rf"data row {row + 1} \(line {row + 2}\), column 'hour'"):
        _prepare(_synthetic_cfg(path), tmp_path / "w", chunk_rows=64)


def test_skip_bad_rows_counts_per_reason_and_keeps_exactly_the_good_rows(tmp_path, good_frame):
    no_click = _non_clicked_row(good_frame)
    edits = [(1, "price", "x"), (2, "price", "inf"), (3, "ad_bid", "1e39"), (4, "item_id", "1.5"),
             (5, "click", "3"), (no_click, "conversion", 1), (6, "timestamp", -1),
             (7, "price", "y"), (7, "user_id", "z"),  # row 7: the first reason wins
             (8, "click", ""),
             (9, "price", "")]  # a missing dense value is not a bad row
    frame = good_frame
    for r, col, value in edits:
        frame = _with(frame, r, col, value)
    path = _csv(tmp_path, frame)
    prepared = _prepare(_synthetic_cfg(path, skip_bad_rows=True), tmp_path / "w", chunk_rows=100)
    stats = prepared.stats[path]
    assert stats.dropped == {"not_a_number": 2, "not_finite": 2, "not_an_integer": 2,
                             "label_not_binary": 1, "conversion_without_click": 1,
                             "negative_timestamp": 1}
    assert (stats.rows_read, stats.rows_kept, stats.rows_dropped) == (300, 291, 9)
    assert stats.missing == {"price": 1}
    assert prepared.total_stats.rows_kept == sum(prepared.rows.values()) == 291
    assert prepared.spec.optional_keys == ("price",)
    assert prepare.describe_drops(prepared) == (
        "validated 300 rows, kept 291, dropped 9 (conversion_without_click: 1, "
        "label_not_binary: 1, negative_timestamp: 1, not_a_number: 2, not_an_integer: 2, "
        "not_finite: 2)")
    expected = good_frame.copy()
    expected.loc[9, "price"] = np.nan
    expected = _typed(expected.drop(index=[1, 2, 3, 4, 5, no_click, 6, 7, 8]), SYNTHETIC)
    pd.testing.assert_frame_equal(_all_rows(prepared), expected.sort_values(
        list(SYNTHETIC.columns)).reset_index(drop=True))


def test_skip_bad_rows_never_keeps_a_value_beyond_float32(tmp_path):
    """Issue 17: 1e39 is finite in float64 and would become inf in float32."""
    rows = [[i % 2, f"u{i % 7}", ["1e39", "-1e39", "1e400", "3.4e38", "-0.5"][i % 5], i]
            for i in range(200)]
    path = _write_rows(tmp_path / "d.csv", ["y", "u", "x", "rid"], rows)
    prepared = _prepare(_own_cfg(path, ["u"], ["x", "rid"], {"t": "y"}, skip_bad_rows=True),
                        tmp_path / "w")
    assert prepared.stats[path].dropped == {"not_finite": 120}
    kept = _all_rows(prepared, by=["rid"])
    np.testing.assert_array_equal(kept["rid"], [i for i in range(200) if i % 5 >= 3])
    assert np.isfinite(kept["x"]).all()
    assert set(kept["x"]) == {np.float32(3.4e38), np.float32(-0.5)}


def test_line_breaks_in_a_categorical_are_refused(tmp_path):
    rows = [[i % 2, ["a", "b"][i % 2], float(i)] for i in range(50)]
    rows[5][1] = "two\nlines"
    path = _write_rows(tmp_path / "d.csv", ["y", "s", "x"], rows)
    cfg = _own_cfg(path, ["s"], ["x"], {"t": "y"})
    # The quoted line break is read as one value; the row number counts records.
    with pytest.raises(DataValidationError,
                       match=r"data row 6 \(line 7\), column 's': expected a value without line "
                             r"breaks or NUL characters, found 'two\\nlines'"):
        _prepare(cfg, tmp_path / "w")
    # NUL stands for the missing value in tf.Transform's vocabulary files: refused too.
    nul = str(tmp_path / "nul.csv")
    with open(path, encoding="utf-8") as f:
        text = f.read().replace('"two\nlines"', "a\x00b")
    with open(nul, "w", encoding="utf-8") as f:
        f.write(text)
    with pytest.raises(DataValidationError, match=r"nul\.csv: data row 6 \(line 7\), column "
                                                  r"'s': expected .* found 'a\\x00b'"):
        _prepare(_own_cfg(nul, ["s"], ["x"], {"t": "y"}), tmp_path / "w")
    cfg = _own_cfg(path, ["s"], ["x"], {"t": "y"}, skip_bad_rows=True)
    prepared = _prepare(cfg, tmp_path / "w")
    assert prepared.stats[path].dropped == {"line_break": 1}
    assert 5.0 not in set(_all_rows(prepared)["x"])


# ----------------------------------------------------------------------------- file structure


def test_a_ragged_row_is_malformed_never_shifted_or_padded(tmp_path, good_frame):
    path = _csv(tmp_path, good_frame, "ragged.csv")
    lines = open(path).read().splitlines()
    width = len(good_frame.columns)
    for i, (edit, found) in enumerate([(lambda s: s + ",1", width + 1),
                                       (lambda s: s.rsplit(",", 1)[0], width - 1)]):
        for line in (1, 8):  # line 1 is the header: line 2 is the first data row
            changed = list(lines)
            changed[line] = edit(changed[line])
            bad = tmp_path / f"ragged_{i}_{line}.csv"
            bad.write_text("\n".join(changed) + "\n")
            for skip in (False, True):  # skipping bad rows does not excuse the structure
                with pytest.raises(DataValidationError) as err:
                    _prepare(_synthetic_cfg(bad, skip_bad_rows=skip), tmp_path / "w")
                assert str(err.value).startswith(
                    f"{bad}: data row {line} (line {line + 1}): malformed CSV: expected {width} "
                    f"fields (as in the header), found {found}: '"), str(err.value)


def test_a_ragged_row_is_found_when_only_some_columns_are_read(tmp_path):
    """Columns without a role are not read; a row with an extra field is still malformed
    (pandas' reader, used before, dropped the extra field when reading a subset of columns)."""
    frame = fixtures.census_frame(100).assign(note="x")
    path = str(tmp_path / "census.csv")
    frame.to_csv(path, index=False, na_rep="")
    lines = open(path).read().splitlines()
    lines[30] += ",surplus"
    open(path, "w").write("\n".join(lines) + "\n")
    cfg = config_lib.from_dict({**fixtures.CENSUS_CONFIG,
                                "data": {**fixtures.CENSUS_CONFIG["data"], "path": path}})
    with pytest.raises(DataValidationError,
                       match=r"census\.csv: data row 30 \(line 31\): malformed CSV: expected 8 "
                             r"fields \(as in the header\), found 9"):
        _prepare(cfg, tmp_path / "w")


def test_empty_header_only_missing_and_binary_files(tmp_path, good_frame):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(good_frame.columns) + "\n")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(",".join(good_frame.columns).encode() + b"\n" +
                       b"\xff\xfe\x00\x01" * 40 + b"\n")
    for path, message in [(empty, r"empty\.csv: empty file"),
                          (header_only, r"header\.csv: no data rows \(header only\)"),
                          (binary, r"binary\.csv: (not a UTF-8 text CSV file|malformed CSV)")]:
        with pytest.raises(DataValidationError, match=message):
            _prepare(_synthetic_cfg(path), tmp_path / "w")
    with pytest.raises(FileNotFoundError, match=r"does not exist: .*nowhere\.csv"):
        _prepare(_synthetic_cfg(tmp_path / "nowhere.csv"), tmp_path / "w")


def test_a_gz_file_that_is_not_gzip_or_is_cut_short_is_named(tmp_path, good_frame):
    """A ``.gz`` name over plain text, and a gzip file cut short (a copy interrupted): one
    error naming the file, where both used to end in a traceback (BadGzipFile, pyarrow's
    OSError "Truncated compressed stream")."""
    import gzip

    text = good_frame.to_csv(index=False).encode()
    plain = tmp_path / "plain.csv.gz"
    plain.write_bytes(text)
    whole = gzip.compress(text)
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(DataValidationError,
                       match=r"plain\.csv\.gz: not a readable gzip file \(BadGzipFile: "):
        _prepare(_synthetic_cfg(plain), tmp_path / "w")
    with pytest.raises(DataValidationError, match=r"cut\.csv\.gz: could not be read to its end "
                                                  r"\(OSError: .*Truncated"):
        _prepare(_synthetic_cfg(cut), tmp_path / "w")


def test_a_label_of_one_class_in_train_is_warned_about_naming_task_and_column(tmp_path,
                                                                              caplog):
    """A label mapped to a column that is all 0 (or all 1) in the train split: its head
    cannot learn and its AUCs are NaN; the run goes on (a smoke sample may be so) but says it.
    A label of both classes gives no warning."""
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"item": rng.integers(0, 9, 400), "price": rng.normal(size=400),
                          "clicked": rng.integers(0, 2, 400), "never": 0, "always": 1})
    path = _csv(tmp_path, frame)
    cfg = _own_cfg(path, ["item"], ["price"], {"a": "clicked", "b": "never", "c": "always"})
    caplog.set_level(logging.WARNING, logger="transform.ingest.prepare")
    prepared = _prepare(cfg, tmp_path / "w")
    train = prepared.rows["train"]
    warnings = [r.getMessage() for r in caplog.records if "cannot learn" in r.getMessage()]
    assert warnings == [
        f"data.labels.b: column 'never' is 0 in all {train} train rows: the b head cannot "
        f"learn from it and its AUCs will be NaN (is it the right column?)",
        f"data.labels.c: column 'always' is 1 in all {train} train rows: the c head cannot "
        f"learn from it and its AUCs will be NaN (is it the right column?)"]


def test_a_bad_cell_after_blank_lines_names_its_real_line(tmp_path):
    """The reader skips blank lines, and a quoted cell may hold a line break: the data row
    counts records, the line is where the record starts in the file (an editor's line).
    Before, the line was always the row + 1."""
    cfg = lambda path: _own_cfg(path, [{"name": "item", "dtype": "string"}],  # noqa: E731
                                ["price"], {"a": "clicked"})
    blank = tmp_path / "blank.csv"
    blank.write_text("\n".join(["item,price,clicked", "1,0.5,0", "", "2,0.7,1", '3,"1.5",0',
                                "", "", "5,cheap,0"]) + "\n")
    with pytest.raises(DataValidationError) as err:
        _prepare(cfg(blank), tmp_path / "w")
    assert str(err.value) == (f"{blank}: data row 4 (line 8), column 'price': expected a "
                              f"number, found 'cheap'")
    broken = tmp_path / "broken.csv"  # the bad record itself spans lines 4 and 5
    broken.write_text("item,price,clicked\n1,0.5,0\n\n\"4\n\",0.1,1\n")
    with pytest.raises(DataValidationError, match=re.escape(
            f"{broken}: data row 2 (line 4), column 'item': expected a value without line "
            f"breaks")):
        _prepare(cfg(broken), tmp_path / "w")
    ragged = tmp_path / "ragged.csv"  # Arrow's own row count for a line with a field more
    ragged.write_text("item,price,clicked\n1,0.5,0\n\n\n3,0.2,1,9\n")
    with pytest.raises(DataValidationError, match=re.escape(
            f"{ragged}: data row 2 (line 5): malformed CSV: expected 3 fields")):
        _prepare(cfg(ragged), tmp_path / "w")
    assert readers.line_of_row(str(blank), 1) == 2 and readers.line_of_row(str(blank), 3) == 5
    assert readers.line_of_row(str(blank), 9) is None  # no such row
    assert readers.line_of_row(str(tmp_path / "x.parquet"), 1) is None


@pytest.mark.parametrize("where", ["first_block", "later"])
def test_a_non_utf8_byte_names_its_line(tmp_path, good_frame, where):
    """One Latin-1 byte in a cell: the file is refused (Arrow's reader and Python's decoder
    both stop there), and the message names the line and the byte; it used to give only a
    decoder's offset in an 8 KB block, or Arrow's message with no position."""
    text = good_frame.to_csv(index=False)
    lines = text.splitlines()
    at = 3 if where == "first_block" else len(lines) - 2  # past Python's first 8 KB block
    assert where == "first_block" or len("\n".join(lines[:at])) > 8192
    row = lines[at].encode()
    comma = row.index(b",")
    lines_bytes = [line.encode() for line in lines]
    lines_bytes[at] = row[:comma] + b"\xe9" + row[comma:]
    path = tmp_path / "latin.csv"
    path.write_bytes(b"\n".join(lines_bytes) + b"\n")
    with pytest.raises(DataValidationError, match=re.escape(
            f"latin.csv: not a UTF-8 text CSV file (line {at + 1}, byte 0xe9 at position "
            f"{comma} of the line; re-encode the file as UTF-8)")):
        _prepare(_synthetic_cfg(path), tmp_path / "w")


def test_missing_extra_and_duplicate_columns(tmp_path, good_frame):
    path = _csv(tmp_path, good_frame.drop(columns=["price", "conv_3"]), "missing.csv")
    with pytest.raises(DataValidationError,
                       match=r"missing\.csv: missing column\(s\) \['conv_3', 'price'\] named in "
                             r"the config"):
        _prepare(_synthetic_cfg(path, skip_bad_rows=True), tmp_path / "w")
    extra = _csv(tmp_path, good_frame.assign(shoe_size=1, colour="red"), "extra.csv")
    assert _prepare(_synthetic_cfg(extra), tmp_path / "w").stats[extra].rows_kept == 300
    with pytest.raises(DataValidationError,
                       match=r"extra\.csv: column\(s\) \['shoe_size', 'colour'\] have no role"):
        _prepare(_synthetic_cfg(extra, extra_columns="error"), tmp_path / "w")
    # Ground truth (gt_*) is never an extra column.
    assert any(c.startswith("gt_") for c in good_frame.columns)
    _prepare(_synthetic_cfg(_csv(tmp_path, good_frame, "gt.csv"), extra_columns="error"),
             tmp_path / "w")
    dup = tmp_path / "dup.csv"
    dup.write_text("click,click\n0,0\n")
    with pytest.raises(DataValidationError, match=r"dup\.csv: duplicate column\(s\) \['click'\]"):
        _prepare(_synthetic_cfg(dup), tmp_path / "w")


def test_every_header_is_checked_before_any_row(tmp_path, good_frame):
    folder = tmp_path / "split"
    folder.mkdir()
    _csv(folder, _with(good_frame, 0, "price", "bad"), "a_test.csv")  # read first: a bad row
    _csv(folder, good_frame.drop(columns=["device"]), "b_train.csv")
    with pytest.raises(DataValidationError,
                       match=r"b_train\.csv: missing column\(s\) \['device'\]"):
        _prepare(_synthetic_cfg(folder), tmp_path / "w")


# ----------------------------------------------------------------------------- types


def test_string_categoricals_are_kept_verbatim_and_empty_is_missing(tmp_path):
    values = [" a", "b ", "a  b", 'say "hi"', "?", "Not in universe", "x, y", "", "ü 東京",
              "0x10", "NA", "null", "None", "NaN", "#N/A", "-", "007"]
    rows = [[i % 2, values[i % len(values)], i] for i in range(len(values) * 12)]
    path = _write_rows(tmp_path / "d.csv", ["y", "s", "rid"], rows)
    prepared = _prepare(_own_cfg(path, ["s"], ["rid"], {"t": "y"}), tmp_path / "w")
    assert prepared.spec.sparse_dtypes == {"s": "string"}
    assert prepared.spec.optional_keys == ("s",)
    assert prepared.stats[path].missing == {"s": 12}
    got = _all_rows(prepared, by=["rid"])
    want = [values[i % len(values)] or None for i in range(len(rows))]
    assert got["s"].tolist() == want


def test_census_strings_and_gaps_prepare_as_written(tmp_path):
    frame = fixtures.census_frame(600, seed=3)
    frame["rid"] = np.arange(600, dtype=np.float64)
    path = str(tmp_path / "census.csv")
    frame.to_csv(path, index=False, na_rep="")
    raw = json.loads(json.dumps(fixtures.CENSUS_CONFIG))
    raw["data"]["path"] = path
    raw["data"]["features"]["dense"].append("rid")
    prepared = _prepare(config_lib.from_dict(raw), tmp_path / "w")
    spec = prepared.spec
    assert spec.sparse_dtypes == {"education": "string", "occupation": "string",
                                  "region": "string"}
    assert set(spec.optional_keys) == {"education", "occupation", "age", "hours"}
    got = _all_rows(prepared, by=["rid"])
    for key in ("education", "occupation", "region"):
        assert got[key].tolist() == [v or None for v in frame[key]], key
    for key in ("age", "hours"):
        np.testing.assert_array_equal(got[key], frame[key].astype(np.float32), err_msg=key)
    assert "Some college, no degree" in set(got["education"])
    assert "West, coast" in set(got["region"])
    np.testing.assert_array_equal(got["income_50k"], frame["income_50k"])


def _auto_rows(n_repeat=40):
    """Columns whose sparse dtype is decided from the data (``dtype: auto``)."""
    patterns = {
        "ints": ["1", "17.0", "17", "-3", ""],            # integers: 17.0 is the id 17
        "zips": ["02139", "10001", "0", "", "7"],          # a leading zero: a code, a string
        "huge": [str(2 ** 63), "5", "", "6", "7"],         # beyond int64: a string
        "signed": ["+5", "5", "", "6", "7"],               # an explicit sign: a string
        "bounds": [str(2 ** 63 - 1), str(-2 ** 63), "", "0", "-0"],
        "decl_int": ["007", "7", " 8 ", "9.00", ""],       # declared int: parsed
        "decl_str": ["17.0", "17", "", "x", "017"],        # declared string: verbatim
    }
    rows = [[i % 2, i] + [patterns[k][i % 5] for k in patterns] for i in range(5 * n_repeat)]
    return ["y", "rid"] + list(patterns), rows, patterns


def test_auto_sparse_dtype_from_the_data(tmp_path):
    header, rows, patterns = _auto_rows()
    path = _write_rows(tmp_path / "d.csv", header, rows)
    sparse = ["ints", "zips", "huge", "signed", "bounds",
              {"name": "decl_int", "dtype": "int"}, {"name": "decl_str", "dtype": "string"}]
    prepared = _prepare(_own_cfg(path, sparse, ["rid"], {"t": "y"}), tmp_path / "w")
    assert prepared.spec.sparse_dtypes == {
        "ints": "int", "zips": "string", "huge": "string", "signed": "string", "bounds": "int",
        "decl_int": "int", "decl_str": "string"}
    got = _all_rows(prepared, by=["rid"]).iloc[:5]
    na = pd.NA
    expected = {"ints": [1, 17, 17, -3, na], "zips": ["02139", "10001", "0", None, "7"],
                "huge": [str(2 ** 63), "5", None, "6", "7"], "signed": ["+5", "5", None, "6", "7"],
                "bounds": [2 ** 63 - 1, -2 ** 63, na, 0, 0], "decl_int": [7, 7, 8, 9, na],
                "decl_str": ["17.0", "17", None, "x", "017"]}
    for key, want in expected.items():
        assert got[key].tolist() == want, key
    assert got["ints"].dtype.name == "Int64" and got["zips"].dtype == object


def test_exact_integer_ids_are_never_rounded_through_a_float(tmp_path):
    """Issue 17: 2**60 and 2**60 + 1 stay two ids, also beside '17.0' in the same column."""
    values = [str(2 ** 60), str(2 ** 60 + 1), "17.0", "17", ""]
    rows = [[i % 2, values[i % 5], values[i % 5], i] for i in range(200)]
    path = _write_rows(tmp_path / "d.csv", ["y", "auto", "declared", "rid"], rows)
    cfg = _own_cfg(path, ["auto", {"name": "declared", "dtype": "int"}], ["rid"], {"t": "y"})
    prepared = _prepare(cfg, tmp_path / "w")
    assert prepared.spec.sparse_dtypes == {"auto": "int", "declared": "int"}
    got = _all_rows(prepared, by=["rid"])
    want = [[2 ** 60, 2 ** 60 + 1, 17, 17, pd.NA][i % 5] for i in range(200)]
    for key in ("auto", "declared"):
        assert got[key].tolist() == want, key
    vocab = preprocessor.vocabulary(got["auto"])
    assert vocab == ["17", "1152921504606846977", "1152921504606846976", ""]


def test_dense_empty_is_missing_and_values_are_float32(tmp_path):
    # 3.4028234663852886e+38 is float32's largest value as float64 prints it: an inexact
    # parse (pandas.to_numeric) read it as beyond float32 and refused it.
    cells = ["1.5", "", "-2.25", "3.4e38", "-0", "1e-50", " 7 ", "0.1",
             "3.4028234663852886e+38", "+.5"]
    rows = [[i % 2, "a", cells[i % len(cells)], i] for i in range(200)]
    path = _write_rows(tmp_path / "d.csv", ["y", "s", "x", "rid"], rows)
    prepared = _prepare(_own_cfg(path, ["s"], ["x", "rid"], {"t": "y"}), tmp_path / "w")
    assert prepared.spec.optional_keys == ("x",)
    assert prepared.stats[path].missing == {"x": 20}
    got = _all_rows(prepared, by=["rid"])
    assert got["x"].dtype == np.float32
    assert got["x"][8] == np.finfo(np.float32).max
    want = np.array([np.float32(float(c)) if c.strip() else np.nan
                     for c in (cells * 20)], np.float32)
    np.testing.assert_array_equal(got["x"], want)


@pytest.mark.parametrize("value", ["1e39", "-1e39", "1e400", "nan", "NaN", "inf", "-Infinity"])
def test_dense_values_not_finite_in_float32_are_refused(tmp_path, value):
    rows = [[i % 2, "a", "1.0" if i != 17 else value] for i in range(100)]
    path = _write_rows(tmp_path / "d.csv", ["y", "s", "x"], rows)
    with pytest.raises(DataValidationError) as err:
        _prepare(_own_cfg(path, ["s"], ["x"], {"t": "y"}), tmp_path / "w")
    assert str(err.value) == (f"{path}: data row 18 (line 19), column 'x': expected "
                              f"{F32_FINITE}, found {value!r}")


# ----------------------------------------------------------------------------- Parquet


def _parquet_and_csv(tmp_path, rows=240):
    """The same rows as a Parquet file (typed columns, nulls) and as a CSV."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    texts = ["a b", "?", "x, y", "Not in universe", None, "ü"]
    ids = [2 ** 60 + 1, 2 ** 60, 17, None, -3]
    data = {
        "y": [bool(v) for v in rng.integers(0, 2, rows)],
        "ida": [ids[i % 5] for i in range(rows)],
        "s": [texts[i % 6] for i in range(rows)],
        "x": [None if i % 7 == 0 else float(v) for i, v in enumerate(rng.normal(size=rows))],
        "f32": [None if i % 11 == 0 else 0.1 * i for i in range(rows)],
        "rid": list(range(rows)),
    }
    table = pa.table({"y": pa.array(data["y"]), "ida": pa.array(data["ida"], pa.int64()),
                      "s": pa.array(data["s"], pa.string()),
                      "x": pa.array(data["x"], pa.float64()),
                      "f32": pa.array(data["f32"], pa.float32()),
                      "rid": pa.array(data["rid"], pa.int64())})
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(table, str(folder / "d.parquet"), row_group_size=37)
    csv_rows = []
    for i in range(rows):
        f32 = data["f32"][i]
        csv_rows.append([int(data["y"][i]), "" if data["ida"][i] is None else data["ida"][i],
                         data["s"][i] or "", "" if data["x"][i] is None else repr(data["x"][i]),
                         "" if f32 is None else repr(f32), i])  # CSV: the float64 text
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    _write_rows(csv_dir / "d.csv", list(data), csv_rows)
    return str(folder), str(csv_dir), data


def test_parquet_gives_the_same_prepared_data_as_the_same_rows_in_csv(tmp_path):
    pq_dir, csv_dir, data = _parquet_and_csv(tmp_path)
    roles = dict(sparse=["ida", "s"], dense=["x", "f32", "rid"], labels={"t": "y"})
    from_pq = _prepare(_own_cfg(pq_dir, adapter="parquet", **roles), tmp_path / "w_pq",
                       chunk_rows=50)
    from_csv = _prepare(_own_cfg(csv_dir, **roles), tmp_path / "w_csv", chunk_rows=50)
    assert dataclasses.replace(from_pq.spec, name="csv") == from_csv.spec
    assert from_pq.spec.sparse_dtypes == {"ida": "int", "s": "string"}
    assert set(from_pq.spec.optional_keys) == {"ida", "s", "x", "f32"}
    assert from_pq.rows == from_csv.rows and min(from_pq.rows.values()) > 0
    frames_pq, frames_csv = prepare.load_frames(from_pq), prepare.load_frames(from_csv)
    for split in splits.SPLITS:
        pd.testing.assert_frame_equal(frames_pq[split], frames_csv[split])
    got = _all_rows(from_pq, by=["rid"])
    assert got["ida"].tolist() == [pd.NA if v is None else v for v in data["ida"]]
    assert got["s"].tolist() == data["s"]
    assert got["y"].tolist() == [int(v) for v in data["y"]]
    np.testing.assert_array_equal(got["x"], np.array(
        [np.nan if v is None else v for v in data["x"]], np.float32))


def test_parquet_rows_are_validated_with_row_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = [0.5] * 100
    x[61] = 1e39
    table = pa.table({"y": pa.array([i % 2 for i in range(100)]),
                      "s": pa.array(["a"] * 100), "x": pa.array(x)})
    path = str(tmp_path / "d.parquet")
    pq.write_table(table, path, row_group_size=16)
    with pytest.raises(DataValidationError, match=r"d\.parquet: data row 62, column 'x': "
                                                  r"expected a number finite in float32"):
        _prepare(_own_cfg(path, ["s"], ["x"], {"t": "y"}, adapter="parquet"), tmp_path / "w",
                 chunk_rows=10)
    not_parquet = tmp_path / "fake.parquet"
    not_parquet.write_text("y,s,x\n1,a,0.5\n")
    with pytest.raises(DataValidationError, match=r"fake\.parquet: not a readable Parquet file"):
        _prepare(_own_cfg(not_parquet, ["s"], ["x"], {"t": "y"}, adapter="parquet"),
                 tmp_path / "w")


# ----------------------------------------------------------------------------- splits


def _copy_ali_ccp(ali_ccp_dir, folder, names):
    folder.mkdir()
    for source, name in names.items():
        shutil.copy(os.path.join(ali_ccp_dir, f"ali_ccp_{source}_sample.csv"), folder / name)
    return str(folder)


def test_find_sources(tmp_path, ali_ccp_dir):
    one = os.path.join(ali_ccp_dir, "ali_ccp_val_sample.csv")
    assert splits.find_sources(one, "csv") == {"all": [one]}
    assert splits.find_sources(ali_ccp_dir, "csv") == {
        "train": [os.path.join(ali_ccp_dir, "ali_ccp_train_sample.csv")],
        "validation": [os.path.join(ali_ccp_dir, "ali_ccp_val_sample.csv")],
        "eval": [os.path.join(ali_ccp_dir, "ali_ccp_test_sample.csv")]}
    parts = _copy_ali_ccp(ali_ccp_dir, tmp_path / "parts", {"val": "p1.csv", "test": "p2.csv"})
    (tmp_path / "parts" / "notes.txt").write_text("not data")
    assert splits.find_sources(parts, "csv") == {
        "all": [os.path.join(parts, "p1.csv"), os.path.join(parts, "p2.csv")]}
    with pytest.raises(FileNotFoundError, match=r"no parquet data files in directory .*parts"):
        splits.find_sources(parts, "parquet")
    with pytest.raises(FileNotFoundError, match=r"data path does not exist: .*nope"):
        splits.find_sources(str(tmp_path / "nope"), "csv")


@pytest.mark.parametrize("names, listed", [
    ({"train": "a_train.csv", "val": "a_val.csv"}, ["a_train.csv", "a_val.csv"]),  # no test
    ({"test": "a_test.csv", "val": "a_val.csv"}, ["a_test.csv", "a_val.csv"]),  # no train
])
def test_split_files_need_train_and_test(tmp_path, ali_ccp_dir, names, listed):
    folder = _copy_ali_ccp(ali_ccp_dir, tmp_path / "d", names)
    with pytest.raises(SplitError, match=r"need at least one \*train\* and one \*test\* file") \
            as err:
        _prepare(_ali_ccp_cfg(folder), tmp_path / "w")
    assert f"found {listed!r}" in str(err.value)


@pytest.mark.parametrize("odd", ["notes.csv", "train_val.csv"])
def test_a_file_of_no_split_or_of_two_in_a_split_directory_is_named(tmp_path, ali_ccp_dir,
                                                                    odd):
    folder = _copy_ali_ccp(ali_ccp_dir, tmp_path / "d",
                           {"train": "a_train.csv", "test": "a_test.csv", "val": odd})
    with pytest.raises(SplitError, match=rf"must name exactly one of train, val, test; these "
                                         rf"do not: \[\('{odd}'"):
        _prepare(_ali_ccp_cfg(folder), tmp_path / "w")


def test_named_splits_are_kept_file_by_file(tmp_path, ali_ccp_dir):
    """Ali-CCP's files: train -> train, val -> validation, test -> eval, rows in file order."""
    cfg = _ali_ccp_cfg(ali_ccp_dir)
    prepared = _prepare(cfg, tmp_path / "w")
    assert not prepared.hash_split
    assert prepared.rows == {"train": 100, "validation": 50, "eval": 50}
    root = tmp_path / "w" / "prepared"
    assert prepared.splits == {s: [str(root / s / f"ali_ccp_{name}_sample.tfrecord.gz")]
                               for s, name in (("train", "train"), ("validation", "val"),
                                               ("eval", "test"))}
    assert set(prepared.stats) == {os.path.join(ali_ccp_dir, f"ali_ccp_{s}_sample.csv")
                                   for s in ("train", "val", "test")}
    spec = prepared.spec
    frames = prepare.load_frames(prepared)
    for split, name in (("train", "train"), ("validation", "val"), ("eval", "test")):
        source = pd.read_csv(os.path.join(ali_ccp_dir, f"ali_ccp_{name}_sample.csv"), dtype=str)
        frame = frames[split]
        assert list(frame.columns) == list(spec.columns)
        for key in spec.columns:
            if key in spec.dense_keys:
                want = np.array([np.float32(float(v)) for v in source[key]], np.float32)
                assert frame[key].dtype == np.float32
            else:
                want = np.array([int(v) for v in source[key]], np.int64)
                assert frame[key].dtype == np.int64, key
            np.testing.assert_array_equal(frame[key], want, err_msg=f"{split} {key}")


def test_train_and_test_files_carve_validation_from_train(tmp_path, ali_ccp_dir):
    folder = _copy_ali_ccp(ali_ccp_dir, tmp_path / "d",
                           {"train": "my_train.csv", "test": "my_test.csv"})
    prepared = _prepare(_ali_ccp_cfg(folder, validation_percent=30), tmp_path / "w")
    assert not prepared.hash_split
    assert prepared.rows["eval"] == 50
    assert prepared.rows["train"] + prepared.rows["validation"] == 100
    assert 10 <= prepared.rows["validation"] <= 50
    frames = prepare.load_frames(prepared)
    train = pd.read_csv(os.path.join(folder, "my_train.csv"))
    carved = pd.concat([frames["train"], frames["validation"]]).sort_values(
        list(train.columns)).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        carved, _typed(train, prepared.spec).sort_values(list(train.columns)).reset_index(
            drop=True))


@pytest.mark.parametrize("as_directory", [False, True])
def test_unsplit_data_is_hashed_into_three_splits(tmp_path, as_directory):
    frame = fixtures.census_frame(3000, seed=1)
    if as_directory:
        path = tmp_path / "parts"
        path.mkdir()
        frame.iloc[:1200].to_csv(path / "part1.csv", index=False, na_rep="")
        frame.iloc[1200:].to_csv(path / "part2.csv", index=False, na_rep="")
    else:
        path = tmp_path / "census.csv"
        frame.to_csv(path, index=False, na_rep="")
    raw = json.loads(json.dumps(fixtures.CENSUS_CONFIG))
    raw["data"].update(path=str(path), eval_percent=20, validation_percent=10)
    prepared = _prepare(config_lib.from_dict(raw), tmp_path / "w")
    assert prepared.hash_split
    rows = prepared.rows
    assert sum(rows.values()) == 3000
    assert 0.16 < rows["eval"] / 3000 < 0.24, rows
    assert 0.06 < rows["validation"] / (3000 - rows["eval"]) < 0.14, rows
    if as_directory:  # one output file per source file and split
        assert {os.path.basename(p) for p in prepared.splits["train"]} == {
            "part1.tfrecord.gz", "part2.tfrecord.gz"}


def test_identical_rows_land_in_the_same_split(tmp_path):
    rows = [[i % 2, f"u{i % 3}", float(i)] for i in range(150)] * 4
    path = _write_rows(tmp_path / "d.csv", ["y", "u", "x"], rows)
    prepared = _prepare(_own_cfg(path, ["u"], ["x"], {"t": "y"}), tmp_path / "w")
    seen = {}
    for split, frame in prepare.load_frames(prepared).items():
        for x, count in frame["x"].value_counts().items():
            assert count == 4 and x not in seen, (x, split, seen.get(x))
            seen[x] = split
    assert len(seen) == 150 and len(set(seen.values())) == 3


def test_too_few_rows_for_three_splits_is_an_error(tmp_path):
    path = _write_rows(tmp_path / "d.csv", ["y", "u"], [[0, "a"], [1, "b"]])
    with pytest.raises(DataValidationError, match=r"d\.csv: split\(s\) \[.*\] got no rows"):
        _prepare(_own_cfg(path, ["u"], [], {"t": "y"}), tmp_path / "w")


# ----------------------------------------------------------------------------- outputs


def _census_prepared(tmp_path, work):
    path = fixtures.write_census_csv(str(tmp_path / "census.csv"), rows=600, seed=2)
    raw = json.loads(json.dumps(fixtures.CENSUS_CONFIG))
    raw["data"]["path"] = path
    return _prepare(config_lib.from_dict(raw), work)


def _parse_schema(path):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    with tf.io.gfile.GFile(path) as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


@pytest.mark.parametrize("dataset", ["census", "synthetic"])
def test_spec_and_schema_files_match_the_prepared_data(tmp_path, good_frame, dataset):
    from tensorflow_metadata.proto.v0 import schema_pb2

    if dataset == "census":
        prepared = _census_prepared(tmp_path, tmp_path / "w")
    else:
        path = _csv(tmp_path, _with(good_frame, 3, "price", ""))
        prepared = _prepare(_synthetic_cfg(path), tmp_path / "w")
    spec = prepared.spec
    assert prepare.read_spec(prepared.root) == spec
    assert prepared.schema_path == f"{prepared.root}/schema.pbtxt"
    schema = _parse_schema(prepared.schema_path)
    by_name = {f.name: f for f in schema.feature}
    assert list(by_name) == list(spec.columns)
    kinds = {"float": schema_pb2.FLOAT, "string": schema_pb2.BYTES, "int": schema_pb2.INT}
    for key in spec.columns:
        feature = by_name[key]
        assert feature.type == kinds[spec.dtype(key)], key
        if key in spec.optional_keys:
            assert feature.presence.min_fraction == 0.0, key
            assert (feature.value_count.min, feature.value_count.max) == (1, 1), key
            assert not feature.HasField("shape"), key
        else:
            assert feature.presence.min_fraction == 1.0, key
            assert [d.size for d in feature.shape.dim] == [1], key
        if key in spec.label_columns:
            assert feature.WhichOneof("domain_info") == "int_domain", key
            assert (feature.int_domain.min, feature.int_domain.max) == (0, 1), key
        else:
            assert feature.WhichOneof("domain_info") is None, key
    if dataset == "census":
        assert set(spec.optional_keys) == {"education", "occupation", "age", "hours"}
        assert spec.label_columns == ("income_50k", "is_married")
    else:
        assert spec.optional_keys == ("price",)
        assert len(spec.label_columns) == 7  # click, conversion, conv_0..4


def _examples(path):
    return [tf.train.Example.FromString(r.numpy())
            for r in tf.data.TFRecordDataset([path], compression_type="GZIP")]


def test_prepare_is_idempotent_and_replaces_stale_splits(tmp_path, ali_ccp_dir):
    work = tmp_path / "w"
    cfg = _ali_ccp_cfg(ali_ccp_dir)
    first = _prepare(cfg, work)
    records = {p: _examples(p) for files in first.splits.values() for p in files}
    first_frames = prepare.load_frames(first)
    again = _prepare(cfg, work)
    assert again.splits == first.splits and again.rows == first.rows
    assert (first.reused, again.reused) == (False, True)
    # The same examples in the same order (not the same bytes: a tf.Example's features are a
    # protobuf map, serialised in no fixed order).
    assert {p: _examples(p) for p in records} == records
    for split, frame in prepare.load_frames(again).items():
        pd.testing.assert_frame_equal(frame, first_frames[split])
    # Another source in the same work dir: nothing of the first one is left.
    one = _census_prepared(tmp_path, work)
    names = sorted(os.path.relpath(os.path.join(d, n), work) for d, _, ns in os.walk(work)
                   for n in ns)
    assert names == sorted([f"prepared/{s}/census.tfrecord.gz" for s in splits.SPLITS] +
                           ["prepared/dataset_spec.json", "prepared/schema.pbtxt",
                            "prepared/content.sha256"])
    assert sum(one.rows.values()) == 600 and not one.reused


def _stamps(root):
    """Every file under ``root``: relative path -> (inode, modification time in ns)."""
    return {os.path.relpath(os.path.join(d, n), root): (os.stat(os.path.join(d, n)).st_ino,
                                                        os.stat(os.path.join(d, n)).st_mtime_ns)
            for d, _, names in os.walk(root) for n in names}


def test_the_same_content_keeps_the_prepared_files_and_their_times(tmp_path, caplog):
    """What a cached pipeline run needs (ImportExampleGen fingerprints its input by file sizes
    and modification times): the same rows prepared again leave every file as it was, although
    the examples' bytes differ from one process to the next; any change replaces them."""
    csv_path = fixtures.write_census_csv(str(tmp_path / "census.csv"), rows=600, seed=2)
    raw = json.loads(json.dumps(fixtures.CENSUS_CONFIG))
    raw["data"]["path"] = csv_path
    cfg = config_lib.from_dict(raw)
    work = tmp_path / "w"
    first = _prepare(cfg, work)
    root = str(work / "prepared")
    stamps = _stamps(root)
    digest = open(os.path.join(root, "content.sha256")).read().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    # A file written beside the prepared data later (the ADM schema) does not count.
    open(os.path.join(root, "schema_adm.pbtxt"), "w").write("x")
    caplog.set_level(logging.INFO, logger="transform.ingest.prepare")
    again = _prepare(cfg, work)
    assert again.reused and again.splits == first.splits and again.rows == first.rows
    assert _stamps(root) == {**stamps, "schema_adm.pbtxt": _stamps(root)["schema_adm.pbtxt"]}
    assert f"(sha256 {digest[:12]}): kept it as it was" in caplog.text
    assert not os.path.exists(work / ".staging-prepared")
    # One cell changed: another digest, every file replaced.
    lines = open(csv_path).read().splitlines()
    column = lines[0].split(",").index("age")
    at = next(i for i, line in enumerate(lines[1:], 1) if line.split(",")[column])
    row = lines[at].split(",")
    row[column] = str(float(row[column]) + 1)
    lines[at] = ",".join(row)
    open(csv_path, "w").write("\n".join(lines) + "\n")
    changed = _prepare(cfg, work)
    assert not changed.reused
    assert open(os.path.join(root, "content.sha256")).read().strip() != digest
    assert not os.path.exists(os.path.join(root, "schema_adm.pbtxt"))
    assert all(_stamps(root)[name] != stamp for name, stamp in stamps.items())
    # A stray file in a split folder (ImportExampleGen would read it), or no digest file
    # (prepared by an older version): replaced although the rows are the same.
    for mutate in (lambda: open(os.path.join(root, "train", "stray.tfrecord.gz"), "w").close(),
                   lambda: os.remove(os.path.join(root, "content.sha256"))):
        mutate()
        assert not _prepare(cfg, work).reused
        assert not os.path.exists(os.path.join(root, "train", "stray.tfrecord.gz"))
        assert _prepare(cfg, work).reused


def test_a_ram_work_dir_holds_the_same_prepared_data(tmp_path, ali_ccp_dir):
    """Issue 19: every file goes through tf.io.gfile (``ram://`` here, ``gs://`` in the cloud)."""
    local = _census_prepared(tmp_path, tmp_path / "w")
    work = f"ram://ingest-{uuid.uuid4().hex}/w"
    in_ram = _census_prepared(tmp_path, work)
    assert in_ram.root == f"{work}/prepared"
    assert in_ram.rows == local.rows and in_ram.spec == local.spec
    assert all(p.startswith(f"{work}/prepared/") for files in in_ram.splits.values()
               for p in files)
    local_frames = prepare.load_frames(local)
    for split, frame in prepare.load_frames(in_ram).items():
        pd.testing.assert_frame_equal(frame, local_frames[split])
    assert prepare.read_spec(in_ram.root) == local.spec
    assert _parse_schema(in_ram.schema_path) == _parse_schema(local.schema_path)
    for split in splits.SPLITS:
        assert examples.split_files(in_ram.root, split) == in_ram.splits[split]
    # Prepared again from other files: replaced, the staging folder gone.
    cfg = _ali_ccp_cfg(ali_ccp_dir)
    again = _prepare(cfg, work)
    assert again.rows == {"train": 100, "validation": 50, "eval": 50}
    assert sorted(tf.io.gfile.glob(f"{work}/prepared/*/*.tfrecord.gz")) == sorted(
        p for files in again.splits.values() for p in files)
    assert not tf.io.gfile.glob(f"{work}/.prepared-staging*")
    assert prepare.read_spec(again.root) == again.spec


def test_generated_synthetic_rows_prepare_without_ground_truth(tmp_path):
    cfg = config_lib.from_dict({"data": {"generate_rows": 1500, "num_actions": 3, "seed": 9}})
    prepared = _prepare(cfg, tmp_path / "w")
    spec = fixtures.synthetic_spec(3)
    assert prepared.spec == spec and prepared.hash_split
    assert sum(prepared.rows.values()) == 1500
    assert list(prepared.stats) == [synthetic.GENERATED]
    expected = _typed(synthetic.generate(1500, seed=9, num_actions=3), spec)
    pd.testing.assert_frame_equal(_all_rows(prepared), expected.sort_values(
        list(spec.columns)).reset_index(drop=True))


def test_load_frames_round_trips_exactly(tmp_path):
    spec = features.DatasetSpec(
        name="rt", sparse_keys=("ids", "text"), dense_keys=("x",), label_keys={"t": "y"},
        timestamp_key="ts", sparse_dtypes={"ids": "int", "text": "string"},
        optional_keys=("ids", "text", "x"))
    ids = pd.array([2 ** 63 - 1, -2 ** 63, 2 ** 60 + 1, None, 0], dtype="Int64")
    frame = pd.DataFrame({
        "y": np.array([0, 1, 1, 0, 1], np.int64),
        "ids": ids,
        "text": np.array(["a b", None, "ü 東京", "x, y", " "], dtype=object),
        "x": np.array([0.1, np.nan, -0.0, 3.4e38, 1e-45], np.float32),
        "ts": np.array([0, 2 ** 40, 5, 6, 7], np.int64)})
    writer = examples.SplitWriter(str(tmp_path / "out"), "part")
    writer.write(examples.encode(frame.iloc[:2], spec))
    writer.write(examples.encode(frame.iloc[2:], spec))
    assert writer.rows == 5
    path = writer.close()
    assert path == str(tmp_path / "out" / "part.tfrecord.gz")
    assert os.listdir(tmp_path / "out") == ["part.tfrecord.gz"]  # no temporary file left
    back = examples.read_frame([path], spec)
    assert list(back.columns) == list(spec.columns)
    pd.testing.assert_frame_equal(back, frame[list(spec.columns)])
    assert np.signbit(back["x"][2])  # -0.0 stays -0.0
    # A missing value is a feature without values: TFX's decoder (ExampleGen -> TFDV,
    # Transform) reads it as null, never as a default value.
    from tfx_bsl.coders import example_coder

    records = [r.numpy() for r in tf.data.TFRecordDataset([path], compression_type="GZIP")]
    batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(records)
    decoded = {name: batch.column(i).to_pylist() for i, name in enumerate(batch.schema.names)}
    assert decoded["text"] == [[b"a b"], None, ["ü 東京".encode()], [b"x, y"], [b" "]]
    assert decoded["ids"] == [[2 ** 63 - 1], [-2 ** 63], [2 ** 60 + 1], None, [0]]
    assert decoded["x"][1] is None and decoded["y"] == [[0], [1], [1], [0], [1]]


def test_csv_writer_keeps_float_text(tmp_path):
    frame = pd.DataFrame({"a": [0.0, 2.0, 0.25], "b": [1, 2, 3]})
    path = csv_io.write_frame(frame, str(tmp_path / "f.csv"))
    assert open(path).read() == "a,b\n0.0,1\n2.0,2\n0.25,3\n"
