"""MAN's second training stage: MAML of the fusion layers over task partitions.

MAN (/work/shared/papers/man_multitask_attention.md) Sec. 4.3, Algorithm 1, after Finn et al.'s
MAML: for each sampled task ``T_i`` (rows sharing one value of a partition feature) with
disjoint support ``D^a`` and query ``D^b`` batches,

    theta_i' = theta - alpha * dL_a(theta)/dtheta            (inner step)
    theta   <- theta - beta * sum_i dL_b(theta_i')/dtheta     (outer step, line 8)

``theta`` are the fusion layers only (attention + towers + logits); everything else is held
fixed. The second-order gradient differentiates through the inner step
(``dL_b/dtheta = (I - alpha H_a) dL_b/dtheta'``); ``first_order`` drops the Hessian term.

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

from trainer.config import ConfigError, MetaConfig
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
           label_keys: Mapping[str, str]) -> Batch:
    x = {k: tf.constant(arrays[k][rows]) for k in input_names}
    y = {name: tf.constant(arrays[key][rows].reshape(-1)) for name, key in label_keys.items()}
    return x, y


def meta_train(model, arrays: Mapping[str, np.ndarray], input_names: Sequence[str],
               label_keys: Mapping[str, str], partition_column: str, cfg: MetaConfig,
               strategy: tf.distribute.Strategy, seed: int) -> Dict[str, float]:
    """Runs ``cfg.steps`` meta steps on ``model`` (a built ``FunnelModel``) in place.

    Args:
      model: The stage-1 model; its fusion layers are updated.
      arrays: In-memory transformed train rows (``<key>_xf`` -> ``[N, 1]``).
      input_names: Network inputs.
      label_keys: Canonical label name (``click``, ``conversion``) -> column in ``arrays``.
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
        return [tuple(_batch(arrays, rows, input_names, label_keys) for rows in sampler.sample())
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
            "seconds": time.perf_counter() - t0, "variables": len(variables)}
