"""MultiWorkerMirroredStrategy from TF_CONFIG: two worker processes on 127.0.0.1 train the same
model a few steps through the production fit path and end with identical weights."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    sys.path.insert(0, {root!r})
    import numpy as np
    import tensorflow as tf
    from tests import fixtures
    from trainer.data import from_arrays
    from trainer.session import fit_model
    from trainer.strategy import make_strategy

    strategy = make_strategy()
    assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), strategy
    _, arrays, info = fixtures.tiny_arrays(1024)
    cfg = fixtures.tiny_config(batch_size=64, epochs=1)
    global_batch = 64 * strategy.num_replicas_in_sync
    ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, global_batch,
                     shuffle=True, seed=1, drop_remainder=True)
    model, progress = fit_model(cfg, info, ds, None, strategy)
    out = {{"replicas": strategy.num_replicas_in_sync, "steps": progress.summary["steps"],
            "loss": float(model.history.history["loss"][-1])}}
    np.savez({out!r} + os.environ["WORKER_INDEX"] + ".npz",
             *[w.numpy() for w in model.network.weights])
    print("RESULT " + json.dumps(out))
""")


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_train_in_lockstep_and_agree(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=ROOT, out=str(tmp_path / "weights_")))
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
        env.update({"TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                             "task": {"type": "worker", "index": index}}),
                    "WORKER_INDEX": str(index), "TF_CPP_MIN_LOG_LEVEL": "2"})
        procs.append(subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
            results.append(json.loads(next(line for line in out.splitlines()
                                            if line.startswith("RESULT "))[7:]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [r["replicas"] for r in results] == [2, 2]
    assert results[0]["steps"] == results[1]["steps"] == 1024 // 128
    first, second = (np.load(tmp_path / f"weights_{i}.npz") for i in range(2))
    assert len(first.files) == len(second.files) > 0
    for key in first.files:
        np.testing.assert_allclose(first[key], second[key], atol=1e-6)
