"""The quality harness's variant files (benchmarks/grids/quality/): each one is valid, and the
checker refuses the mistakes that would otherwise fail a sweep hours in."""
import glob
import importlib.util
import os

import pytest

from schemas.config import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = sorted(glob.glob(os.path.join(ROOT, "benchmarks", "grids", "quality", "*.yaml")))


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location(
        "quality_bench", os.path.join(ROOT, "benchmarks", "quality.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_variant_files():
    assert len(FILES) >= 3, FILES


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_shipped_variant_file_is_valid(quality, path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the files name configs relative to the repository root
    raw = quality.load_variants(path)
    labels = [r["label"] for r in raw["runs"]]
    assert len(labels) == len(set(labels)) > 0


@pytest.mark.parametrize("runs, message", [
    ([{"label": "a"}, {"label": "a"}], "label 'a' appears twice"),
    ([{"overrides": {"train.epochs": 2}}], "runs[0] needs 'label' and 'config'"),
    ([{"label": "bad", "overrides": {"train.epochs": -1}}], "run 'bad': "),
    ([{"label": "lr", "baseline": {"name": "logistc"}}], "runs[0].baseline.name"),
    ([{"label": "x", "overide": {}}], "runs[0] has unknown key(s) ['overide']"),
])
def test_invalid_variant_file_is_refused_naming_file_and_run(quality, tmp_path, monkeypatch,
                                                             runs, message):
    import yaml
    monkeypatch.chdir(ROOT)
    path = tmp_path / "variants.yaml"
    path.write_text(yaml.safe_dump({"config": "configs/mmoe.yaml", "runs": runs}))
    with pytest.raises(ConfigError) as err:
        quality.load_variants(str(path))
    assert str(path) in str(err.value) and message in str(err.value), str(err.value)


def test_file_overrides_go_under_every_trained_runs_own(quality, tmp_path, monkeypatch):
    import yaml
    monkeypatch.chdir(ROOT)
    path = tmp_path / "variants.yaml"
    path.write_text(yaml.safe_dump({
        "config": "configs/mmoe.yaml",
        "overrides": {"train.early_stopping_patience": 2, "model.embedding_dim": 4},
        "runs": [{"label": "a"}, {"label": "b", "overrides": {"model.embedding_dim": 6}},
                 {"label": "lr", "baseline": {"name": "logistic"}}]}))
    runs = quality.load_variants(str(path))["runs"]
    assert runs[0]["overrides"] == {"train.early_stopping_patience": 2, "model.embedding_dim": 4}
    assert runs[1]["overrides"] == {"train.early_stopping_patience": 2, "model.embedding_dim": 6}
    assert "overrides" not in runs[2]
    path.write_text(yaml.safe_dump({"config": "configs/mmoe.yaml", "overrides": [1],
                                    "runs": [{"label": "a"}]}))
    with pytest.raises(ConfigError, match=r"overrides must map config keys to values"):
        quality.load_variants(str(path))
