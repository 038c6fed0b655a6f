"""ADM counts and masks (transform/adm.py): NumPy, the per-task pass and the Beam job against a
pure-Python double loop, including window edges, same-second rows and samples without history."""
import numpy as np
import pandas as pd
import pytest

from tests import fixtures
from transform import adm
from transform.ingest import synthetic

T = 100
ACTIONS = ("a0", "a1", "a2")


def _params(thresholds=(1, 2, 1), window=T):
    return adm.AdmParams(window_seconds=window, thresholds=tuple(thresholds), task_key="task",
                         timestamp_key="ts", target_key="target", action_keys=ACTIONS)


def _edge_rows():
    """One ad task with conversions placed exactly on the window edges."""
    rows = [
        {"task": 7, "ts": 1000, "target": 0, "a0": 1, "a1": 1, "a2": 0},  # no history
        {"task": 7, "ts": 1000, "target": 1, "a0": 1, "a1": 0, "a2": 0},  # same second: 0
        {"task": 7, "ts": 1099, "target": 2, "a0": 0, "a1": 1, "a2": 0},  # sees both at 1000
        {"task": 7, "ts": 1100, "target": 0, "a0": 0, "a1": 0, "a2": 1},  # 1000 = t - T: in
        {"task": 7, "ts": 1101, "target": 0, "a0": 0, "a1": 0, "a2": 0},  # 1000 < t-T: out
        {"task": 8, "ts": 1101, "target": 2, "a0": 0, "a1": 0, "a2": 0},  # other task: none
    ]
    return rows


def _random_rows(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return [{"task": int(rng.integers(0, 6)), "ts": int(rng.integers(0, 600)),
             "target": int(rng.integers(0, 3)),
             **{a: int(rng.random() < p) for a, p in zip(ACTIONS, (0.3, 0.15, 0.05))}}
            for _ in range(n)]


def _annotate_all(rows, params):
    by_task = {}
    for i, row in enumerate(rows):
        by_task.setdefault(row["task"], []).append({**row, "_i": i})
    out = {}
    for task_rows in by_task.values():
        for row in adm.annotate_task(task_rows, params):
            out[row["_i"]] = row
    return [out[i] for i in range(len(rows))]


def _numpy_rows(rows, params):
    frame = pd.DataFrame(rows)
    cols = adm.numpy_adm({k: frame[k].to_numpy() for k in frame.columns}, params)
    return [{k: int(v[i]) for k, v in cols.items()} for i in range(len(rows))]


def test_reference_on_window_edges():
    ref = adm.reference(_edge_rows(), _params())
    counts = [[r[f"adm_count_{j}"] for j in range(3)] for r in ref]
    # 1099 and 1100 see both rows at 1000 (1000 = 1100 - T is inside), 1101 does not.
    assert counts == [[0, 0, 0], [0, 0, 0], [2, 1, 0], [2, 2, 0], [0, 1, 1], [0, 0, 0]]
    masks = [[r[f"adm_mask_{j}"] for j in range(3)] for r in ref]
    # target always; a0 with >= 1 conversion, a1 with >= 2, a2 with >= 1.
    assert masks == [[1, 0, 0], [0, 1, 0], [1, 0, 1], [1, 1, 0], [1, 0, 1], [0, 0, 1]]
    assert [[r[f"adm_original_{j}"] for j in range(3)] for r in ref] == [
        [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [1, 0, 0], [0, 0, 1]]


@pytest.mark.parametrize("rows", [_edge_rows(), _random_rows(), _random_rows(seed=1)],
                         ids=["edges", "random0", "random1"])
def test_numpy_and_per_task_pass_equal_the_reference(rows):
    params = _params()
    ref = adm.reference(rows, params)
    assert _numpy_rows(rows, params) == ref
    annotated = _annotate_all(rows, params)
    assert [{k: r[k] for k in ref[0]} for r in annotated] == ref


def test_numpy_matches_on_the_synthetic_log():
    log = synthetic.generate(2500, seed=3)
    spec = fixtures.synthetic_spec()
    params = adm.AdmParams.for_spec(spec, 2 * 86_400, [1, 2, 1, 1, 3])
    rows = log[list(spec.columns)].to_dict("records")
    assert _numpy_rows(rows, params) == adm.reference(rows, params)


def test_add_to_frames_takes_history_from_every_split():
    rows = _edge_rows()
    frames = {"train": pd.DataFrame(rows[::2]), "eval": pd.DataFrame(rows[1::2])}
    out = adm.add_to_frames(frames, _params())
    ref = adm.reference(rows, _params())
    for split, start in (("train", 0), ("eval", 1)):
        got = out[split].to_dict("records")
        assert len(got) == 3
        for row, want in zip(got, ref[start::2]):
            assert {k: row[k] for k in want} == want


@pytest.mark.parametrize("kwargs, message", [
    ({"window_seconds": 0}, r"window_seconds=0"),
    ({"thresholds": (1, 1)}, r"one integer threshold >= 1 per action \(3\), received: "
                             r"thresholds=\[1, 1\]"),
    ({"thresholds": (1, 0, 1)}, r"thresholds=\[1, 0, 1\]")])
def test_bad_params_are_named(kwargs, message):
    base = {"window_seconds": T, "thresholds": (1, 1, 1), "action_keys": ACTIONS}
    with pytest.raises(ValueError, match=message):
        adm.AdmParams(**{**base, **kwargs})


def test_params_round_trip_through_json_dict():
    params = adm.AdmParams.for_spec(fixtures.synthetic_spec(), 3600, 2)
    assert params.thresholds == (2, 2, 2, 2, 2)
    assert adm.AdmParams.from_dict(params.to_dict()) == params


def _run_beam(rows, params, beam_args):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    from pipeline.common import beam_pipeline_args

    want = [tuple(sorted({**row, **extra}.items()))
            for row, extra in zip(rows, adm.reference(rows, params))]
    # With the image option the pipeline's runs add (the DirectRunner, both modes, ignores it).
    args = beam_pipeline_args(beam_args, image="gcr.io/funnelrank/funnelrank:0.1.0")
    assert any(a.startswith("--sdk_container_image=") for a in args)
    with beam.Pipeline(options=PipelineOptions(args)) as p:
        got = (p | beam.Create(rows) | adm.ComputeAdm(params)
               | beam.Map(lambda r: tuple(sorted(r.items()))))
        assert_that(got, equal_to(want))


def test_beam_job_equals_the_reference_in_memory():
    _run_beam(_random_rows(300, seed=4) + _edge_rows(), _params(),
              ["--direct_running_mode=in_memory", "--direct_num_workers=1"])


@pytest.mark.slow
def test_beam_job_equals_the_reference_multi_process():
    _run_beam(_random_rows(300, seed=5), _params(),
              ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
