"""The training wrapper: network + loss recipe + streaming metrics, one custom train step.

``FunnelModel`` holds the inference network (``self.network``) and everything training-only
around it: the training view of the network (``self.training_network``, the same layers with
auxiliary outputs for recipes that need them) and the recipe's own layers (AdaFTR's relatedness
net, ...). Export uses ``network`` alone, so no loss weight or auxiliary variable reaches the
SavedModel.
"""
from __future__ import annotations

from typing import Dict

import tensorflow as tf

from trainer.objectives import Objective, head_labels


class FunnelModel(tf.keras.Model):
    """Trains ``network`` on ``objective``'s terms and tracks per-head AUC.

    Args:
      network: Functional inference network from ``trainer.model.build_networks``.
      objective: Loss recipe from ``trainer.objectives.build_objective``, already built
        (``objective.build(training_network)``) when it has layers of its own.
      training_network: The network the train step runs (default ``network``); must share
        ``network``'s layers.
    """

    def __init__(self, network: tf.keras.Model, objective: Objective,
                 training_network: tf.keras.Model = None, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.training_network = training_network or network
        self.objective = objective
        self.objective_layers = list(objective.layers)  # tracked: checkpoints hold them
        # Inputs only the training network has (HKE's indicator) come from the labels.
        self.extra_inputs = [n for n in self.training_network.input_names
                             if n not in network.input_names]
        self.heads = [h for h in ("ctr", "cvr", "ctcvr") if h in network.output_names]
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        names = list(objective.term_names(self.heads))
        if self.training_network.losses:
            names.append("regularization")
        self.term_trackers: Dict[str, tf.keras.metrics.Mean] = {
            n: tf.keras.metrics.Mean(name=n) for n in names}
        self.aucs = {h: tf.keras.metrics.AUC(num_thresholds=1000, name=f"{h}_auc")
                     for h in self.heads}

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, *self.term_trackers.values(), *self.aucs.values()]

    def loss_terms(self, labels, outputs) -> Dict[str, tf.Tensor]:
        terms = dict(self.objective(labels, outputs))
        if self.training_network.losses:
            terms["regularization"] = tf.add_n(self.training_network.losses)
        return terms

    def _track(self, labels, outputs, terms, total):
        self.loss_tracker.update_state(total)
        for name, value in terms.items():
            self.term_trackers[name].update_state(value)
        y = head_labels(labels)
        for head, metric in self.aucs.items():
            # cvr is only defined on clicked impressions (masked CVR AUC).
            weight = y["ctr"] if head == "cvr" else None
            metric.update_state(y[head], outputs[head], sample_weight=weight)
        return {m.name: m.result() for m in self.metrics}

    @property
    def step_variables(self):
        """Everything the optimizer updates: the network's and the recipe's weights."""
        return self.training_network.trainable_variables + self.objective.trainable_variables

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
        self.optimizer.apply_gradients(zip(grads, variables))
        logs = self._track(labels, outputs, terms, total)
        click = tf.cast(labels["click"], tf.float32)
        logs.update({"batch_rows": tf.shape(click)[0], "batch_clicks": tf.reduce_sum(click),
                     "batch_conversions": tf.reduce_sum(
                         tf.cast(labels["conversion"], tf.float32))})
        return logs

    def test_step(self, data):
        x, labels = data
        outputs = self.training_outputs(x, labels, training=False)
        terms = self.loss_terms(labels, outputs)
        return self._track(labels, outputs, terms, tf.add_n(list(terms.values())))
