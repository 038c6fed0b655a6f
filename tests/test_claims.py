"""Paired per-seed claim statistics (funnelrank/commands/claims.py) and ``bench --report``."""
import json
import math

import numpy as np
import pytest
import yaml

from funnelrank import cli
from funnelrank.commands import bench, claims
from schemas.config import ConfigError

T_975_DF4 = 2.7764451051977987  # Student t quantile, 0.975, 4 degrees of freedom (tables)


def test_paired_difference_matches_a_numpy_reference():
    run = [0.71, 0.72, 0.73, 0.70, 0.74]
    base = [0.70, 0.70, 0.70, 0.70, 0.70]
    got = claims.paired_difference(run, base)
    diffs = np.array(run) - np.array(base)
    half = T_975_DF4 * np.std(diffs, ddof=1) / np.sqrt(5)
    np.testing.assert_allclose(got["differences"], diffs, atol=1e-12)
    assert got["n"] == 5 and got["positive"] == 4 and got["negative"] == 0
    assert got["mean"] == pytest.approx(0.02, abs=1e-12)
    assert got["ci_low"] == pytest.approx(0.02 - half, abs=1e-12)
    assert got["ci_high"] == pytest.approx(0.02 + half, abs=1e-12)
    assert got["sign_p"] == pytest.approx(2 / 16)  # 4 of 4 non-tied seeds positive, two-sided
    assert got["verdict"] == "higher"


@pytest.mark.parametrize("diffs, verdict", [
    ([-0.01, -0.012, -0.009], "lower"),
    ([0.016, 0.0007, 0.0005], "no difference shown"),  # one seed carries the mean
    ([0.001], "fewer than 2 seeds"),
    ([float("nan"), 0.003], "fewer than 2 seeds"),
])
def test_verdict_is_read_from_the_interval(diffs, verdict):
    got = claims.paired_difference(diffs, [0.0] * len(diffs))
    assert got["verdict"] == verdict
    assert math.isnan(got["ci_low"]) == (verdict == "fewer than 2 seeds")


def test_nan_seeds_are_left_out_and_unequal_lengths_refused():
    got = claims.paired_difference([0.5, float("nan"), 0.7, 0.9], [0.4, 0.5, 0.5, 0.6])
    assert got["n"] == 3 and got["mean"] == pytest.approx(0.2)
    assert math.isnan(got["differences"][1])
    with pytest.raises(ValueError, match="3 run values against 2 base values"):
        claims.paired_difference([1, 2, 3], [1, 2])


@pytest.mark.parametrize("claim, message", [
    ({"claim": "x", "run": "A", "base": "C", "metric": "ctr.auc"},
     r"g.yaml: claims\[0\].base = 'C' is not a run of the grid; runs are \['A', 'B'\]"),
    ({"claim": "x", "run": "A", "base": "A", "metric": "ctr.auc"},
     r"claims\[0\] compares run 'A' with itself"),
    ({"claim": "x", "run": "A", "base": "B", "metric": "cvr.gauc"},
     r"claims\[0\].metric = 'cvr.gauc' is not one of the grid's metrics \['ctr.auc'\]"),
    ({"run": "A", "base": "B", "metric": "ctr.auc"},
     r"claims\[0\] needs exactly the keys \['claim', 'run', 'base', 'metric'\]"),
])
def test_bad_claims_are_named(claim, message):
    with pytest.raises(ConfigError, match=message):
        claims.check_claims("g.yaml", [claim], ["A", "B"], ["ctr.auc"])


def _results():
    def run(label, values):
        return {"label": label, "config": "configs/mmoe.yaml", "overrides": {},
                "metrics": {"ctr.auc": {"mean": float(np.mean(values)),
                                        "std": float(np.std(values)), "values": values}}}
    return {"grid": {"name": "g", "seeds": [1, 2, 3], "metrics": ["ctr.auc"]},
            "runs": [run("A", [0.70, 0.71, 0.72]), run("B", [0.68, 0.69, 0.70])]}


def test_evaluate_skips_claims_on_runs_the_results_lack_and_renders_a_table():
    listed = [{"claim": "A beats B", "run": "A", "base": "B", "metric": "ctr.auc"},
              {"claim": "C beats B", "run": "C", "base": "B", "metric": "ctr.auc"}]
    got = claims.evaluate(_results(), listed)
    assert [c["claim"] for c in got] == ["A beats B"]
    # Constant +0.02 differences: zero spread, so the interval is the point itself.
    assert got[0]["ci_low"] == pytest.approx(0.02) and got[0]["verdict"] == "higher"
    table = claims.markdown(got, [1, 2, 3])
    assert "| A beats B (A vs B) | ctr.auc | +0.0200, +0.0200, +0.0200 | +0.0200 |" in table
    assert "3/0 (p 0.25) | higher |" in table and "paired by train seed [1, 2, 3]" in table
    assert claims.markdown([], [1]) == ""
    # Differences below 1e-4 (a stage that barely moves the model) stay visible.
    tiny = claims.evaluate({"runs": [
        {"label": "A", "metrics": {"ctr.auc": {"values": [0.70003, 0.70002]}}},
        {"label": "B", "metrics": {"ctr.auc": {"values": [0.7, 0.7]}}}]}, listed[:1])
    assert "| +3.0e-05, +2.0e-05 | +2.5e-05 |" in claims.markdown(tiny, [1, 2])


def test_bench_report_rebuilds_table_and_claims_from_stored_results(tmp_path, capsys):
    grid_path = tmp_path / "g.yaml"
    grid_path.write_text(yaml.safe_dump({
        "name": "g", "seeds": [1, 2, 3], "metrics": ["ctr.auc"],
        "runs": [{"label": "A", "config": "configs/mmoe.yaml"},
                 {"label": "B", "config": "configs/mmoe.yaml"}],
        "claims": [{"claim": "A beats B", "run": "A", "base": "B", "metric": "ctr.auc"}]}))
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match=r"no stored results .*g\.json: run the grid"):
        bench.report_stored(bench.load_grid(str(grid_path)), str(out))
    out.mkdir()
    (out / "g.json").write_text(json.dumps(_results()))
    assert cli.main(["bench", "--grid", str(grid_path), "--out", str(out), "--report"]) == 0
    printed = capsys.readouterr().out
    assert "| A | 0.7100 ± 0.0082 |" in printed and "| A beats B (A vs B) |" in printed
    saved = json.loads((out / "g.json").read_text())
    assert saved["claims"][0]["verdict"] == "higher"
    assert saved["grid"]["claims"][0]["claim"] == "A beats B"
    assert "| A beats B (A vs B) |" in (out / "g.md").read_text()
