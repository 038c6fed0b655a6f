import json

import pytest

from schemas import config as config_lib


def test_round_trip_through_json():
    cfg = config_lib.load("configs/synthetic_mmoe.yaml")
    again = config_lib.from_dict(json.loads(json.dumps(config_lib.to_dict(cfg))))
    assert again == cfg
    assert cfg.model.backbone == "mmoe" and cfg.model.tower_units == (32,)
    assert cfg.data.generate_rows == 200_000


def test_overrides_apply_by_dotted_key(tmp_path):
    cfg = config_lib.load("configs/synthetic_mmoe.yaml",
                          {"train.epochs": 5, "data.path": str(tmp_path)})
    assert cfg.train.epochs == 5 and cfg.data.path == str(tmp_path)


@pytest.mark.parametrize("raw, message", [
    ({"trian": {}}, r"unknown section\(s\) \['trian'\]"),
    ({"train": {"epoch": 2}}, r"train: unknown key\(s\) \['epoch'\]"),
    ({"train": {"epochs": "two"}}, r"train.epochs: expected an integer, got 'two'"),
    ({"train": {"epochs": 0}}, r"train.epochs: expected >= 1, got 0"),
    ({"train": {"learning_rate": -1}}, r"learning_rate: expected > 0, got -1"),
    ({"data": {"adapter": "criteo"}}, r"data.adapter: expected 'synthetic' or 'ali_ccp', got "
                                      r"'criteo'"),
    ({"data": {"adapter": "ali_ccp"}}, r"data.path is required for adapter 'ali_ccp'"),
    ({"data": {"skip_bad_rows": "yes"}}, r"expected true/false, got 'yes'"),
    ({"model": {"tasks": ["cvr"]}}, r"must include 'ctr'"),
])
def test_invalid_values_are_named(raw, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.from_dict(raw)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="config file not found: .*nope.yaml"):
        config_lib.load(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(config_lib.ConfigError, match="bad.yaml: not valid YAML"):
        config_lib.load(str(bad))


def test_every_shipped_config_parses():
    import glob

    paths = sorted(glob.glob("configs/*.yaml"))
    assert "configs/ali_ccp_mmoe.yaml" in paths
    for path in paths:
        config_lib.load(path)
