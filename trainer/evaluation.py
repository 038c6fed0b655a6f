"""Offline evaluation of every head: exact AUC, LogLoss and GAUC per head, as metrics.json
reports them (both training paths call :func:`evaluate_heads`)."""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from schemas import tasks as tasks_lib
from trainer import metrics as offline
from trainer.data import predict


def select_target_action(outputs: Mapping[str, np.ndarray],
                         labels: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Adds ``cvr`` (each sample's pCVR of its OWN target action, KAML Sec. 4.1.4) and
    ``ctcvr = ctr * cvr`` to the outputs of a per-action model (heads ``cvr_<j>``); the
    target comes from the ADM original indicators. Other models pass through unchanged."""
    heads = [h for h in outputs if h.startswith(tasks_lib.action_head(""))]
    if not heads or "adm_original" not in labels:
        return dict(outputs)
    per_action = np.stack([outputs[tasks_lib.action_head(j)] for j in range(len(heads))],
                          axis=1)
    target = np.argmax(labels["adm_original"], axis=1)
    selected = per_action[np.arange(len(target)), target]
    return {**outputs, tasks_lib.CVR: selected,
            tasks_lib.CTCVR: outputs[tasks_lib.CTR] * selected}


def head_targets(heads: Sequence[tasks_lib.Head], labels: Mapping[str, np.ndarray]):
    """``{head: (label [N], mask [N] or None)}`` from the label arrays (``trainer.data``)."""
    out = {}
    for head in heads:
        if not all(t in labels for t in head.label_tasks):
            continue  # an extra task labelled by its recipe (AdaFTR's view): no label here
        y = np.prod([np.asarray(labels[t], np.float64) for t in head.label_tasks], axis=0)
        mask = None if head.mask_task is None else np.asarray(labels[head.mask_task])
        if head.name.startswith(tasks_lib.action_head("")) and "adm_original" in labels:
            j = int(head.name[len(tasks_lib.action_head("")):])
            mask = mask * labels["adm_original"][:, j]
        out[head.name] = (y, mask)
    return out


def evaluate_heads(network: tf.keras.Model, ds: tf.data.Dataset,
                   heads: Optional[Sequence[tasks_lib.Head]] = None
                   ) -> Dict[str, Dict[str, float]]:
    """Exact per-head AUC, LogLoss and GAUC; a head with a mask task (the funnel's ``cvr``) is
    scored where that task's label is 1 (clicked impressions).

    In the funnel the ctr head also gets ``auc_conversion``: the AUC of pCTR against the
    conversion label over all impressions, i.e. how well the CTR ranking puts converting
    impressions first (PWiseR's "conversion-weighted" view of CTR ranking); single-task ctr
    models on data with a conversion label too (:func:`conversions`).

    Per-action models (KAML) are scored as the paper does: every sample only on its target
    action. ``cvr`` is then the overall entry (each clicked sample's target-action pCVR against
    its conversion label), ``cvr_<j>`` the clicked samples whose target is action ``j``, and
    ``ctcvr`` uses ``ctr * cvr`` over all impressions.

    Args:
      network: The inference network.
      ds: ``(features, labels)`` batches (``trainer.data``).
      heads: The heads to score (default: from the network's outputs,
        ``schemas.tasks.heads_of_outputs``).

    Returns:
      ``{head: {"auc", "logloss", "count", "positives", ["gauc"], ["auc_conversion"]}}``.
    """
    if heads is None:
        heads = tasks_lib.heads_of_outputs(network.output_names)
    outputs, labels = predict(network, ds)
    return score_heads(outputs, labels, heads)


def score_heads(outputs: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                heads: Sequence[tasks_lib.Head]) -> Dict[str, Dict[str, float]]:
    """:func:`evaluate_heads` on predictions already made: ``outputs`` ``{head: [N]}``
    probabilities and ``labels`` as ``trainer.data`` gives them (``{task: [N]}``, ``user``,
    ...). Models that are not Keras networks (``trainer.baselines``) are scored with it, so
    their metrics mean exactly what the networks' do."""
    outputs = select_target_action(outputs, labels)
    targets = head_targets(heads, labels)
    report: Dict[str, Dict[str, float]] = {}
    for head in heads:
        if head.name not in outputs or head.name not in targets:
            continue
        y, mask = targets[head.name]
        probs = np.asarray(outputs[head.name])
        y_m, p_m = offline.masked(y, mask), offline.masked(probs, mask)
        entry = {"auc": offline.auc(y_m, p_m), "logloss": offline.logloss(y_m, p_m),
                 "count": int(len(y_m)), "positives": int(np.sum(y_m > 0.5))}
        if "user" in labels:
            entry["gauc"] = offline.gauc(offline.masked(labels["user"], mask), y_m, p_m)
        converted = conversions(targets, labels) if head.name == tasks_lib.CTR else None
        if converted is not None:
            entry["auc_conversion"] = offline.auc(converted, probs)
        report[head.name] = entry
    return report


def conversions(targets: Mapping[str, tuple], labels: Mapping[str, np.ndarray]
                ) -> Optional[np.ndarray]:
    """Per impression, 1 where it converted: the ``ctcvr`` head's label, or, for a model
    without that head (a single-task ``[ctr]`` model on funnel data), ``ctr * cvr`` from the
    labels when the data has both; None otherwise."""
    if tasks_lib.CTCVR in targets:
        return targets[tasks_lib.CTCVR][0]
    if tasks_lib.CTR in labels and tasks_lib.CVR in labels:
        return (np.asarray(labels[tasks_lib.CTR], np.float64)
                * np.asarray(labels[tasks_lib.CVR], np.float64))
    return None


def format_report(report: Dict[str, Dict[str, float]]) -> str:
    """One line per head: AUC, LogLoss (and GAUC)."""
    lines = []
    for head, m in report.items():
        extra = f"  GAUC {m['gauc']:.4f}" if "gauc" in m and not math.isnan(m["gauc"]) else ""
        lines.append(f"{head:>6}: AUC {m['auc']:.4f}  LogLoss {m['logloss']:.5f}{extra}  "
                     f"(n={m['count']}, positives={m['positives']})")
    return "\n".join(lines)
