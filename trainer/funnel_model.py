"""The training wrapper: network + loss recipe + streaming metrics, one custom train step.

``FunnelModel`` holds the inference network (``self.network``) and everything training-only
around it: the training view of the network (``self.training_network``, the same layers with
auxiliary outputs for recipes that need them) and the recipe's own layers (AdaFTR's relatedness
net, ...). Export uses ``network`` alone, so no loss weight or auxiliary variable reaches the
SavedModel.

Labels arrive as ``{task: [B]}`` (plus ``user``, ``actions``, ``adm_*``; see
``trainer.data.features_and_labels``); each head's label and mask come from its
``schemas.tasks.Head``. Per-head AUCs are streaming metrics of the validation step; in the
train step they cost up to a fifth of the step on small models, so they are updated only
every ``auc_every`` steps (0: never, the default). ``mean_auc`` (``val_mean_auc`` on the
validation split) is the mean of the heads' AUCs, one early-stopping monitor for every head.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import tensorflow as tf

from schemas import tasks as tasks_lib
from trainer.objectives import Objective

MEAN_AUC = "mean_auc"


class MeanOfResults(tf.keras.metrics.Metric):
    """The mean of other metrics' results (no state of its own; they update and reset
    themselves). A ``Metric``, so that Keras reads it across replicas as it reads them."""

    def __init__(self, parts, name: str = MEAN_AUC, **kwargs):
        super().__init__(name=name, **kwargs)
        parts = tuple(parts)
        if not parts:
            raise ValueError(f"MeanOfResults {name!r}: expected at least one metric")
        self._results = lambda: [m.result() for m in parts]  # a closure: not tracked

    def update_state(self, *args, **kwargs):
        return None

    def result(self):
        results = self._results()
        return tf.add_n(results) / len(results)

    def reset_state(self):
        return None


def head_label(labels, head: tasks_lib.Head):
    """``(label [B], weight [B] or None)`` of a head from the task labels."""
    y = None
    for task in head.label_tasks:
        t = tf.cast(tf.reshape(labels[task], [-1]), tf.float32)
        y = t if y is None else y * t
    weight = None
    if head.mask_task is not None:
        weight = tf.cast(tf.reshape(labels[head.mask_task], [-1]), tf.float32)
    return y, weight


def _zero_unless(ok, grad):
    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(tf.where(ok, grad.values, tf.zeros_like(grad.values)),
                                grad.indices, grad.dense_shape)
    return tf.where(ok, grad, tf.zeros_like(grad))


class FunnelModel(tf.keras.Model):
    """Trains ``network`` on ``objective``'s terms and tracks per-head AUC.

    Args:
      network: Functional inference network from ``trainer.model.build_networks``.
      objective: Loss recipe from ``trainer.objectives.build_objective``, already built
        (``objective.build(training_network)``) when it has layers of its own.
      training_network: The network the train step runs (default ``network``); must share
        ``network``'s layers.
      heads: The heads to track (``schemas.tasks.heads``); those the network lacks are skipped.
      auc_every: Update the per-head AUCs in the train step every this many steps (0: never;
        validation always computes them).
      sparse_optimizer: An optimizer for the tables (the weights of every
        ``tf.keras.layers.Embedding`` in the training network: embedding and wide tables);
        ``None``: the compiled optimizer updates every weight. Its slots are checkpointed with
        the model. Under loss scaling a step whose gradients are not finite gives the tables
        zero gradients (the compiled LossScaleOptimizer skips the other weights' update).
    """

    def __init__(self, network: tf.keras.Model, objective: Objective,
                 training_network: tf.keras.Model = None,
                 heads: Optional[Sequence[tasks_lib.Head]] = None, auc_every: int = 0,
                 sparse_optimizer: Optional[tf.keras.optimizers.Optimizer] = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.sparse_optimizer = sparse_optimizer
        self.network = network
        self.training_network = training_network or network
        self.objective = objective
        self.objective_layers = list(objective.layers)  # tracked: checkpoints hold them
        # Inputs only the training network has (HKE's indicator) come from the labels.
        self.extra_inputs = [n for n in self.training_network.input_names
                             if n not in network.input_names]
        if heads is None:
            heads = tasks_lib.heads_of_outputs(network.output_names)
        self.heads = [h for h in heads if h.name in network.output_names]
        self.auc_every = int(auc_every)
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        names = list(objective.term_names([h.name for h in self.heads]))
        if self.training_network.losses:
            names.append("regularization")
        self.term_trackers: Dict[str, tf.keras.metrics.Mean] = {
            n: tf.keras.metrics.Mean(name=n) for n in names}
        self.aucs = {h.name: tf.keras.metrics.AUC(num_thresholds=1000, name=f"{h.name}_auc")
                     for h in self.heads if not h.name.startswith(tasks_lib.action_head(""))}
        # One number for early stopping on every head (val_mean_auc).
        self.mean_auc = MeanOfResults(list(self.aucs.values()), name=MEAN_AUC) if self.aucs \
            else None

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    @property
    def metrics(self):
        mean = [self.mean_auc] if self.mean_auc is not None else []
        return [self.loss_tracker, *self.term_trackers.values(), *self.aucs.values(), *mean]

    @property
    def validation_log_keys(self) -> List[str]:
        """The keys validation adds to each epoch's logs (``val_`` + every metric's name):
        what ``train.early_stopping_monitor`` can name, known before training."""
        return [f"val_{m.name}" for m in self.metrics]

    def loss_terms(self, labels, outputs) -> Dict[str, tf.Tensor]:
        terms = dict(self.objective(labels, outputs))
        if self.training_network.losses:
            terms["regularization"] = tf.add_n(self.training_network.losses)
        return terms

    def _update_aucs(self, labels, outputs):
        for head in self.heads:
            known = all(t in labels for t in head.label_tasks)  # a recipe-labelled extra task
            if head.name in self.aucs and known:
                y, weight = head_label(labels, head)
                self.aucs[head.name].update_state(y, outputs[head.name], sample_weight=weight)

    def _track(self, terms, total, aucs: bool = True):
        """Updates the loss trackers; the step's logs (the AUCs' only when ``aucs``: a train
        step that never updates them does not read their 1,000 thresholds every step)."""
        self.loss_tracker.update_state(total)
        for name, value in terms.items():
            self.term_trackers[name].update_state(value)
        metrics = self.metrics if aucs else [self.loss_tracker, *self.term_trackers.values()]
        return {m.name: m.result() for m in metrics}

    @property
    def step_variables(self):
        """Everything the optimizer updates: the network's and the recipe's weights."""
        return self.training_network.trainable_variables + self.objective.trainable_variables

    @property
    def table_variables(self):
        """The weights of every ``Embedding`` layer of the training network (the tables)."""
        return [v for layer in self.training_network.submodules
                if isinstance(layer, tf.keras.layers.Embedding)
                for v in layer.trainable_weights]

    def _by_optimizer(self, pairs):
        """``(dense, tables)``: the ``(gradient, variable)`` pairs the compiled optimizer
        updates and those the ``sparse_optimizer`` updates, each in ``pairs``' order."""
        if self.sparse_optimizer is None:
            return list(pairs), []
        tables = {v.ref() for v in self.table_variables}
        pairs = list(pairs)
        return ([(g, v) for g, v in pairs if v.ref() not in tables],
                [(g, v) for g, v in pairs if v.ref() in tables])

    def build_optimizers(self):
        """Creates every variable the first train step would otherwise create: each
        optimizer's slots, for the variables it updates, in the train step's order (a
        schedule's current rate and the loss scale are made with their optimizer). Call after
        ``compile``, inside the strategy's scope.

        A ``tf.function`` whose first trace creates variables is traced a second time before
        it runs (TensorFlow's rule for functions that create state), so without this Keras
        traced the train step twice as often: 2.7 s more before the first step of a 200-row
        `funnelrank train` (docs/benchmarks.md, "Start-up: one trace of the train step").
        """
        dense, tables = self._by_optimizer((None, v) for v in self.step_variables)
        for optimizer, pairs in ((self.optimizer, dense), (self.sparse_optimizer, tables)):
            if optimizer is None or not pairs:
                continue
            optimizer.build([v for _, v in pairs])

    def _apply(self, grads, variables, loss_scaled: bool):
        if self.sparse_optimizer is None:
            self.optimizer.apply_gradients(zip(grads, variables))
            return
        dense, sparse = self._by_optimizer(zip(grads, variables))
        if loss_scaled:  # the LossScaleOptimizer skips a non-finite step: so do the tables
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(
                g.values if isinstance(g, tf.IndexedSlices) else g))
                for g, _ in dense + sparse if g is not None])
            sparse = [(None if g is None else _zero_unless(finite, g), v) for g, v in sparse]
        self.optimizer.apply_gradients(dense)
        self.sparse_optimizer.apply_gradients(sparse)

    def training_outputs(self, x, labels, training: bool):
        """The training network on a batch (its extra inputs taken from ``labels``)."""
        feed = {**x, **{name: labels[name] for name in self.extra_inputs}}
        return self.training_network(feed, training=training)

    def train_step(self, data):
        x, labels = data
        with tf.GradientTape() as tape:
            outputs = self.training_outputs(x, labels, training=True)
            terms = self.loss_terms(labels, outputs)
            total = tf.add_n(list(terms.values()))
            # Gradients are summed over replicas; scale the per-replica mean accordingly.
            scaled = total / tf.distribute.get_strategy().num_replicas_in_sync
            loss_scaled = isinstance(self.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
            if loss_scaled:  # mixed precision: keep float16 gradients from underflowing
                scaled = self.optimizer.get_scaled_loss(scaled)
        variables = self.step_variables
        grads = tape.gradient(scaled, variables)
        if loss_scaled:
            grads = self.optimizer.get_unscaled_gradients(grads)
        self._apply(grads, variables, loss_scaled)
        if self.auc_every:
            tf.cond(self.optimizer.iterations % self.auc_every == 0,
                    lambda: self._update_aucs(labels, outputs) or tf.constant(True),
                    lambda: tf.constant(False))
        logs = self._track(terms, total, aucs=bool(self.auc_every))
        first = next(iter(labels.values()))
        logs["batch_rows"] = tf.shape(first)[0]
        for head in [h for h in self.heads if all(t in labels for t in h.label_tasks)][:2]:
            y, _ = head_label(labels, head)
            logs[f"batch_{head.name}_positives"] = tf.reduce_sum(y)
        return logs

    def test_step(self, data):
        x, labels = data
        outputs = self.training_outputs(x, labels, training=False)
        terms = self.loss_terms(labels, outputs)
        self._update_aucs(labels, outputs)
        return self._track(terms, tf.add_n(list(terms.values())))
