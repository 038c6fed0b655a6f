"""benchmarks/gpu_check.sh runs on a machine without a GPU too (so it cannot rot): the same
steps on the CPU, with few rows, writing its summary."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_gpu_check_script_writes_devices_trainings_and_a_summary(tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "GPU_CHECK_ROWS": "2000", "GPU_CHECK_TESTS": "0",
           "GPU_CHECK_SETTINGS": "mirrored_mp16", "PY": sys.executable}
    proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "FAILED" not in proc.stdout, proc.stdout
    devices = json.loads((out / "devices.json").read_text())
    assert devices["tensorflow"].startswith("2.") and isinstance(devices["gpus"], list)
    summary = json.loads((out / "summary.json").read_text())["runs"]
    assert [r["setting"] for r in summary] == ["mirrored_mp16"]
    for run in summary:
        assert run["examples_per_sec"] > 0 and set(run["auc"]) == {"ctr", "cvr", "ctcvr"}, run
        assert run["replicas"] == 1, run  # one CPU device: MirroredStrategy over it
    assert "mirrored_mp16" in proc.stdout.splitlines()[-2]  # the printed table
    mp16 = json.loads((out / "train_mirrored_mp16" / "metrics.json").read_text())
    assert mp16["config"]["train"]["mixed_precision"] is True
    assert mp16["config"]["train"]["strategy"] == "mirrored"
