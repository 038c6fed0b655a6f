"""Per-seed model selection rows of a benchmark grid (funnelrank/commands/selection.py)."""
import json
import math

import pytest
import yaml

from funnelrank.commands import bench, selection
from schemas.config import ConfigError

VAL, EVAL = "validation.ctcvr.auc", "ctcvr.auc"


def _run(label, val, ev):
    return {"label": label, "config": "configs/man.yaml", "overrides": {},
            "metrics": {VAL: bench._summary(val), EVAL: bench._summary(ev)}}


def _results():
    return {"grid": {"name": "g", "seeds": [1, 2, 3, 4], "metrics": [VAL, EVAL]},
            "runs": [_run("A", [0.70, 0.60, 0.65, float("nan")], [0.71, 0.61, 0.66, 0.50]),
                     _run("B", [0.69, 0.62, 0.65, float("nan")], [0.90, 0.91, 0.92, 0.93])]}


def test_each_seed_takes_the_run_its_validation_metric_prefers():
    sel = {"label": "chosen", "among": ["A", "B"], "metric": VAL}
    row, = selection.select(_results(), [sel], bench._summary)
    # Seed 1: A (0.70 > 0.69) although B is far better on eval; seed 2: B; seed 3: a tie goes
    # to the first listed; seed 4: no finite validation value, so NaN everywhere.
    assert row["chosen"] == ["A", "B", "A", None]
    assert row["metrics"][EVAL]["values"][:3] == [0.71, 0.91, 0.66]
    assert math.isnan(row["metrics"][EVAL]["values"][3])
    assert row["metrics"][EVAL]["mean"] == pytest.approx((0.71 + 0.91 + 0.66) / 3)
    low, = selection.select(_results(), [{**sel, "mode": "min"}], bench._summary)
    assert low["chosen"] == ["B", "A", "A", None]
    assert selection.select({"runs": _results()["runs"][:1]}, [sel], bench._summary) == []


@pytest.mark.parametrize("sel, message", [
    ({"label": "A", "among": ["A", "B"], "metric": VAL},
     r"g.yaml: selections\[0\].label = 'A' is already the label of a run or selection"),
    ({"label": "s", "among": ["A"], "metric": VAL},
     r"selections\[0\].among must list 2 or more different runs, got \['A'\]"),
    ({"label": "s", "among": ["A", "C"], "metric": VAL},
     r"selections\[0\].among names \['C'\], not runs of the grid; runs are \['A', 'B'\]"),
    ({"label": "s", "among": ["A", "B"], "metric": "validation.cvr.auc"},
     r"selections\[0\].metric = 'validation.cvr.auc' is not one of the grid's metrics"),
    ({"label": "s", "among": ["A", "B"], "metric": VAL, "mode": "best"},
     r"selections\[0\].mode must be one of \['max', 'min'\], got 'best'"),
    ({"label": "s", "among": ["A", "B"]}, r"selections\[0\] needs the keys"),
])
def test_bad_selections_are_named(sel, message):
    with pytest.raises(ConfigError, match=message):
        selection.check_selections("g.yaml", [sel], ["A", "B"], [VAL, EVAL])


def test_report_adds_the_selection_row_and_claims_may_compare_it(tmp_path, capsys):
    grid_path = tmp_path / "g.yaml"
    grid_path.write_text(yaml.safe_dump({
        "name": "g", "seeds": [1, 2, 3, 4], "metrics": [VAL, EVAL],
        "runs": [{"label": "A", "config": "configs/man.yaml"},
                 {"label": "B", "config": "configs/man.yaml"}],
        "selections": [{"label": "chosen on validation", "among": ["A", "B"], "metric": VAL}],
        "claims": [{"claim": "choice beats A", "run": "chosen on validation", "base": "A",
                    "metric": EVAL}]}))
    out = tmp_path / "out"
    out.mkdir()
    (out / "g.json").write_text(json.dumps(_results()))
    grid = bench.load_grid(str(grid_path))
    first = bench.report_stored(grid, str(out))
    again = bench.report_stored(grid, str(out))  # the stored row is replaced, not doubled
    assert [r["label"] for r in again["runs"]] == ["A", "B", "chosen on validation"]
    assert again["runs"][2]["chosen"] == first["runs"][2]["chosen"] == ["A", "B", "A", None]
    claim, = again["claims"]
    assert claim["differences"][:3] == pytest.approx([0.0, 0.30, 0.0])
    text = (out / "g.md").read_text()
    assert "| chosen on validation | " in text
    assert ("chosen on validation: per seed the max of validation.ctcvr.auc among ['A', 'B']; "
            "chosen: ['A', 'B', 'A', None]") in text
    assert "| choice beats A (chosen on validation vs A) |" in capsys.readouterr().out
