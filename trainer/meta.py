"""MAN's second training stage: MAML of the fusion layers over task partitions.

MAN (/work/shared/papers/man_multitask_attention.md) Sec. 4.3, Algorithm 1, after Finn et al.'s
MAML: for each sampled task ``T_i`` (rows sharing one value of a partition feature) with
disjoint support ``D^a`` and query ``D^b`` batches,

    theta_i' = theta - alpha * dL_a(theta)/dtheta            (inner step)
    theta   <- theta - beta * sum_i dL_b(theta_i')/dtheta     (outer step, line 8)

``theta`` are the fusion layers only (attention + towers + logits); everything else is held
fixed. The second-order gradient differentiates through the inner step
(``dL_b/dtheta = (I - alpha H_a) dL_b/dtheta'``); ``first_order`` drops the Hessian term.

:func:`evaluate_test_tasks` is the test-task step of Sec. 4.3: fine-tune the fusion layers on a
held-out partition's support set (:func:`adapt`), score its query set, leave the model as it is.

Keras layers read their variables as attributes (``dense.kernel``), so ``theta'`` is evaluated
by temporarily pointing those attributes at the tensors ``theta'`` (:func:`substituted`),
bypassing Keras' attribute tracking so nothing about the model changes.
"""
from __future__ import annotations

import contextlib
import fnmatch
import logging
import time
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

from schemas.config import ConfigError, MetaConfig
from schemas.features import transformed_name
from trainer.data import features_and_labels
from trainer.losses.global_batch import replica_local

log = logging.getLogger(__name__)

Batch = Tuple[Dict[str, tf.Tensor], Dict[str, tf.Tensor]]


def fusion_layers(network: tf.keras.Model, patterns: Sequence[str]) -> List[tf.keras.layers.Layer]:
    """The backbone's ``fusion_layers()`` (if any) + top-level layers matching ``patterns``."""
    layers = []
    for layer in network.layers:
        if hasattr(layer, "fusion_layers"):
            layers.extend(layer.fusion_layers())
        if any(fnmatch.fnmatch(layer.name, p) for p in patterns):
            layers.append(layer)
    return [layer for layer in layers if layer.trainable_weights]


@contextlib.contextmanager
def substituted(layers: Sequence[tf.keras.layers.Layer], values: Mapping):
    """Within the block, every attribute of ``layers`` (and their sub-layers) holding a variable
    ``v`` with ``v.ref()`` in ``values`` holds ``values[v.ref()]`` instead.

    Raises:
      ValueError: Some variable of ``values`` is not an attribute of any of the layers (the
        substitution would silently not happen).
    """
    swapped = []
    found = set()
    try:
        for layer in layers:
            for sub in layer._flatten_layers(include_self=True):  # pylint: disable=protected-access
                for name, value in list(vars(sub).items()):
                    if isinstance(value, tf.Variable) and value.ref() in values:
                        object.__setattr__(sub, name, values[value.ref()])
                        swapped.append((sub, name, value))
                        found.add(value.ref())
        missing = set(values) - found
        if missing:
            raise ValueError(f"substituted: {len(missing)} variable(s) are not attributes of the "
                             f"given layers: {sorted(r.deref().name for r in missing)}")
        yield
    finally:
        for sub, name, value in reversed(swapped):
            object.__setattr__(sub, name, value)


def maml_gradients(layers: Sequence[tf.keras.layers.Layer], variables: Sequence[tf.Variable],
                   loss_fn: Callable[[Batch], tf.Tensor], support: Batch, query: Batch,
                   inner_lr: float, first_order: bool = False):
    """Query loss at the adapted weights and its gradient w.r.t. the original weights.

    Args:
      layers: Layers owning ``variables`` (as attributes).
      variables: theta, the meta-trained variables.
      loss_fn: Batch -> scalar loss, computed with the layers.
      support, query: The task's two disjoint batches.
      inner_lr: alpha.
      first_order: Treat the inner gradient as a constant (first-order MAML).

    Returns:
      ``(L_b(theta'), [dL_b(theta')/dtheta for each variable])``.
    """
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            support_loss = loss_fn(support)
        grads = inner.gradient(support_loss, variables)
        grads = [tf.zeros_like(v) if g is None else g for v, g in zip(variables, grads)]
        if first_order:
            grads = [tf.stop_gradient(g) for g in grads]
        adapted = {v.ref(): v - inner_lr * g for v, g in zip(variables, grads)}
        with substituted(layers, adapted):
            query_loss = loss_fn(query)
    outer_grads = outer.gradient(query_loss, variables)
    return query_loss, [tf.zeros_like(v) if g is None else g
                        for v, g in zip(variables, outer_grads)]


class PartitionSampler:
    """Draws (support, query) row indices from one partition at a time.

    Args:
      partitions: ``[N]`` partition value of each row.
      support_size, query_size: Rows of each batch (disjoint, without replacement).
      seed: Seed of the draws.

    Raises:
      ConfigError: No partition has ``support_size + query_size`` rows.
    """

    def __init__(self, partitions: np.ndarray, support_size: int, query_size: int, seed: int):
        partitions = np.asarray(partitions).reshape(-1)
        self.support_size, self.query_size = support_size, query_size
        need = support_size + query_size
        order = np.argsort(partitions, kind="mergesort")
        values, starts = np.unique(partitions[order], return_index=True)
        groups = np.split(order, starts[1:])
        self.groups = {v: g for v, g in zip(values.tolist(), groups) if len(g) >= need}
        self.skipped = len(groups) - len(self.groups)
        if not self.groups:
            raise ConfigError(f"meta: no partition has support_size + query_size = {need} rows "
                              f"(largest has {max(len(g) for g in groups) if groups else 0})")
        self.keys = sorted(self.groups)
        self.rng = np.random.default_rng(seed)

    def sample(self) -> Tuple[np.ndarray, np.ndarray]:
        rows = self.groups[self.keys[self.rng.integers(len(self.keys))]]
        picked = self.rng.choice(rows, self.support_size + self.query_size, replace=False)
        return picked[:self.support_size], picked[self.support_size:]


def _batch(arrays: Mapping[str, np.ndarray], rows: np.ndarray, input_names: Sequence[str],
           spec) -> Batch:
    """Features and labels of ``rows`` (the same labels the datasets give)."""
    return features_and_labels({k: tf.constant(v[rows]) for k, v in arrays.items()},
                               input_names, spec)


def meta_train(model, arrays: Mapping[str, np.ndarray], input_names: Sequence[str],
               spec, partition_column: str, cfg: MetaConfig,
               strategy: tf.distribute.Strategy, seed: int) -> Dict[str, float]:
    """Runs ``cfg.steps`` meta steps on ``model`` (a built ``FunnelModel``) in place.

    Args:
      model: The stage-1 model; its fusion layers are updated.
      arrays: In-memory transformed train rows (``<key>_xf`` -> ``[N, 1]``).
      input_names: Network inputs.
      spec: The dataset spec (which columns of ``arrays`` are which labels).
      partition_column: Column of ``arrays`` defining the meta-tasks.
      cfg: Meta section of the config.
      strategy: The strategy the model was built under.
      seed: Seed of the partition sampling.

    Returns:
      ``{"steps", "partitions", "partitions_skipped", "query_loss_first", "query_loss_last",
      "seconds", "variables"}``.
    """
    layers = fusion_layers(model.network, cfg.layers)
    variables = [v for layer in layers for v in layer.trainable_variables]
    if not variables:
        raise ConfigError(f"meta: no fusion layer found (backbone fusion layers + layers "
                          f"matching {list(cfg.layers)})")
    sampler = PartitionSampler(arrays[partition_column], cfg.support_size, cfg.query_size, seed)
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        optimizer = tf.keras.optimizers.SGD(cfg.outer_lr)

    def loss_fn(batch: Batch) -> tf.Tensor:
        x, y = batch
        with replica_local():  # each replica's batch is its own partition: nothing gathered
            terms = model.loss_terms(y, model.training_outputs(x, y, training=True))
        return tf.add_n(list(terms.values()))

    def replica_step(tasks):
        total, summed = 0.0, None
        for support, query in tasks:
            loss, grads = maml_gradients(layers, variables, loss_fn, support, query,
                                         cfg.inner_lr, cfg.first_order)
            total += loss
            summed = grads if summed is None else [a + b for a, b in zip(summed, grads)]
        optimizer.apply_gradients(zip(summed, variables))  # sums over replicas: line 8
        return total / len(tasks)

    @tf.function
    def step(per_replica):
        losses = strategy.run(replica_step, args=(per_replica,))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, losses, axis=None)

    def draw():
        return [tuple(_batch(arrays, rows, input_names, spec) for rows in sampler.sample())
                for _ in range(cfg.tasks_per_replica)]

    log.info("meta-training %d variables of %s over %d partitions of %s (%d skipped: fewer "
             "than %d rows), %d step(s), %s-order", len(variables),
             [layer.name for layer in layers], len(sampler.keys), partition_column,
             sampler.skipped, cfg.support_size + cfg.query_size, cfg.steps,
             "first" if cfg.first_order else "second")
    t0 = time.perf_counter()
    losses = []
    for i in range(cfg.steps):
        draws = [draw() for _ in range(replicas)]
        per_replica = strategy.experimental_distribute_values_from_function(
            lambda ctx: draws[ctx.replica_id_in_sync_group])
        losses.append(float(step(per_replica)))
        if (i + 1) % cfg.log_every == 0 or i + 1 == cfg.steps:
            log.info("meta step %d/%d: query loss %.5f (mean of last %d: %.5f)", i + 1,
                     cfg.steps, losses[-1], min(len(losses), cfg.log_every),
                     float(np.mean(losses[-cfg.log_every:])))
    window = min(len(losses), cfg.log_every)
    return {"steps": cfg.steps, "partitions": len(sampler.keys),
            "partitions_skipped": sampler.skipped,
            "query_loss_first": float(np.mean(losses[:window])),
            "query_loss_last": float(np.mean(losses[-window:])),
            "query_loss": losses, "seconds": time.perf_counter() - t0,
            "variables": len(variables)}


def adapt(layers: Sequence[tf.keras.layers.Layer], variables: Sequence[tf.Variable],
          loss_fn: Callable[[Batch], tf.Tensor], support: Batch, inner_lr: float, steps: int):
    """``steps`` plain gradient steps on the support loss, as tensors; variables untouched.

    ``theta_{s+1} = theta_s - inner_lr * dL_support(theta_s)/dtheta_s`` from ``theta_0`` = the
    variables' values (MAN Sec. 4.3: the test task's "fine-tuning" on its support set, the
    inner update of Algorithm 1 repeated).

    Returns:
      ``(theta_steps, support_losses)``: the adapted values (one tensor per variable) and the
      ``steps + 1`` support losses at ``theta_0 ... theta_steps``.
    """
    theta = [tf.convert_to_tensor(v) for v in variables]
    losses = []
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(theta)
            with substituted(layers, {v.ref(): t for v, t in zip(variables, theta)}):
                losses.append(loss_fn(support))
        grads = tape.gradient(losses[-1], theta)
        theta = [t if g is None else t - inner_lr * g for t, g in zip(theta, grads)]
    with substituted(layers, {v.ref(): t for v, t in zip(variables, theta)}):
        losses.append(loss_fn(support))
    return theta, tf.stack(losses)


TEST_TASK_HEADS = ("ctr", "cvr", "ctcvr")


def _head_metrics(outputs: Mapping[str, np.ndarray], click: np.ndarray,
                  conversion: np.ndarray) -> Dict[str, Dict[str, float]]:
    """AUC / LogLoss of the ctr, cvr (clicked rows only) and ctcvr heads."""
    from trainer import metrics as offline

    targets = {"ctr": (click, None), "cvr": (conversion, click),
               "ctcvr": (click * conversion, None)}
    report = {}
    for head in TEST_TASK_HEADS:
        if head not in outputs:
            continue
        y, mask = targets[head]
        y_m, p_m = offline.masked(y, mask), offline.masked(outputs[head], mask)
        report[head] = {"auc": offline.auc(y_m, p_m), "logloss": offline.logloss(y_m, p_m),
                        "count": int(len(y_m)), "positives": int(np.sum(y_m > 0.5))}
    return report


def evaluate_test_tasks(model, arrays: Mapping[str, np.ndarray], input_names: Sequence[str],
                        spec, partition_column: str, cfg: MetaConfig,
                        seed: int, batch_size: int = 4096) -> Dict[str, object]:
    """MAN Sec. 4.3's test tasks: fine-tune on a partition's support set, score its query set.

    Every partition (value of ``partition_column``) of ``arrays`` (held-out rows, e.g. the eval
    split) with at least ``cfg.support_size + cfg.query_size`` rows is a test task: its
    support set is ``cfg.support_size`` rows drawn without replacement (``seed``), its query
    set ALL its other rows. The fusion layers (as :func:`meta_train` trains them: the backbone's
    ``fusion_layers()`` and the layers matching ``cfg.layers``) take ``cfg.test_task_steps``
    gradient steps of ``cfg.inner_lr`` on the support rows' training loss (:func:`adapt`, full
    batch), then the network scores the query rows with those weights. The same query rows are
    also scored with the trained weights (``before``), so the two are paired.

    Nothing of ``model`` changes: the adapted weights are tensors substituted for the variables
    only while scoring (:func:`substituted`), and both the support loss and the scoring run the
    network in inference mode (no dropout; batch norm uses and keeps its moving statistics).

    Args:
      model: A trained ``FunnelModel``.
      arrays: Held-out transformed rows (``<key>_xf`` -> ``[N, 1]``, labels included).
      input_names: Network inputs.
      spec: The dataset spec (which columns of ``arrays`` are the funnel's labels).
      partition_column: Column of ``arrays`` whose values are the test tasks.
      cfg: Meta section (``support_size``, ``query_size``, ``inner_lr``, ``test_task_steps``,
        ``layers``).
      seed: Seed of the support draws.
      batch_size: Rows per scoring call.

    Returns:
      ``{"steps", "inner_lr", "partitions", "partitions_skipped", "seconds",
      "pooled": {"after": {head: metrics}, "before": {head: metrics}},
      "per_partition": {value: {"support_rows", "query_rows", "support_loss": [first, last],
      "after": {...}, "before": {...}}}}``; metrics are ``auc``, ``logloss``, ``count``,
      ``positives`` of heads ctr, cvr (clicked query rows only) and ctcvr; pooled = over the
      union of all query rows.

    Raises:
      ConfigError: No fusion layer, or no partition large enough.
    """
    layers = fusion_layers(model.network, cfg.layers)
    variables = [v for layer in layers for v in layer.trainable_variables]
    if not variables:
        raise ConfigError(f"meta.test_task_eval: no fusion layer found (backbone fusion layers "
                          f"+ layers matching {list(cfg.layers)})")
    if partition_column not in arrays:
        raise ConfigError(f"meta.partition_key: the rows have no column {partition_column!r}; "
                          f"have {sorted(arrays)}")
    partitions = np.asarray(arrays[partition_column]).reshape(-1)
    sampler = PartitionSampler(partitions, cfg.support_size, cfg.query_size, seed)
    rng = np.random.default_rng(seed)

    def loss_fn(batch: Batch) -> tf.Tensor:
        x, y = batch
        terms = model.loss_terms(y, model.training_outputs(x, y, training=False))
        return tf.add_n(list(terms.values()))

    @tf.function(reduce_retracing=True)
    def adapted(support):
        return adapt(layers, variables, loss_fn, support, cfg.inner_lr, cfg.test_task_steps)

    @tf.function(reduce_retracing=True)
    def score(x, theta):
        with substituted(layers, {v.ref(): t for v, t in zip(variables, theta)}):
            return model.network(x, training=False)

    def predict(rows, theta):
        parts = []
        for start in range(0, len(rows), batch_size):
            x = {k: tf.constant(arrays[k][rows[start:start + batch_size]])
                 for k in input_names}
            parts.append({k: v.numpy().reshape(-1) for k, v in score(x, theta).items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def labels(rows):
        return tuple(np.asarray(arrays[transformed_name(k)][rows], np.float64).reshape(-1)
                     for k in (spec.click_key, spec.conversion_key))

    t0 = time.perf_counter()
    trained = [tf.convert_to_tensor(v) for v in variables]
    per_partition, pooled = {}, {"after": [], "before": [], "rows": []}
    for key in sampler.keys:
        rows = sampler.groups[key]
        chosen = np.zeros(len(rows), bool)
        chosen[rng.choice(len(rows), cfg.support_size, replace=False)] = True
        support, query = rows[chosen], rows[~chosen]
        theta, support_losses = adapted(_batch(arrays, support, input_names, spec))
        before = predict(query, trained)
        after = predict(query, theta) if cfg.test_task_steps else before
        click, conversion = labels(query)
        losses = support_losses.numpy()
        per_partition[str(key)] = {
            "support_rows": int(len(support)), "query_rows": int(len(query)),
            "support_loss": [float(losses[0]), float(losses[-1])],
            "after": _head_metrics(after, click, conversion),
            "before": _head_metrics(before, click, conversion)}
        pooled["after"].append(after)
        pooled["before"].append(before)
        pooled["rows"].append(query)
    rows = np.concatenate(pooled["rows"])
    click, conversion = labels(rows)
    summary = {
        "steps": cfg.test_task_steps, "inner_lr": cfg.inner_lr,
        "partitions": len(sampler.keys), "partitions_skipped": sampler.skipped,
        "pooled": {which: _head_metrics(
            {h: np.concatenate([p[h] for p in pooled[which]]) for h in pooled[which][0]},
            click, conversion) for which in ("after", "before")},
        "per_partition": per_partition, "seconds": time.perf_counter() - t0}
    after, before = summary["pooled"]["after"], summary["pooled"]["before"]
    log.info("test tasks (%d partitions of %s, %d skipped, %d step(s) of %g): pooled %s",
             len(sampler.keys), partition_column, sampler.skipped, cfg.test_task_steps,
             cfg.inner_lr, ", ".join(f"{h} AUC {before[h]['auc']:.4f} -> {after[h]['auc']:.4f}"
                                     for h in after))
    return summary
