"""``model.wide_init: logistic``: the network starts as the logistic regression baseline.

On data nobody here tuned it to, a regularised one-hot logistic regression (LR) often beats a
freshly initialised multi-task network (issue 16): its per-id weights are fitted to
convergence with an L2 prior chosen on validation, while the network's wide and embedding
rows of rare ids get few, noisy updates before early stopping ends training. Starting the
network *at* the LR removes that handicap, in the spirit of Wide & Deep (Cheng et al.,
DLRS'16, eq. 1: the wide part is a linear model over the one-hot ids and their crosses; here
it is first fitted alone) and of boosting from a base margin:

* the LR of ``trainer.baselines`` is fitted per task on the train split (``C`` chosen on the
  validation LogLoss) on exactly the ids, crosses and z-scored dense features the wide part
  reads (the same preprocessor output);
* its coefficients go into the wide tables (``W_f[id, t]`` = the coefficient of the one-hot
  column of ``id``; a cross's coefficient into the cross table's row; dense coefficients into
  ``wide/dense``), its intercept into the bias of ``<task>/logit`` and that layer's kernel is
  set to 0, so the untrained network's logit is exactly the LR's
  (``w^T x + b``, float32 rounding aside) and the tower's gradient starts to flow after the
  first step moves the kernel;
* training then fits what the LR cannot express (early stopping on validation as always).

Funnel tasks map as the baselines define them: ``ctr`` on every row, ``cvr`` on the clicked
rows, so the start's ``ctcvr = p_ctr * p_cvr`` is the LR's ctcvr.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, Mapping, Sequence

import numpy as np
import tensorflow as tf

from schemas import features
from schemas.config import ConfigError, ExperimentConfig
from trainer import baselines
from trainer.layers.wide import WideLogits, cross_name

log = logging.getLogger(__name__)


def fit_logistic(cfg: ExperimentConfig, spec: features.DatasetSpec,
                 vocab_sizes: Mapping[str, int], train: Mapping[str, np.ndarray],
                 validation: Mapping[str, np.ndarray]) -> baselines.FittedBaseline:
    """The LR the network starts from (module docstring), fitted on ``train``, ``C`` chosen
    on ``validation`` (transformed arrays, ``<key>_xf``)."""
    args = baselines.LogisticArgs(C=tuple(cfg.model.wide_init_C),
                                  crosses=tuple(tuple(p) for p in cfg.model.wide_crosses))
    t0 = time.perf_counter()
    fitted = baselines.fit(baselines.Baseline(baselines.LOGISTIC, args), spec, vocab_sizes,
                           cfg.tasks, cfg.funnel, train, validation, seed=cfg.train.seed)
    log.info("model.wide_init: logistic regression fitted in %.1fs; C chosen on validation: "
             "%s", time.perf_counter() - t0,
             {t: c["C"] for t, c in fitted.chosen.items()})
    return fitted


def sample_rows(arrays: Mapping[str, np.ndarray], max_rows: int, seed: int
                ) -> Mapping[str, np.ndarray]:
    """``arrays`` itself when it has at most ``max_rows`` rows, else ``max_rows`` of its rows
    drawn without replacement (seeded; kept in their order)."""
    rows = len(next(iter(arrays.values())))
    if rows <= max_rows:
        return arrays
    keep = np.sort(np.random.default_rng(seed).choice(rows, size=max_rows, replace=False))
    log.info("model.wide_init: the regression is fitted on %d of the %d train rows "
             "(model.wide_init_max_rows)", max_rows, rows)
    return {k: v[keep] for k, v in arrays.items()}


def wide_weights(fitted: baselines.FittedBaseline, wide: WideLogits
                 ) -> Dict[str, Any]:
    """The wide layer's weights and each task's logit bias from a fitted LR.

    Returns:
      ``{"tables": {table name: [rows, T]}, "dense": [D, T] or None,
      "bias": {task: float}}`` with table names as the wide layer's (``<feature>_xf``,
      ``<a>_xf_x_<b>_xf``).

    Raises:
      ConfigError: A wide task without an LR model, or the LR's features or crosses not the
        wide part's.
    """
    design = fitted.design
    sparse = {features.transformed_name(k): v for k, v in design.vocab_sizes.items()}
    dense = [features.transformed_name(k) for k in design.dense_keys]
    crosses = [tuple(features.transformed_name(k) for k in p) for p in design.crosses]
    if (sparse != dict(wide.sparse_vocab_sizes) or dense != list(wide.dense_keys)
            or crosses != list(wide.crosses)):
        raise ConfigError(f"model.wide_init: the regression's features (sparse {sparse}, dense "
                          f"{dense}, crosses {crosses}) are not the wide part's (sparse "
                          f"{dict(wide.sparse_vocab_sizes)}, dense {list(wide.dense_keys)}, "
                          f"crosses {list(wide.crosses)})")
    missing = [t for t in wide.tasks if t not in fitted.models]
    if missing:
        raise ConfigError(f"model.wide_init: no regression for task(s) {missing}; fitted "
                          f"{sorted(fitted.models)}")
    width = len(wide.tasks)
    tables = {name: np.zeros((size, width), np.float32) for name, size in sparse.items()}
    cross_tables = {cross_name(p): np.zeros((wide.cross_rows(p), width), np.float32)
                    for p in crosses}
    dense_kernel = np.zeros((len(dense), width), np.float32) if dense else None
    bias = {}
    for t, task in enumerate(wide.tasks):
        model = fitted.models[task]
        coef = np.asarray(model.coef_, np.float64).reshape(-1)
        offset = 0
        for name, size in sparse.items():
            tables[name][:, t] = coef[offset:offset + size]
            offset += size
        if dense:
            dense_kernel[:, t] = coef[offset:offset + len(dense)]
            offset += len(dense)
        for pair, seen in zip(crosses, design.cross_values):
            weights = coef[offset:offset + len(seen)]
            offset += len(seen)
            rows = _cross_rows(wide, pair, seen)
            np.add.at(cross_tables[cross_name(pair)][:, t], rows, weights)  # hashed: summed
        bias[task] = float(np.asarray(model.intercept_).reshape(-1)[0])
    return {"tables": {**tables, **cross_tables}, "dense": dense_kernel, "bias": bias}


def _cross_rows(wide: WideLogits, pair: Sequence[str], codes: np.ndarray) -> np.ndarray:
    """Rows of the joint codes ``id_a * size_b + id_b`` in the cross's table (the layer's
    own hashing when the table is hashed)."""
    a, b = pair
    size_b = wide.sparse_vocab_sizes[b]
    ids = {a: codes // size_b, b: codes % size_b}
    return wide.cross_ids(ids, pair).numpy()


def apply(network: tf.keras.Model, fitted: baselines.FittedBaseline,
          frozen: bool = False) -> Dict[str, Any]:
    """Sets ``network``'s wide layer, and each task's ``<task>/logit`` (bias = intercept,
    kernel = 0), from ``fitted`` (call under the strategy's scope, before compile).

    Returns:
      What was set, for metrics.json: the chosen ``C`` and validation LogLoss per task.

    Raises:
      ConfigError: The network has no wide layer.
    """
    try:
        wide = network.get_layer("wide")
    except ValueError:
        raise ConfigError("model.wide_init needs the network's wide part (model.wide: true)"
                          ) from None
    weights = wide_weights(fitted, wide)
    for name, table in wide.tables.items():
        table.embeddings.assign(weights["tables"][name])
    for name, table in wide.cross_tables.items():
        table.embeddings.assign(weights["tables"][name])
    if wide.dense is not None:
        wide.dense.kernel.assign(weights["dense"])
    for task, intercept in weights["bias"].items():
        logit = network.get_layer(f"{task}/logit")
        logit.kernel.assign(tf.zeros_like(logit.kernel))
        logit.bias.assign(tf.fill(tf.shape(logit.bias), intercept))
    if frozen:
        wide.trainable = False
    return {"model": "logistic", "frozen": frozen,
            "tasks": {t: {"C": c["C"], "validation_logloss": c["validation_logloss"][repr(c["C"])]}
                      for t, c in fitted.chosen.items()}}
