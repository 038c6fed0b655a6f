"""The TFMA EvalConfig of the pipeline: every head, the post-click cvr weighted by clicks,
slices, and blessing thresholds keyed exactly like the metrics TFMA computes."""
import pytest
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_specs
from tensorflow_model_analysis.utils import config_util

from pipeline.pipeline import BASELINE, CANDIDATE, eval_config
from schemas import tasks as tasks_lib

LABELS = {"ctr": "click", "cvr": "conversion"}


def _config(**kwargs):
    heads = tasks_lib.heads(("ctr", "cvr"), True, 0)
    args = {"bless_head": "ctr", "min_auc": 0.6, "max_auc_drop": 0.01, "slices": ("device",)}
    args.update(kwargs)
    return eval_config(heads, LABELS, **args)


def test_every_head_is_scored_and_cvr_on_clicked_rows_only():
    config = _config()
    assert [list(s.output_names) for s in config.metrics_specs] == [["ctr"], ["cvr"], ["ctcvr"]]
    candidate, baseline = config.model_specs
    assert (candidate.name, baseline.name, baseline.is_baseline) == (CANDIDATE, BASELINE, True)
    # The serving signature, without TFMA loading the whole Keras model to guess the type.
    assert candidate.signature_name == baseline.signature_name == "serving_default"
    assert candidate.model_type == baseline.model_type == tfma.TF_GENERIC
    assert dict(candidate.label_keys) == {"ctr": "click", "cvr": "conversion",
                                          "ctcvr": "conversion"}
    assert dict(candidate.example_weight_keys) == {"cvr": "click"}
    assert [list(s.feature_keys) for s in config.slicing_specs] == [[], ["device"]]


@pytest.mark.parametrize("max_auc_drop", [0.01, None])
def test_thresholds_match_the_keys_of_computed_metrics(max_auc_drop):
    """TFMA fails a threshold whose key is not among the computed metrics' ("Metric not
    found"), which leaves every model unblessed."""
    # as the Evaluator sees it (model names filled in)
    config = config_util.update_eval_config_with_defaults(
        _config(max_auc_drop=max_auc_drop), has_baseline=max_auc_drop is not None)
    computed = {key for key, _, _ in metric_specs.keys_and_metrics_from_specs(
        config, config.metrics_specs)}
    thresholds = metric_specs.metric_thresholds_from_metrics_specs(config.metrics_specs,
                                                                   config)
    value_keys = [k for k in thresholds if not k.is_diff]
    assert value_keys and all(k in computed for k in value_keys), (value_keys, computed)
    assert {(k.name, k.output_name, k.model_name) for k in value_keys} == (
        {("auc", "ctr", CANDIDATE), ("auc", "ctr", BASELINE)} if max_auc_drop is not None
        else {("auc", "ctr", "")})
    diff_keys = [k for k in thresholds if k.is_diff]
    assert len(diff_keys) == (2 if max_auc_drop is not None else 0)
    assert {k.make_diff_key() for k in value_keys if k.model_name == CANDIDATE} <= set(
        diff_keys)
    for key in value_keys:
        for slice_spec, threshold in thresholds[key]:
            assert slice_spec == tfma.SlicingSpec()  # the overall slice only, not the slices
            assert threshold.lower_bound.value == 0.6
