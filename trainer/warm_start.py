"""Warm start: a new network starts from the weights of a previous model.

The previous model is a SavedModel of the inference network: ``funnelrank train`` output's
``model/`` (``funnelrank train --warm-start DIR``) or the TFX Trainer's serving export of the
last blessed model (``train.warm_start``, ``fn_args.base_model``).

Variables are matched by name (names are stable: every layer and sub-layer is named, see
``trainer.layers.common.build_sublayer``) and shape; the optimizer starts fresh. Vocabularies
are refitted on every run's train split, so an embedding row's meaning changes between runs
whenever the vocabulary does (it is ordered by frequency): an embedding table with a
:class:`RowMap` is copied row by row, each entry known to both runs taking its previous row
and new entries keeping their fresh initialisation; the wide part's per-id tables likewise,
and a wide cross whose features' rows moved starts fresh. Variables the previous model lacks,
or whose shapes differ, keep their initialisation and are listed in the report.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from schemas.errors import UserError
from trainer.layers.embedding import FUSED_TABLE, FeatureEmbedding
from trainer.layers.wide import WideLogits, cross_name

log = logging.getLogger(__name__)


class WarmStartError(UserError, ValueError):
    """The model to start from cannot be used (missing, or nothing in it matches)."""


@dataclasses.dataclass(frozen=True)
class RowMap:
    """How an embedding table's rows follow their vocabulary entries from one run to the next.

    Attributes:
      rows: For each row of the new table, the row of the previous table holding the same
        entry, or -1 for an entry the previous run did not have.
      old_rows: Rows of the previous table (its vocabulary plus OOV buckets); None when
        unknown (then every entry of ``rows`` is -1: the table starts fresh).
    """

    rows: np.ndarray
    old_rows: Optional[int]

    @property
    def is_identity(self) -> bool:
        """Every row stays where it was (the vocabulary did not change)."""
        return (self.old_rows == len(self.rows)
                and bool(np.array_equal(self.rows, np.arange(len(self.rows)))))

    @classmethod
    def fresh(cls, rows: int) -> "RowMap":
        """No row taken from the previous table (its vocabulary is unknown)."""
        return cls(np.full(rows, -1, np.int64), None)


def vocab_row_map(old_vocab: Sequence[str], new_vocab: Sequence[str],
                  num_oov_buckets: int) -> RowMap:
    """The :class:`RowMap` of a vocabulary table: ids ``0..V-1`` are the vocabulary entries,
    the ``num_oov_buckets`` OOV rows follow (and map to the previous OOV rows)."""
    old_index = {entry: i for i, entry in enumerate(old_vocab)}
    rows = [old_index.get(entry, -1) for entry in new_vocab]
    rows += [len(old_vocab) + j for j in range(num_oov_buckets)]
    return RowMap(np.asarray(rows, np.int64), len(old_vocab) + num_oov_buckets)


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """Where a warm start comes from.

    Attributes:
      model_dir: SavedModel of the previous inference network.
      row_maps: Network input name (``<key>_xf``) -> :class:`RowMap` of its embedding table;
        a table without one is copied as it is when its shape matches (hash buckets, or a
        vocabulary known to be unchanged).
    """

    model_dir: str
    row_maps: Mapping[str, RowMap] = dataclasses.field(default_factory=dict)


def saved_variables(model_dir: str) -> Dict[str, np.ndarray]:
    """Variable name (``backbone/ctr/gate/logits/kernel:0``) -> value of a SavedModel, read
    from its files alone: no Keras classes and no traced functions needed (``funnelrank
    train`` saves ``model/`` without them), and nothing in the SavedModel runs.

    The object graph of ``saved_model.pb`` names each variable; the checkpoint's object graph
    (the same nodes, in the same order) gives the key of its value.

    Raises:
      WarmStartError: ``model_dir`` is not a SavedModel, or its two object graphs differ.
    """
    from tensorflow.core.protobuf import saved_model_pb2, trackable_object_graph_pb2

    if not tf.io.gfile.exists(f"{model_dir}/saved_model.pb"):
        raise WarmStartError(f"warm start: {model_dir} is not a SavedModel (no saved_model.pb); "
                             f"give the output directory of a previous run")
    saved = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(f"{model_dir}/saved_model.pb", "rb") as f:
        saved.ParseFromString(f.read())
    reader = tf.train.load_checkpoint(f"{model_dir}/variables/variables")
    checkpoint = trackable_object_graph_pb2.TrackableObjectGraph()
    checkpoint.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    nodes = saved.meta_graphs[0].object_graph_def.nodes
    if len(nodes) != len(checkpoint.nodes):
        raise WarmStartError(f"warm start: {model_dir}: saved_model.pb has {len(nodes)} "
                             f"objects, its variables {len(checkpoint.nodes)}: not one save")
    values: Dict[str, np.ndarray] = {}
    for node, stored in zip(nodes, checkpoint.nodes):
        keys = [a.checkpoint_key for a in stored.attributes if a.name == "VARIABLE_VALUE"]
        if node.WhichOneof("kind") == "variable" and keys:
            name = node.variable.name
            values.setdefault(name if ":" in name else f"{name}:0", reader.get_tensor(keys[0]))
    return values


def _table_maps(network: tf.keras.Model, row_maps: Mapping[str, RowMap]
                ) -> Dict[str, RowMap]:
    """Embedding variable name -> the :class:`RowMap` of its rows (a fused table's map is the
    per-feature maps at their row offsets; a feature without one maps onto itself)."""
    if not row_maps:
        return {}
    out = {}
    for layer in network.layers:
        if isinstance(layer, WideLogits):
            out.update(_wide_maps(layer, row_maps))
        if not isinstance(layer, FeatureEmbedding):
            continue
        sizes = layer.sparse_vocab_sizes
        if not layer.fused_tables:
            for name, table in layer.tables.items():
                if name in row_maps:
                    out[table.embeddings.name] = row_maps[name]
            continue
        if FUSED_TABLE not in layer.tables:
            continue
        maps = [row_maps.get(name, RowMap(np.arange(size, dtype=np.int64), size))
                for name, size in sizes.items()]
        fused = layer.tables[FUSED_TABLE].embeddings.name
        if any(rm.old_rows is None for rm in maps):  # the previous offsets are unknown
            out[fused] = RowMap.fresh(sum(sizes.values()))
            continue
        parts: List[np.ndarray] = []
        old_offset = 0
        for rm in maps:
            parts.append(np.where(rm.rows >= 0, rm.rows + old_offset, -1))
            old_offset += rm.old_rows
        out[fused] = RowMap(np.concatenate(parts), old_offset)
    return out


def _wide_maps(wide: WideLogits, row_maps: Mapping[str, RowMap]) -> Dict[str, RowMap]:
    """The wide part's per-id tables map as the embedding tables do; a cross's rows are
    joint (and possibly hashed) codes of two vocabularies, so a cross whose features' rows
    moved starts fresh (its weights would land on other pairs)."""
    out = {}
    for name, table in wide.tables.items():
        if name in row_maps:
            out[table.embeddings.name] = row_maps[name]
    for pair in wide.crosses:
        moved = [n for n in pair if n in row_maps and not row_maps[n].is_identity]
        if moved:
            table = wide.cross_tables[cross_name(pair)]
            out[table.embeddings.name] = RowMap.fresh(wide.cross_rows(pair))
    return out


def apply(network: tf.keras.Model, source: WarmStart) -> Dict:
    """Assigns ``source``'s weights to ``network`` (see the module docstring); call in the
    strategy scope the network was built in.

    Returns:
      The report: ``{"from", "restored", "remapped_tables", "new_rows", "kept_initial"}``
      (``kept_initial``: ``name: why`` of every variable left at its initialisation).

    Raises:
      WarmStartError: Not a SavedModel, or no variable of ``network`` is in it (another
        architecture).
    """
    base = saved_variables(source.model_dir)
    tables = _table_maps(network, source.row_maps)
    restored, remapped, kept = 0, [], {}
    new_rows = 0
    for variable in network.weights:
        old = base.get(variable.name)
        shape = tuple(variable.shape)
        if old is None:
            kept[variable.name] = "not in the previous model"
            continue
        rm = tables.get(variable.name)
        if rm is not None and rm.old_rows is None:
            kept[variable.name] = "the previous vocabulary is unknown"
            continue
        if rm is not None and (old.shape[0] != rm.old_rows or len(rm.rows) != shape[0]
                               or old.shape[1:] != shape[1:]):
            kept[variable.name] = (f"rows do not match the vocabularies (previous table "
                                   f"{old.shape}, {rm.old_rows} previous vocabulary rows)")
            continue
        if rm is not None:
            value = variable.numpy()
            known = rm.rows >= 0
            value[known] = old[rm.rows[known]]
            variable.assign(value)
            remapped.append(variable.name)
            new_rows += int((~known).sum())
        elif tuple(old.shape) == shape:
            variable.assign(old)
            restored += 1
        else:
            kept[variable.name] = f"shape {shape}, previous {tuple(old.shape)}"
    if not restored and not remapped:
        raise WarmStartError(
            f"warm start: no variable of the network is in {source.model_dir} (another "
            f"backbone or feature set?); the network has e.g. "
            f"{[v.name for v in network.weights[:3]]}")
    report = {"from": source.model_dir, "restored": restored, "remapped_tables": remapped,
              "new_rows": new_rows, "kept_initial": kept}
    log.info("warm start from %s: %d variables copied, %d embedding/wide tables remapped to the "
             "new vocabularies (%d new rows), %d kept their initialisation%s", source.model_dir,
             restored, len(remapped), new_rows, len(kept),
             f": {sorted(kept)[:5]}" if kept else "")
    return report


def output_source(train_dir: str, new_vocabularies: Mapping[str, Sequence[str]],
                  num_oov_buckets: int, input_name) -> WarmStart:
    """The :class:`WarmStart` of a ``funnelrank train`` output directory (``model/`` and the
    vocabularies of its ``preprocessor.json``), for a run whose vocabularies are
    ``new_vocabularies``; ``input_name`` maps a column to its network input name.

    Raises:
      WarmStartError: ``train_dir`` is not a complete ``funnelrank train`` output.
    """
    import json

    model_dir = f"{train_dir}/model"
    vocab_file = f"{train_dir}/preprocessor.json"
    if not tf.io.gfile.exists(f"{model_dir}/saved_model.pb") or \
            not tf.io.gfile.exists(vocab_file):
        raise WarmStartError(f"--warm-start {train_dir}: expected the output directory of a "
                             f"finished `funnelrank train` (model/ and preprocessor.json)")
    with tf.io.gfile.GFile(vocab_file) as f:
        old = json.load(f).get("vocabularies") or {}
    return WarmStart(model_dir, {
        input_name(key): vocab_row_map(old[key], vocab, num_oov_buckets)
        for key, vocab in new_vocabularies.items() if key in old})

