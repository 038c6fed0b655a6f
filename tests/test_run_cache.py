"""funnelrank.commands.run_cache: finished bench runs read back, never trained twice."""
import json

import pytest
import yaml

from funnelrank.commands import bench, run_cache


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_data_hash_not_path_and_code_decide_the_key(tmp_path):
    a = _write(tmp_path / "a" / "impressions.csv", "x,y\n1,2\n")
    b = _write(tmp_path / "b" / "impressions.csv", "x,y\n1,2\n")  # same bytes elsewhere
    c = _write(tmp_path / "c" / "impressions.csv", "x,y\n1,3\n")
    cache = run_cache.RunCache(str(tmp_path / "cache"), code="v1")
    cfg = {"data": {"path": a}, "train": {"seed": 1}}
    m_a = cache.material(cfg)
    assert m_a["config"]["data"]["path"].startswith("sha256:") and cfg["data"]["path"] == a
    assert cache.material({**cfg, "data": {"path": b}}) == m_a
    assert cache.material({**cfg, "data": {"path": c}}) != m_a
    assert cache.material({**cfg, "train": {"seed": 2}}) != m_a
    assert cache.material(cfg, baseline={"name": "logistic"}) != m_a
    cache.put(m_a, {"heads": {"ctr": {"auc": 0.7}}})
    assert cache.get(cache.material({**cfg, "data": {"path": b}})) == {
        "heads": {"ctr": {"auc": 0.7}}}
    assert run_cache.RunCache(str(tmp_path / "cache"), code="v2").get(
        run_cache.RunCache(str(tmp_path / "cache"), code="v2").material(cfg)) is None
    assert not list((tmp_path / "cache").glob("*.tmp"))  # written, then renamed


def test_an_entry_whose_material_differs_is_not_read_back(tmp_path):
    cache = run_cache.RunCache(str(tmp_path), code="v1")
    material = cache.material({"train": {"seed": 1}})
    path = cache.put(material, {"heads": {}})
    stored = json.loads(open(path).read())
    stored["material"]["code"] = "edited"
    open(path, "w").write(json.dumps(stored))
    assert cache.get(material) is None


def test_code_fingerprint_follows_the_packages_python_files(tmp_path):
    root = tmp_path / "proj"
    _write(root / "trainer" / "a.py", "x = 1\n")
    _write(root / "docs" / "x.md", "text\n")
    first = run_cache.code_fingerprint(str(root))
    _write(root / "docs" / "x.md", "other text\n")  # not code
    _write(root / "trainer" / "__pycache__" / "a.cpython-310.pyc", "junk")
    assert run_cache.code_fingerprint(str(root)) == first
    _write(root / "trainer" / "a.py", "x = 2\n")
    assert run_cache.code_fingerprint(str(root)) != first
    assert len(run_cache.code_fingerprint()) == 64  # this checkout


def test_data_fingerprint_refuses_missing_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="data .*nope.csv' does not exist"):
        run_cache.data_fingerprint(str(tmp_path / "nope.csv"))


def _grid(tmp_path, name, labels, data):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "rows": 10, "seeds": [1, 2], "data": data, "metrics": ["ctr.auc"],
        "runs": [{"label": label, "config": "configs/mmoe.yaml",
                  "overrides": {"model.backbone_args": {"num_experts": n}}}
                 for label, n in labels]}))
    return bench.load_grid(str(path))


def test_a_killed_grid_resumes_and_grids_share_runs(tmp_path, monkeypatch):
    data = _write(tmp_path / "data" / "impressions.csv", "rows\n")
    trained = []

    def fake_train(run, cfg, seed, work_dir):
        trained.append((run["label"], seed))
        if len(trained) == 3 and fail["now"]:
            raise KeyboardInterrupt("killed")
        experts = cfg.model.backbone_args["num_experts"]
        return {"heads": {"ctr": {"auc": 0.5 + experts / 100 + seed / 1000}}}

    fail = {"now": True}
    monkeypatch.setattr(bench, "_train_one", fake_train)
    cache = run_cache.RunCache(str(tmp_path / "cache"), code="v1")
    grid = _grid(tmp_path, "first", [("two", 2), ("three", 3)], data)
    with pytest.raises(KeyboardInterrupt):
        bench.run_grid(grid, str(tmp_path / "out"), str(tmp_path / "w"), cache=cache)
    assert trained == [("two", 1), ("two", 2), ("three", 1)]
    fail["now"] = False
    trained.clear()
    results = bench.run_grid(grid, str(tmp_path / "out"), str(tmp_path / "w"), cache=cache)
    assert trained == [("three", 1), ("three", 2)]  # the two finished runs read back
    assert results["runs"][0]["metrics"]["ctr.auc"]["values"] == [0.521, 0.522]
    assert results["runs"][1]["metrics"]["ctr.auc"]["values"] == [0.531, 0.532]
    # Another grid with one of those runs under another label and work dir trains only its
    # new run; without the cache everything trains.
    trained.clear()
    other = _grid(tmp_path, "second", [("3 experts", 3), ("four", 4)], data)
    results = bench.run_grid(other, str(tmp_path / "out2"), str(tmp_path / "w2"), cache=cache)
    assert trained == [("four", 1), ("four", 2)]
    assert results["runs"][0]["metrics"]["ctr.auc"]["values"] == [0.531, 0.532]
    trained.clear()
    bench.run_grid(other, str(tmp_path / "out3"), str(tmp_path / "w3"))
    assert len(trained) == 4


def test_cli_caches_in_work_bench_cache_unless_told_not_to(monkeypatch, tmp_path):
    from funnelrank import cli

    seen = []
    monkeypatch.setattr(bench, "run_grid", lambda grid, out, cache=None: seen.append(cache))
    monkeypatch.setattr(run_cache, "code_fingerprint", lambda: "v1")
    args = ["bench", "--grid", "benchmarks/grids/baselines.yaml", "--out", str(tmp_path)]
    assert cli.main(args) == 0
    assert seen[-1].cache_dir == "work/bench/cache" and seen[-1].code == "v1"
    assert cli.main(args + ["--cache-dir", str(tmp_path / "c")]) == 0
    assert seen[-1].cache_dir == str(tmp_path / "c")
    assert cli.main(args + ["--no-cache"]) == 0
    assert seen[-1] is None
