"""Every shipped backbone config builds, trains a few steps and yields the right heads."""
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from schemas import config as config_lib
from tests import fixtures
from trainer.data import from_arrays, predict
from trainer.model import BACKBONES
from trainer.session import SplitData, TrainingSession

CONFIGS = sorted(p for p in glob.glob("configs/*.yaml") if "ali_ccp" not in p)


def test_every_backbone_has_a_config():
    shipped = {config_lib.load(p).model.backbone for p in CONFIGS}
    assert shipped == set(BACKBONES)
    for name in BACKBONES:
        assert os.path.exists(f"configs/{name}.yaml"), name


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_config_trains_and_predicts_its_heads(path):
    cfg = config_lib.load(path, {"train.batch_size": 200, "train.epochs": 1, "meta.steps": 2,
                                 "meta.support_size": 8, "meta.query_size": 8,
                                 "meta.partition_key": "user_segment"})
    if cfg.adm.enabled:  # per-action heads: a synthetic log with its ADM columns
        spec, _, arrays, info = fixtures.adm_arrays(600)
    else:
        _, arrays, info = fixtures.tiny_arrays(600)
        spec = fixtures.TINY_SPEC
        cfg = config_lib.load(path, {"train.batch_size": 200, "train.epochs": 1,
                                     "meta.steps": 2, "meta.support_size": 8,
                                     "meta.query_size": 8, "meta.partition_key": "item"})
    # TrainingSession.fit, as both training paths run it: the shipped configs fit their
    # wide part's logistic regression on the train rows first (model.wide_init).
    session = TrainingSession(cfg, spec, info, tf.distribute.OneDeviceStrategy("/cpu:0"))
    model, _ = session.fit(SplitData(arrays=arrays), SplitData(arrays=arrays))
    assert np.isfinite(model.history.history["loss"]).all()
    assert (session.wide_init_report is not None) == (cfg.model.wide_init is not None)
    outputs, _ = predict(model.network, from_arrays(arrays, info.input_names, spec, 600))
    if cfg.adm.enabled:
        expected = {"ctr"} | {f"cvr_{j}" for j in range(info.num_actions)}
    else:
        expected = {"ctr"} if cfg.model.tasks == ("ctr",) else {"ctr", "cvr", "ctcvr"}
    assert set(outputs) == expected
    for head, p in outputs.items():
        assert p.shape == (600,) and np.all((p >= 0) & (p <= 1)), head
    if "ctcvr" in outputs:
        assert np.all(outputs["ctcvr"] <= outputs["ctr"] + 1e-6)
