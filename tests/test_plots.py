"""Benchmark plots: PNG images of a grid's AUCs with error bars and of the throughput report."""
import json
import math

import matplotlib.image
import pytest

from funnelrank.commands import plots

GRID = {"grid": {"name": "tiny", "seeds": [1, 2], "metrics": ["ctr.auc", "cvr.auc",
                                                               "train.examples_per_sec"]},
        "runs": [{"label": "MMoE", "metrics": {
                     "ctr.auc": {"mean": 0.68, "std": 0.002},
                     "cvr.auc": {"mean": 0.64, "std": 0.01},
                     "train.examples_per_sec": {"mean": 1e5, "std": 10.0}}},
                 {"label": "DNN (STL)", "metrics": {
                     "ctr.auc": {"mean": 0.685, "std": 0.001},
                     "cvr.auc": {"mean": math.nan, "std": math.nan},
                     "train.examples_per_sec": {"mean": 2e5, "std": 5.0}}}]}
REPORT = {"benchmark": "throughput", "rows": 5000, "batch": 2048, "results": [
    {"model": m, "peer": p, "train_examples_per_sec": t, "inference_examples_per_sec": 4 * t}
    for m, p, t in [("mmoe", "funnelrank", 1.4e5), ("mmoe", "DeepCTR", 2.4e5),
                    ("ple", "funnelrank", 0.9e5)]]}


def _image(path):
    data = open(path, "rb").read()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300
    assert image[..., :3].std() > 0.01  # not a blank canvas
    return image


def test_grid_plot_draws_the_quality_metrics(tmp_path):
    assert plots.quality_metrics(GRID["grid"]["metrics"]) == ["ctr.auc", "cvr.auc"]
    path = plots.grid_plot(GRID, str(tmp_path / "deep" / "tiny.png"))
    _image(path)
    only_speed = {**GRID, "grid": {**GRID["grid"], "metrics": ["train.examples_per_sec"]}}
    assert plots.grid_plot(only_speed, str(tmp_path / "none.png")) is None


def test_throughput_plot_draws_every_model_and_implementation(tmp_path):
    _image(plots.throughput_plot(REPORT, str(tmp_path / "t.png")))


def test_saved_results_are_redrawn_beside_their_json(tmp_path, capsys):
    (tmp_path / "tiny.json").write_text(json.dumps(GRID))
    (tmp_path / "throughput.json").write_text(json.dumps(REPORT))
    assert plots.main([str(tmp_path / "tiny.json"), str(tmp_path / "throughput.json")]) == 0
    _image(tmp_path / "tiny.png")
    _image(tmp_path / "throughput.png")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="neither a bench grid result nor a throughput report"):
        plots.plot_file(str(tmp_path / "other.json"))
