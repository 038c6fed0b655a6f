"""Non-neural baselines on the prepared splits: one-hot logistic regression and LightGBM.

Both are trained per task on exactly the rows and ids the networks see (the preprocessor's
vocabulary ids and z-scored dense features of ``transform.preprocessor``, fitted on the train
split), and scored by ``trainer.evaluation.score_heads``, so their ``metrics.json`` means what a
network's does (exact AUC, LogLoss, GAUC per head; ``cvr`` on clicked rows).

Tasks:

* funnel (``loss.name`` a funnel recipe): ``ctr`` on every row; ``cvr`` on the clicked rows
  only (its label is conversion given click), and the ``ctcvr`` head is the product
  ``p_ctr * p_cvr`` (ESMM eq. 1's factorisation, the same derived head the networks have);
  with tasks ``[ctr, ctcvr]`` a ``ctcvr`` model on every row and ``cvr = ctcvr / ctr``
  (clipped to [0, 1]) as ``trainer.layers.heads.RatioHead`` derives it;
* independent tasks (``loss.name: bce``): one model per task on every row.

Per-action (KAML ``actions``) tasks are refused.

Models:

* ``logistic``: scikit-learn ``LogisticRegression`` (L2) on a sparse one-hot matrix: one column
  per vocabulary id of every sparse feature (OOV included), one per dense feature (its z-score),
  and one per value of each configured cross (a pair of sparse features) seen in the train
  split (a value never seen in train has no column: weight 0, as an unseen id would get under
  L2). ``C`` (the inverse L2 strength) is one value or a list: each task then keeps the value
  with the lowest LogLoss on the ``validation`` split (never the eval split).
* ``lightgbm``: ``lightgbm.train`` with the sparse ids as categorical features and the dense
  z-scores as numbers, early stopping on the task's ``validation`` rows (LogLoss).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from schemas import checks
from schemas import features
from schemas import tasks as tasks_lib
from schemas.config import ConfigError
from trainer.evaluation import score_heads

LOGISTIC, LIGHTGBM = "logistic", "lightgbm"
NAMES = (LOGISTIC, LIGHTGBM)
SOLVERS = ("liblinear", "saga", "lbfgs")


@dataclasses.dataclass(frozen=True)
class LogisticArgs:
    """Arguments of the ``logistic`` baseline.

    Attributes:
      C: Inverse L2 strength, or candidates chosen per task on the validation LogLoss.
      crosses: Pairs of sparse features whose joint value gets its own one-hot column.
      solver: scikit-learn solver: ``liblinear`` (the default: fast on sparse one-hot data),
        ``saga`` or ``lbfgs``.
      max_iter: Solver iterations.
      tol: Solver tolerance.
    """

    C: Tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    crosses: Tuple[Tuple[str, str], ...] = ()
    solver: str = "liblinear"
    max_iter: int = 500
    tol: float = 1e-4


@dataclasses.dataclass(frozen=True)
class LightGBMArgs:
    """Arguments of the ``lightgbm`` baseline (LightGBM's parameters of the same names).

    Attributes:
      learning_rate: Shrinkage per boosting round.
      num_leaves: Leaves per tree.
      min_data_in_leaf: Rows a leaf needs at least.
      max_rounds: Boosting rounds at most (early stopping picks fewer).
      early_stopping_rounds: Rounds without a better validation LogLoss before stopping.
      cat_smooth: Smoothing of the categorical split statistics.
      cat_l2: L2 on categorical splits.
      lambda_l2: L2 on leaf values.
      num_threads: Threads (the result is deterministic for a given value).
    """

    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 100
    max_rounds: int = 2000
    early_stopping_rounds: int = 50
    cat_smooth: float = 10.0
    cat_l2: float = 10.0
    lambda_l2: float = 0.0
    num_threads: int = 2


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A baseline model: ``name`` (``logistic`` or ``lightgbm``) and its arguments."""

    name: str
    args: Any

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, **dataclasses.asdict(self.args)}


def parse(value, where: str = "baseline") -> Baseline:
    """A :class:`Baseline` from a name or a mapping ``{name: ..., <argument>: ...}``.

    Raises:
      ConfigError: Unknown name or argument, or an invalid value (naming ``where.<key>``).
    """
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a baseline name {list(NAMES)} or a mapping "
                          f"with 'name', got {checks.short_repr(value)}")
    raw = dict(value)
    name = checks.check_choice(f"{where}.name", raw.pop("name", None), NAMES, error=ConfigError)
    cls = LogisticArgs if name == LOGISTIC else LightGBMArgs
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown argument(s) {unknown} of the {name} baseline; "
                          f"expected some of {sorted(fields)}")
    args = cls(**raw)
    err = ConfigError
    if name == LOGISTIC:
        c = args.C if isinstance(args.C, (list, tuple)) else [args.C]
        if not c:
            raise ConfigError(f"`{where}.C` must be a positive number or a non-empty list of "
                              f"them, received: {where}.C={checks.short_repr(args.C)}")
        c = tuple(checks.check_positive_number(f"{where}.C", x, error=err) for x in c)
        crosses = []
        if not isinstance(args.crosses, (list, tuple)):
            raise ConfigError(f"`{where}.crosses` must be a list of feature pairs, received: "
                              f"{where}.crosses={checks.short_repr(args.crosses)}")
        for i, pair in enumerate(args.crosses):
            if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                    or not all(isinstance(p, str) for p in pair) or pair[0] == pair[1]):
                raise ConfigError(f"`{where}.crosses[{i}]` must be a pair of two different "
                                  f"sparse feature names, received: {where}.crosses[{i}]="
                                  f"{checks.short_repr(pair)}")
            crosses.append(tuple(pair))
        checks.check_choice(f"{where}.solver", args.solver, SOLVERS, error=err)
        checks.check_positive_int(f"{where}.max_iter", args.max_iter, error=err)
        checks.check_positive_number(f"{where}.tol", args.tol, error=err)
        args = dataclasses.replace(args, C=c, crosses=tuple(crosses), tol=float(args.tol))
    else:
        for key in ("learning_rate",):
            checks.check_positive_number(f"{where}.{key}", getattr(args, key), error=err)
        for key in ("cat_smooth", "cat_l2", "lambda_l2"):
            checks.check_nonneg_number(f"{where}.{key}", getattr(args, key), error=err)
        for key in ("num_leaves", "min_data_in_leaf", "max_rounds", "early_stopping_rounds",
                    "num_threads"):
            checks.check_positive_int(f"{where}.{key}", getattr(args, key), error=err)
        if args.num_leaves < 2:
            raise ConfigError(f"`{where}.num_leaves` must be at least 2, received: "
                              f"{where}.num_leaves={args.num_leaves}")
    return Baseline(name, args)


# --------------------------------------------------------------------------- the matrices
@dataclasses.dataclass
class OneHot:
    """The one-hot design of the ``logistic`` baseline, fitted on the train split.

    Columns, in order: every sparse feature's ids ``0..size-1`` (ids outside go to the last,
    the OOV id, as ``trainer.layers.embedding.FeatureEmbedding`` maps them), the dense
    features, then each cross's values seen in train (sorted by ``id_a * size_b + id_b``).

    Attributes:
      vocab_sizes: Sparse feature -> ids (OOV included), in column order.
      dense_keys: Dense features, in column order.
      crosses: Pairs of sparse features.
      cross_values: Per cross, the sorted joint codes seen in train (set by :meth:`fit`).
    """

    vocab_sizes: Mapping[str, int]
    dense_keys: Sequence[str]
    crosses: Sequence[Tuple[str, str]] = ()
    cross_values: Optional[List[np.ndarray]] = None

    def ids(self, arrays: Mapping[str, np.ndarray], key: str) -> np.ndarray:
        size = self.vocab_sizes[key]
        x = np.asarray(arrays[features.transformed_name(key)]).reshape(-1).astype(np.int64)
        return np.where((x < 0) | (x >= size), size - 1, x)

    def _codes(self, arrays, pair) -> np.ndarray:
        a, b = pair
        return self.ids(arrays, a) * self.vocab_sizes[b] + self.ids(arrays, b)

    def fit(self, arrays: Mapping[str, np.ndarray]) -> "OneHot":
        self.cross_values = [np.unique(self._codes(arrays, pair)) for pair in self.crosses]
        return self

    @property
    def num_columns(self) -> int:
        return (sum(self.vocab_sizes.values()) + len(self.dense_keys)
                + sum(len(v) for v in self.cross_values or []))

    def transform(self, arrays: Mapping[str, np.ndarray]):
        """``scipy.sparse.csr_matrix`` ``[N, num_columns]`` of the rows."""
        from scipy import sparse

        if self.cross_values is None:
            raise RuntimeError("OneHot.transform before fit")
        n = len(next(iter(arrays.values())))
        rows, cols, vals = [], [], []
        offset = 0
        index = np.arange(n)
        for key, size in self.vocab_sizes.items():
            rows.append(index)
            cols.append(offset + self.ids(arrays, key))
            vals.append(np.ones(n))
            offset += size
        for key in self.dense_keys:
            rows.append(index)
            cols.append(np.full(n, offset))
            vals.append(np.asarray(arrays[features.transformed_name(key)],
                                   np.float64).reshape(-1))
            offset += 1
        for pair, seen in zip(self.crosses, self.cross_values):
            codes = self._codes(arrays, pair)
            pos = np.minimum(np.searchsorted(seen, codes), max(len(seen) - 1, 0))
            known = (seen[pos] == codes) if len(seen) else np.zeros(n, bool)
            rows.append(index[known])
            cols.append(offset + pos[known])
            vals.append(np.ones(int(known.sum())))
            offset += len(seen)
        return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows),
                                                         np.concatenate(cols))),
                                 shape=(n, offset))


def tabular(arrays: Mapping[str, np.ndarray], vocab_sizes: Mapping[str, int],
            dense_keys: Sequence[str]) -> np.ndarray:
    """``[N, sparse + dense]`` float64 matrix of the ``lightgbm`` baseline: the sparse ids
    (categorical columns ``0..len(vocab_sizes)-1``; out-of-range ids mapped to the OOV id)
    then the dense z-scores."""
    design = OneHot(vocab_sizes, dense_keys)
    cols = [design.ids(arrays, k).astype(np.float64) for k in vocab_sizes]
    cols += [np.asarray(arrays[features.transformed_name(k)], np.float64).reshape(-1)
             for k in dense_keys]
    return np.stack(cols, axis=1)


# --------------------------------------------------------------------------- tasks
@dataclasses.dataclass(frozen=True)
class TaskRows:
    """One model to train: its name, label task(s) and the task whose label selects rows."""

    name: str
    label_tasks: Tuple[str, ...]
    row_task: Optional[str] = None


def task_rows(tasks: Sequence[str], funnel: bool,
              label_keys: Mapping[str, str]) -> List[TaskRows]:
    """The per-task models of the module docstring.

    Raises:
      ConfigError: Per-action tasks, or a task without a label column.
    """
    tasks = tuple(tasks)
    if tasks_lib.ACTIONS in tasks:
        raise ConfigError("baselines: model.tasks [ctr, actions] (KAML's per-action heads) "
                          "has no baseline; use tasks [ctr, cvr]")
    out = []
    for task in tasks:
        if funnel and task == tasks_lib.CVR:
            out.append(TaskRows(task, (tasks_lib.CVR,), tasks_lib.CTR))
        elif funnel and task == tasks_lib.CTCVR:
            out.append(TaskRows(task, (tasks_lib.CTR, tasks_lib.CVR)))
        elif task in label_keys:
            out.append(TaskRows(task, (task,)))
        else:
            raise ConfigError(f"baselines: task {task!r} has no label column in data.labels "
                              f"{dict(label_keys)}")
    return out


def labels_of(arrays: Mapping[str, np.ndarray], spec: features.DatasetSpec
              ) -> Dict[str, np.ndarray]:
    """``{task: [N]}`` (and ``user``) as ``trainer.data.features_and_labels`` gives them."""
    out = {task: np.asarray(arrays[features.transformed_name(col)], np.float64).reshape(-1)
           for task, col in spec.label_keys.items()}
    if spec.user_key is not None:
        out["user"] = np.asarray(arrays[features.transformed_name(spec.user_key)]).reshape(-1)
    return out


def _select(labels: Mapping[str, np.ndarray], task: TaskRows):
    y = np.prod([labels[t] for t in task.label_tasks], axis=0)
    rows = np.ones(len(y), bool) if task.row_task is None else labels[task.row_task] > 0.5
    return rows, y


def _logloss(y, p) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


# --------------------------------------------------------------------------- fitting
class FittedBaseline:
    """Per-task fitted models and what was chosen on the validation split.

    Attributes:
      baseline: The :class:`Baseline`.
      models: Task -> fitted model (``LogisticRegression`` or ``lightgbm.Booster``).
      chosen: Task -> what validation chose (``C`` and each candidate's LogLoss, or the best
        iteration), for ``metrics.json``.
    """

    def __init__(self, baseline: Baseline, vocab_sizes: Mapping[str, int],
                 dense_keys: Sequence[str], tasks: Sequence[TaskRows], funnel: bool):
        self.baseline = baseline
        self.vocab_sizes = dict(vocab_sizes)
        self.dense_keys = tuple(dense_keys)
        self.tasks = list(tasks)
        self.funnel = funnel
        self.design: Optional[OneHot] = None
        self.models: Dict[str, Any] = {}
        self.chosen: Dict[str, Dict[str, Any]] = {}

    def matrix(self, arrays):
        if self.baseline.name == LOGISTIC:
            return self.design.transform(arrays)
        return tabular(arrays, self.vocab_sizes, self.dense_keys)

    def task_probabilities(self, x) -> Dict[str, np.ndarray]:
        out = {}
        for task in self.tasks:
            model = self.models[task.name]
            if self.baseline.name == LOGISTIC:
                out[task.name] = model.predict_proba(x)[:, 1]
            else:
                out[task.name] = model.predict(x, num_iteration=model.best_iteration)
        return out

    def predict(self, arrays: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """``{head: [N]}`` probabilities (funnel heads derived as the networks derive them)."""
        out = self.task_probabilities(self.matrix(arrays))
        ctr, cvr, ctcvr = tasks_lib.CTR, tasks_lib.CVR, tasks_lib.CTCVR
        if self.funnel and ctr in out:
            if cvr in out:
                out[ctcvr] = out[ctr] * out[cvr]
            elif ctcvr in out:
                out[cvr] = np.clip(np.divide(out[ctcvr], out[ctr],
                                             out=np.zeros_like(out[ctr]),
                                             where=out[ctr] > 0), 0.0, 1.0)
        return {k: v.astype(np.float64) for k, v in out.items()}


def _check_crosses(crosses, vocab_sizes):
    for i, pair in enumerate(crosses):
        for name in pair:
            if name not in vocab_sizes:
                raise ConfigError(f"`baseline.crosses[{i}]` names {name!r}, which is not a "
                                  f"sparse feature; expected pairs of {sorted(vocab_sizes)}")


def fit(baseline: Baseline, spec: features.DatasetSpec, vocab_sizes: Mapping[str, int],
        tasks: Sequence[str], funnel: bool, train: Mapping[str, np.ndarray],
        validation: Mapping[str, np.ndarray], seed: int = 0) -> FittedBaseline:
    """Fits the baseline per task on ``train``, choosing on ``validation``.

    Args:
      baseline: From :func:`parse`.
      spec: The prepared dataset's spec (labels, user, dense keys).
      vocab_sizes: Sparse feature -> ids (``transform.preprocessor.Preprocessor.vocab_sizes``).
      tasks: ``model.tasks``.
      funnel: The config's recipe is a funnel recipe.
      train, validation: Transformed arrays (``<key>_xf``) of the splits.
      seed: Seed of the solvers (LightGBM's ``seed``; liblinear's ``random_state``).

    Raises:
      ConfigError: A cross naming no sparse feature, or tasks without a baseline.
    """
    rows = task_rows(tasks, funnel, spec.label_keys)
    fitted = FittedBaseline(baseline, vocab_sizes, spec.dense_keys, rows, funnel)
    y_train, y_val = labels_of(train, spec), labels_of(validation, spec)
    if baseline.name == LOGISTIC:
        _check_crosses(baseline.args.crosses, vocab_sizes)
        fitted.design = OneHot(dict(vocab_sizes), spec.dense_keys,
                               baseline.args.crosses).fit(train)
    x_train, x_val = fitted.matrix(train), fitted.matrix(validation)
    for task in rows:
        tr, ytr = _select(y_train, task)
        va, yva = _select(y_val, task)
        if baseline.name == LOGISTIC:
            fitted.models[task.name], fitted.chosen[task.name] = _fit_logistic(
                baseline.args, x_train[tr], ytr[tr], x_val[va], yva[va], seed)
        else:
            fitted.models[task.name], fitted.chosen[task.name] = _fit_lightgbm(
                baseline.args, x_train[tr], ytr[tr], x_val[va], yva[va], len(vocab_sizes),
                seed)
    return fitted


def logistic_model(args: LogisticArgs, c: float, seed: int = 0):
    """The scikit-learn estimator the ``logistic`` baseline fits for one ``C``."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, solver=args.solver, max_iter=args.max_iter, tol=args.tol,
                              random_state=seed)


def _fit_logistic(args: LogisticArgs, x, y, x_val, y_val, seed):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    best, report = None, {"validation_logloss": {}}
    for c in args.C:
        model = logistic_model(args, c, seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(x, y)
        loss = _logloss(y_val, model.predict_proba(x_val)[:, 1])
        report["validation_logloss"][repr(c)] = loss
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            report.setdefault("not_converged", []).append(c)
        if best is None or loss < best[0]:
            best = (loss, c, model)
    report["C"] = best[1]
    return best[2], report


def lightgbm_params(args: LightGBMArgs, seed: int = 0) -> Dict[str, Any]:
    """The LightGBM parameters of the ``lightgbm`` baseline."""
    return {"objective": "binary", "metric": "binary_logloss",
            "learning_rate": args.learning_rate, "num_leaves": args.num_leaves,
            "min_data_in_leaf": args.min_data_in_leaf, "cat_smooth": args.cat_smooth,
            "cat_l2": args.cat_l2, "lambda_l2": args.lambda_l2,
            "num_threads": args.num_threads, "seed": seed, "deterministic": True,
            "force_col_wise": True, "verbosity": -1}


def _fit_lightgbm(args: LightGBMArgs, x, y, x_val, y_val, num_sparse: int, seed):
    import lightgbm as lgb

    categorical = list(range(num_sparse))
    train = lgb.Dataset(x, y, categorical_feature=categorical, free_raw_data=False)
    valid = lgb.Dataset(x_val, y_val, categorical_feature=categorical, reference=train)
    booster = lgb.train(lightgbm_params(args, seed), train, num_boost_round=args.max_rounds,
                        valid_sets=[valid],
                        callbacks=[lgb.early_stopping(args.early_stopping_rounds,
                                                      verbose=False)])
    return booster, {"best_iteration": int(booster.best_iteration),
                     "validation_logloss": float(
                         booster.best_score["valid_0"]["binary_logloss"])}


def run(baseline: Baseline, spec: features.DatasetSpec, vocab_sizes: Mapping[str, int],
        tasks: Sequence[str], funnel: bool, splits: Mapping[str, Mapping[str, np.ndarray]],
        num_actions: int = 0, seed: int = 0) -> Dict[str, Any]:
    """Fits on ``splits["train"]`` (choosing on ``validation``) and scores ``eval`` (and
    ``validation``) as ``trainer.evaluation.score_heads`` does.

    Returns:
      ``{"heads": {...} (eval split), "validation_heads": {...}, "baseline": {"name", args...,
      "tasks": {task: chosen}}, "train_seconds"}``: the part of ``metrics.json`` the baseline
      decides.
    """
    t0 = time.perf_counter()
    fitted = fit(baseline, spec, vocab_sizes, tasks, funnel, splits["train"],
                 splits["validation"], seed)
    seconds = time.perf_counter() - t0
    heads = tasks_lib.heads(tasks, funnel, num_actions)
    scores = {split: score_heads(fitted.predict(splits[split]), labels_of(splits[split], spec),
                                 heads)
              for split in ("eval", "validation")}
    return {"heads": scores["eval"], "validation_heads": scores["validation"],
            "baseline": {**baseline.to_dict(), "tasks": fitted.chosen},
            "train_seconds": seconds}
