"""The experiment config: typed parsing, resolution (presets, tasks, loss), every error named."""
import glob
import json
import os

import pytest

from schemas import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CENSUS = {
    "name": "census",
    "data": {"adapter": "csv", "path": "census.csv",
             "features": {"sparse": ["education", {"name": "occupation", "min_count": 3}],
                          "dense": ["age"]},
             "labels": {"income": "income_50k", "married": "is_married"}},
}


def test_round_trip_through_json():
    cfg = config_lib.load("configs/synthetic_mmoe.yaml")
    again = config_lib.from_dict(json.loads(json.dumps(config_lib.to_dict(cfg))))
    assert again == cfg
    assert cfg.model.backbone == "mmoe" and cfg.model.tower_units == (32,)
    assert cfg.data.generate_rows == 200_000
    custom = json.loads(json.dumps(config_lib.to_custom_config(cfg, _spec(cfg))))
    assert config_lib.from_custom_config(custom)[0] == cfg


def _spec(cfg):
    from schemas import features

    return features.spec_from_config(cfg.data, cfg.funnel)


def test_preset_fills_roles_tasks_and_funnel_loss():
    cfg = config_lib.from_dict({})
    assert cfg.data.labels == {"ctr": "click", "cvr": "conversion"}
    assert cfg.tasks == ("ctr", "cvr") and cfg.loss.name == "esmm" and cfg.funnel
    assert [f.name for f in cfg.data.features.sparse][:2] == ["user_id", "item_id"]
    assert cfg.data.features.user == "user_id"


def test_generic_csv_defaults_to_independent_tasks():
    cfg = config_lib.from_dict(CENSUS)
    assert cfg.tasks == ("income", "married") and cfg.loss.name == "bce" and not cfg.funnel
    sparse = cfg.data.features.sparse
    assert sparse[0] == config_lib.SparseFeature("education")
    assert sparse[1] == config_lib.SparseFeature("occupation", min_count=3)
    assert config_lib.from_dict(config_lib.to_dict(cfg)) == cfg


def test_funnel_labels_default_to_esmm_and_three_tasks_are_allowed():
    funnel = {**CENSUS, "data": {**CENSUS["data"], "labels": {"ctr": "click", "cvr": "buy"}}}
    assert config_lib.from_dict(funnel).loss.name == "esmm"
    three = {**CENSUS, "data": {**CENSUS["data"],
                                "labels": {"a": "x", "b": "y", "c": "z"}}}
    cfg = config_lib.from_dict(three)
    assert cfg.tasks == ("a", "b", "c") and cfg.loss.name == "bce"


@pytest.mark.parametrize("raw, message", [
    ({"trian": {}}, r"unknown section\(s\) \['trian'\]"),
    ({"train": {"epoch": 2}}, r"train: unknown key\(s\) \['epoch'\]"),
    ({"train": {"epochs": "two"}}, r"train.epochs: expected an integer, got 'two'"),
    ({"train": {"epochs": True}}, r"train.epochs: expected an integer, got True"),
    ({"train": {"epochs": 0}}, r"`train.epochs` must be a positive integer, received: "
                               r"train.epochs=0"),
    ({"train": {"intra_op_threads": -1}}, r"`train.intra_op_threads` must be an integer >= 0"
                                          r", received: train.intra_op_threads=-1"),
    ({"train": {"seed": -1}}, r"`train.seed` must be an integer in \[0, 4294967295\], "
                              r"received: train.seed=-1"),
    ({"train": {"seed": 2 ** 32}}, r"`train.seed` must be an integer in \[0, 4294967295\]"),
    ({"data": {"seed": -3}}, r"`data.seed` must be an integer in \[0, 4294967295\]"),
    ({"train": {"learning_rate": -1}}, r"`train.learning_rate` must be a positive number, "
                                       r"received: train.learning_rate=-1"),
    ({"train": {"learning_rate": "fast"}}, r"train.learning_rate: expected a number, got "
                                           r"'fast'"),
    ({"data": {"adapter": "criteo"}}, r"`data.adapter` must be one of \['csv', 'parquet', "
                                      r"'synthetic', 'ali_ccp'\], received: "
                                      r"data.adapter='criteo'"),
    ({"data": {"adapter": "ali_ccp"}}, r"data.path is required for adapter 'ali_ccp'"),
    ({"data": {"skip_bad_rows": "yes"}}, r"data.skip_bad_rows: expected true or false, got "
                                         r"'yes'"),
    ({"data": {"path": 123}}, r"data.path: expected a string, got 123"),
    ({"data": []}, r"data: expected a mapping, got \[\]"),
    ({"model": {"backbone_args": "oops"}}, r"model.backbone_args: expected a mapping, got "
                                           r"'oops'"),
    ({"model": {"tower_units": "wide"}}, r"model.tower_units: expected a list, got 'wide'"),
    ({"model": {"tower_dropout": 1.5}}, r"`model.tower_dropout` must be a float in \[0, 1\)"),
    ({"model": {"embedding_dim": 0}}, r"`model.embedding_dim` must be a positive integer"),
    ({"model": {"tasks": ["cvr"]}}, r"model.tasks: loss 'esmm' needs one of"),
    ({"model": {"tasks": ["ctr", "ctr"]}}, r"model.tasks: duplicate task names"),
    ({"loss": {"weights": [1, 2]}}, r"loss.weights: expected a mapping, got \[1, 2\]"),
    ({"loss": {"weights": {"ctr": -1}}}, r"`loss.weights.ctr` must be a finite number >= 0, "
                                         r"received: loss.weights.ctr=-1"),
    ({"loss": {"name": "focal"}}, r"loss.name: expected one of \['adaftr', 'bce', "),
    ({"eval": {"min_auc": True}}, r"eval.min_auc: expected a number, got True"),
    ({"eval": {"head": "income"}}, r"eval.head: expected one of the model's heads "
                                   r"\('ctr', 'cvr', 'ctcvr'\), got 'income'"),
    ({"eval": {"slices": ["nope"]}}, r"`eval.slices\[0\]` must be one of \['user_id'"),
    ({"name": "../../x"}, r"name: expected a file name of letters, digits"),
    ({"name": "a/b"}, r"name: expected a file name"),
    ({"data": {"features": {"dense": ["x"]}}}, r"data.features: the 'synthetic' preset "
                                               r"defines the columns"),
    ({"adm": {"enabled": True, "thresholds": [1, 2]}}, r"adm.thresholds: expected 1 value or "
                                                       r"one per action \(5\)"),
])
def test_invalid_values_are_named(raw, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.from_dict(raw)


def test_null_is_accepted_where_documented_and_only_there():
    cfg = config_lib.from_dict({"eval": {"max_auc_drop": None}, "model": {"tasks": None},
                                "loss": {"name": None}, "data": {"path": None}})
    assert cfg.eval.max_auc_drop is None and cfg.tasks == ("ctr", "cvr")
    with pytest.raises(config_lib.ConfigError,
                       match=r"train.epochs: expected an integer \(null is not allowed here\)"):
        config_lib.from_dict({"train": {"epochs": None}})
    # A section given as null (`train:` with nothing under it in YAML) takes its defaults.
    empty = config_lib.from_dict({"train": None, "eval": None})
    assert empty.train == config_lib.from_dict({}).train
    assert empty.eval == config_lib.from_dict({}).eval


@pytest.mark.parametrize("change, message", [
    ({"labels": {"income": "income_50k"}, "features": {"sparse": ["income_50k"]}},
     r"data.labels.income: column 'income_50k' already has the role "
     r"data.features.sparse\[0\]"),
    ({"labels": {}}, r"data.labels: expected at least one task"),
    ({"labels": {"Income": "x"}}, r"data.labels: task names are lowercase identifiers"),
    ({"labels": {"ctcvr": "x"}}, r"data.labels: task names are lowercase identifiers other "
                                 r"than \['actions', 'adm_mask', 'adm_original', 'ctcvr'"),
    ({"features": {"sparse": [{"name": "a", "dtype": "float"}]}},
     r"`data.features.sparse\[0\].dtype` must be one of \['auto', 'int', 'string'\]"),
    ({"features": {"sparse": [{"name": "a", "min_count": 0}]}},
     r"`data.features.sparse\[0\].min_count` must be a positive integer"),
    ({"features": {"sparse": [{"name": "a", "colour": 1}]}},
     r"data.features.sparse\[0\]: unknown key\(s\) \['colour'\]"),
    ({"features": {}}, r"data.features: expected at least one sparse or dense column"),
    ({"path": None}, r"data.path is required for adapter 'csv'"),
])
def test_role_errors(change, message):
    raw = json.loads(json.dumps(CENSUS))
    raw["data"].update(change)
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.from_dict(raw)


@pytest.mark.parametrize("extra, message", [
    ({"loss": {"name": "esmm"}}, r"loss.name 'esmm' is a click -> conversion funnel recipe: it "
                                 r"needs data.labels with tasks 'ctr' \(click\) and 'cvr'"),
    ({"loss": {"name": "pwiser"}}, r"loss.name 'pwiser' is a click -> conversion funnel"),
    ({"model": {"tasks": ["income", "spouse"]}}, r"model.tasks: \['spouse'\] have no label "
                                                 r"column; data.labels defines"),
    ({"model": {"tasks": ["income", "ctcvr"]}}, r"model.tasks: \['ctcvr'\] are funnel heads"),
    ({"data": {"features": {"sparse": ["education"]}}, "adm": {"enabled": True}},
     r"adm.enabled needs data.features.action_labels"),
])
def test_tasks_labels_and_recipe_must_agree(extra, message):
    raw = json.loads(json.dumps(CENSUS))
    for section, values in extra.items():
        if section == "data":
            raw["data"].update(values)
        else:
            raw[section] = values
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.from_dict(raw)


def test_overrides_apply_by_dotted_key(tmp_path):
    cfg = config_lib.load("configs/synthetic_mmoe.yaml",
                          {"train.epochs": 5, "data.path": str(tmp_path)})
    assert cfg.train.epochs == 5 and cfg.data.path == str(tmp_path)


def test_set_parses_yaml_values_and_reaches_nested_keys(tmp_path):
    sets = config_lib.parse_set(["train.epochs=3", "model.tower_units=[16, 8]",
                                 "eval.max_auc_drop=null", "name='007'"])
    assert sets == {"train.epochs": 3, "model.tower_units": [16, 8],
                    "eval.max_auc_drop": None, "name": "007"}
    path = tmp_path / "census.yaml"
    path.write_text(json.dumps(CENSUS))
    cfg = config_lib.load(str(path), config_lib.parse_set(
        ["data.features.dense=[age, hours]", "loss.weights={income: 2.0}"]))
    assert cfg.data.features.dense == ("age", "hours")
    assert cfg.loss.weights == {"income": 2.0}
    for bad, message in [("train.epochs", r"--set: expected section.key=value"),
                         ("=3", r"--set: expected section.key=value"),
                         ("model.tower_units=[1,", r"--set model.tower_units: the value is not "
                                                   r"valid YAML")]:
        with pytest.raises(config_lib.ConfigError, match=message):
            config_lib.parse_set([bad])
    with pytest.raises(config_lib.ConfigError, match=r"--set name.x: name is not a mapping"):
        config_lib.load(str(path), {"name.x": 1})


def test_relative_data_path_in_a_file_is_relative_to_the_file(tmp_path):
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "c.yaml").write_text(json.dumps({**CENSUS, "data": {**CENSUS["data"],
                                                                  "path": "data/x.csv"}}))
    cfg = config_lib.load(str(folder / "c.yaml"))
    assert os.path.abspath(cfg.data.path) == str(folder / "data" / "x.csv")
    shipped = config_lib.load("configs/ali_ccp_mmoe.yaml")
    assert os.path.abspath(shipped.data.path) == os.path.abspath(
        os.path.join(ROOT, "..", "shared", "data", "ali_ccp_sample"))


def test_shipped_configs_are_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("mmoe", "mmoe.yaml", "configs/ali_ccp_mmoe.yaml"):
        config_lib.load(name)
    with pytest.raises(config_lib.ConfigError, match=r"config file not found: nope.yaml \(also "
                                                     r"looked for a shipped config"):
        config_lib.load("nope.yaml")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="config file not found: .*nope.yaml"):
        config_lib.load(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(config_lib.ConfigError, match="bad.yaml: not valid YAML") as err:
        config_lib.load(str(bad))
    assert "\n" not in str(err.value)  # one line on stderr, PyYAML's caret lines joined
    with pytest.raises(config_lib.ConfigError, match=r"--set model.tower_units: the value is "
                                                     r"not valid YAML") as err:
        config_lib.parse_set(["model.tower_units=[64,"])
    assert "\n" not in str(err.value)
    for text in ("", "# only a comment\n"):
        empty = tmp_path / "empty.yaml"
        empty.write_text(text)
        with pytest.raises(config_lib.ConfigError, match=r"empty.yaml: the config file is empty; "
                                                         r"expected a mapping of sections "
                                                         r"\(write \{\} for every default\)"):
            config_lib.load(str(empty))
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(config_lib.ConfigError, match="list.yaml: expected a mapping at top level"):
        config_lib.load(str(listed))


def test_a_long_value_is_cut_in_the_message():
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.from_dict({"train": {"epochs": "x" * 10_000}})
    assert len(str(info.value)) < 200 and "(10002 chars)" in str(info.value)


def test_every_shipped_config_parses():
    paths = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
    assert any(p.endswith("ali_ccp_mmoe.yaml") for p in paths)
    assert any(p.endswith("aliexpress_mmoe.yaml") for p in paths)
    for path in paths:
        config_lib.load(path)
