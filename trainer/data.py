"""tf.data input pipelines yielding ``(features, labels)`` for ``FunnelModel``.

Features are the transformed model inputs (``<key>_xf``); labels the canonical dict
``{task: label, ...}`` (see :func:`features_and_labels`). Two sources: transformed TFRecords
written by the TFX Transform component, and in-memory arrays from ``transform.preprocessor``
(``funnelrank train``).
"""
from __future__ import annotations

import weakref
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from schemas import features


def _stack(batch: Mapping[str, tf.Tensor], keys: Sequence[str]) -> tf.Tensor:
    """``[B, len(keys)]`` float32 of the ``<key>_xf`` columns."""
    return tf.concat([tf.reshape(tf.cast(batch[features.transformed_name(k)], tf.float32),
                                 [-1, 1]) for k in keys], axis=1)


def label_columns(spec: features.DatasetSpec) -> Tuple[str, ...]:
    """``<key>_xf`` columns that become labels (not network inputs)."""
    keys = spec.label_columns + ((spec.user_key,) if spec.user_key else ()) + tuple(
        spec.adm_keys)
    return tuple(features.transformed_name(k) for k in keys)


def dataset_columns(input_names: Sequence[str], spec: features.DatasetSpec) -> List[str]:
    """The ``<key>_xf`` columns a (features, labels) dataset reads: model inputs and labels."""
    return sorted(set(input_names) | set(label_columns(spec)))


def features_and_labels(batch: Mapping[str, tf.Tensor], input_names: Sequence[str],
                        spec: features.DatasetSpec):
    """Features and the labels of a transformed batch: one ``[B]`` label per task
    (``spec.label_keys``: ``{"ctr": click, "cvr": conversion}`` in the funnel); ``user``
    (GAUC); with per-action labels ``actions`` ``[B, N]``; after ADM ``adm_mask`` and
    ``adm_original`` ``[B, N]`` (the latter also feeds HKE's training network)."""
    x = {k: batch[k] for k in input_names}
    y = {task: tf.reshape(batch[features.transformed_name(column)], [-1])
         for task, column in spec.label_keys.items()}
    if spec.user_key is not None:  # carried for GAUC, never a model input by this name
        y["user"] = tf.reshape(batch[features.transformed_name(spec.user_key)], [-1])
    if spec.action_label_keys:
        y["actions"] = _stack(batch, spec.action_label_keys)
    if spec.adm_keys:
        y["adm_mask"] = _stack(batch, spec.adm_mask_keys)
        y["adm_original"] = _stack(batch, spec.adm_original_keys)
    return x, y


def from_arrays(arrays: Mapping[str, np.ndarray], input_names: Sequence[str],
                spec: features.DatasetSpec, batch_size: int, shuffle: bool = False,
                seed: int = 0, drop_remainder: bool = False) -> tf.data.Dataset:
    """Batches in-memory ``<key>_xf`` arrays (one pass; Keras repeats it each epoch).

    No per-element work: with ``shuffle`` each pass draws one permutation of the row indices
    at once (``stateless_shuffle`` keyed by a number that ``Dataset.random`` draws anew on
    every pass), slices it into batches and gathers each batch's columns at once. The shuffle
    is a full one (every row can land anywhere), new every epoch, and the same for the same
    ``seed`` and TF global seed. tf.data's per-element ``shuffle`` + ``batch`` of indices cost
    a noticeable share of the train step at batch 2048, and shuffling the rows themselves (a
    dict of ~20 scalars per element) more than the step of the zoo's models.
    """
    keep = dataset_columns(input_names, spec)
    missing = [k for k in keep if k not in arrays]
    if missing:
        raise KeyError(f"from_arrays: columns {missing} are not in the arrays "
                       f"(have {sorted(arrays)})")
    rows = len(arrays[keep[0]])
    gather = _grouped_gather({k: np.asarray(arrays[k]) for k in keep}, rows)
    batches = rows // batch_size if drop_remainder else -(-rows // batch_size)

    def batches_of(order: tf.Tensor) -> tf.data.Dataset:
        starts = tf.data.Dataset.range(0, batches * batch_size, batch_size)
        if drop_remainder:  # every batch full: a static batch dimension, as Dataset.batch gives
            return starts.map(lambda start: tf.ensure_shape(
                order[start:start + batch_size], [batch_size]))
        return starts.map(lambda start: order[start:tf.minimum(start + batch_size, rows)])

    if shuffle:
        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
        ds = keys.flat_map(lambda key: batches_of(tf.random.experimental.stateless_shuffle(
            tf.range(rows, dtype=tf.int64), seed=tf.stack([key, tf.constant(seed, tf.int64)]))))
        # flat_map hides the count; Keras (steps per epoch, multi-worker end of data) needs it.
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    else:
        ds = batches_of(tf.range(rows, dtype=tf.int64))
    ds = ds.map(lambda index: features_and_labels(gather(index), input_names, spec),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _grouped_gather(columns: Mapping[str, np.ndarray], rows: int):
    """``gather(index) -> {column: rows index}`` with ONE gather per dtype: the columns of a
    dtype are held as one ``[rows, C]`` matrix, and a batch is one row gather of it and one
    split (about 20 gathers per batch otherwise: a fifth of a small model's CPU step on 2
    cores, docs/benchmarks.md, issue 18)."""
    groups: Dict[np.dtype, List[str]] = {}
    for k, v in columns.items():
        if len(v) != rows:
            raise ValueError(f"from_arrays: column {k!r} has {len(v)} rows, expected {rows} "
                             f"(the length of {next(iter(columns))!r})")
        groups.setdefault(v.dtype, []).append(k)
    matrices, layout = [], []
    for keys in groups.values():
        parts = [columns[k].reshape(rows, -1) for k in keys]
        matrices.append(tf.convert_to_tensor(np.concatenate(parts, axis=1) if len(parts) > 1
                                             else parts[0]))
        layout.append([(k, p.shape[1], columns[k].shape[1:]) for k, p in zip(keys, parts)])

    def gather(index):
        out = {}
        for matrix, cols in zip(matrices, layout):
            block = tf.gather(matrix, index)
            pieces = tf.split(block, [w for _, w, _ in cols], axis=1) if len(cols) > 1 \
                else [block]
            for (k, _, tail), piece in zip(cols, pieces):
                out[k] = tf.reshape(piece, [-1, *tail])
        return out

    return gather


def _transformed_files(file_pattern):
    files = tf.io.gfile.glob(file_pattern) if isinstance(file_pattern, str) else [
        f for p in file_pattern for f in tf.io.gfile.glob(p)]
    if not files:
        raise FileNotFoundError(f"no transformed examples match {file_pattern!r}")
    return sorted(files)


def _records(files: Sequence[str], cycle_length: int = 16,
             shuffle_seed: Optional[int] = None) -> tf.data.Dataset:
    """Serialized records of gzipped TFRecord ``files``, one record from each of up to
    ``cycle_length`` open files in turn, read on tf.data's own thread; with ``shuffle_seed``,
    the files in a new order every epoch.

    Not ``TFRecordDataset(num_parallel_reads=...)``: its parallel interleave made the whole
    streaming pipeline (read, shuffle, batch, parse) 3-4x slower on two cores, 49-56k against
    163-245k examples/s (docs/benchmarks.md, issue 18); decompression is not the bottleneck.
    """
    names = tf.data.Dataset.from_tensor_slices(list(files))
    if shuffle_seed is not None:
        names = names.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=True)
    return names.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
        cycle_length=max(1, min(len(files), cycle_length)), block_length=1,
        deterministic=True)


def _permuted_windows(parsed: tf.data.Dataset, batches: int, batch_size: int,
                      seed: int) -> tf.data.Dataset:
    """Rows of ``batches`` consecutive parsed batches permuted together (one random
    permutation and one gather per column, per window), re-cut into ``batch_size`` rows.

    What a shuffle buffer of ``batches x batch_size`` records does, without its per-record
    cost: the streaming pipeline alone ran 250-280k examples/s with it against 160-230k with
    ``Dataset.shuffle`` on the serialized records (docs/benchmarks.md, issue 18). Rows mix
    within a window, not across windows. Each window's permutation is a stateless shuffle
    keyed by a number ``Dataset.random`` draws anew for every window and every pass (as in
    :func:`from_arrays`): a new order every epoch, the same for the same ``seed`` and TF
    global seed, whatever order the parallel map runs the windows in.
    """
    def permute(window, key):
        rows = {k: v.merge_dims(0, 1) for k, v in window.items()}  # [batches x B, ...]
        first = next(iter(rows.values()))
        order = tf.random.experimental.stateless_shuffle(
            tf.range(tf.shape(first)[0]), seed=tf.stack([key, tf.constant(seed, tf.int64)]))
        return {k: tf.gather(v, order) for k, v in rows.items()}

    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip((parsed.ragged_batch(batches), keys)).map(
        permute, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).rebatch(batch_size)


def load_transformed(file_pattern, feature_spec: Dict, columns: Sequence[str],
                     chunk: int = 8192, max_rows: Optional[int] = None,
                     rows: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Reads gzipped transformed tf.Examples into one array per ``<key>_xf`` column of
    ``columns`` (records interleaved across files), for :func:`from_arrays`;
    with ``max_rows``, only the first that many records of a round-robin read (one record
    from each file in turn), so that the rows come from every file.

    ``rows``, the number of records when the caller has counted them (the TFX Trainer does),
    lets the columns be allocated once and filled chunk by chunk: the load then holds the
    split once, where joining the parsed chunks at the end holds them and the joined split
    side by side (loaded and sorted, a 66 MB split raised the process's peak memory by
    106-112 MB against 161-164 MB: docs/reliability.md).

    Raises:
      KeyError: A column is not in ``feature_spec``.
      ValueError: The files hold no rows, or other than the ``rows`` counted.
    """
    missing = [k for k in columns if k not in feature_spec]
    if missing:
        raise KeyError(f"load_transformed: columns {missing} are not in the transformed "
                       f"feature spec (have {sorted(feature_spec)})")
    spec = {k: feature_spec[k] for k in columns}
    files = _transformed_files(file_pattern)
    ds = _records(files) if max_rows is None else _records(files, len(files)).take(max_rows)
    ds = ds.batch(chunk).map(lambda s: tf.io.parse_example(s, spec),
                             num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    batches = ds.prefetch(tf.data.AUTOTUNE)
    if rows is not None and all(isinstance(f, tf.io.FixedLenFeature) for f in spec.values()):
        return _fill_columns(batches, spec, rows if max_rows is None else min(rows, max_rows),
                             file_pattern)
    parts: Dict[str, list] = {k: [] for k in columns}
    for batch in batches:
        for k in columns:
            parts[k].append(batch[k].numpy())
    if not parts[columns[0]]:
        raise ValueError(f"transformed examples {file_pattern!r} hold no rows")
    # One column at a time, its chunks dropped once joined.
    return {k: np.concatenate(parts.pop(k)) for k in list(parts)}


def _fill_columns(batches: tf.data.Dataset, spec: Mapping[str, tf.io.FixedLenFeature],
                  rows: int, file_pattern) -> Dict[str, np.ndarray]:
    """The parsed ``batches`` copied into columns of ``rows`` rows allocated up front."""
    out = {k: np.empty((rows, *f.shape), f.dtype.as_numpy_dtype) for k, f in spec.items()}
    first, at = next(iter(spec)), 0
    for batch in batches:
        n = int(batch[first].shape[0])
        if at + n > rows:
            raise ValueError(f"transformed examples {file_pattern!r} hold more than the {rows} "
                             f"rows counted before reading them (did the files change?)")
        for k, column in out.items():
            column[at:at + n] = batch[k].numpy()
        at += n
    if not at:
        raise ValueError(f"transformed examples {file_pattern!r} hold no rows")
    if at != rows:
        raise ValueError(f"transformed examples {file_pattern!r} hold {at} rows, expected the "
                         f"{rows} counted before reading them (did the files change?)")
    return out


def in_canonical_order(arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Sorts the rows of ``arrays`` by their values (every column, in name order), in place:
    an order that does not depend on the order in which the rows were read.

    Beam writes ImportExampleGen's and Transform's rows in the order its bundles finish,
    which changes between two runs of the same pipeline once the data is more than one bundle
    (at 200,000 rows, 114,459 of 144,075 train rows moved). :func:`from_arrays`' seeded
    shuffle permutes row positions, so the same rows in another order made other batches and
    another model. Rows equal in every column are interchangeable.

    The dict's columns are replaced one at a time, so that a column the caller holds nowhere
    else is freed as soon as its sorted copy exists: the sort needs the split's memory plus
    one column and the order (8 bytes per row), not a second copy of the split.

    Returns:
      ``arrays`` itself.
    """
    keys = sorted(arrays)
    rows = len(arrays[keys[0]])
    flat = [column for k in keys
            for column in np.asarray(arrays[k]).reshape(rows, -1).T]
    order = np.lexsort(flat[::-1])  # lexsort's primary key is its last
    del flat
    for k in keys:
        arrays[k] = np.asarray(arrays[k])[order]
    return arrays


def from_transformed(file_pattern, feature_spec: Dict, input_names: Sequence[str],
                     spec: features.DatasetSpec, batch_size: int, shuffle: bool = False,
                     seed: int = 0, shuffle_buffer: int = 50_000) -> tf.data.Dataset:
    """Reads gzipped transformed tf.Examples (TFX Transform output) in batches, each batch of
    records parsed whole (``tf.io.parse_example``), batches in parallel.

    With ``shuffle``: the files in a new order every epoch, and the rows permuted within
    windows of ``shuffle_buffer`` rows (rounded up to whole batches; see
    :func:`_permuted_windows`); a spec with variable-length features falls back to a
    per-record shuffle buffer of ``shuffle_buffer`` records.
    """
    files = _transformed_files(file_pattern)
    dense = all(isinstance(f, tf.io.FixedLenFeature) for f in feature_spec.values())
    ds = _records(files, shuffle_seed=seed if shuffle else None)
    if shuffle and not dense:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda s: tf.io.parse_example(s, feature_spec),
                                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle and dense:
        ds = _permuted_windows(ds, max(1, -(-shuffle_buffer // batch_size)), batch_size, seed)
    ds = ds.map(lambda d: features_and_labels(d, input_names, spec))
    return ds.prefetch(tf.data.AUTOTUNE)


_PREDICT_STEPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def predict_step(network: tf.keras.Model, features_spec):
    """``network(x, training=False)`` as a ``tf.function`` for batches of ``features_spec``
    (a ``(features, labels)`` dataset's ``element_spec[0]``), made once per network and
    spec: every batch size of every split runs the same trace (the session scores the eval
    and the validation split, each with a last, partial batch)."""
    made = _PREDICT_STEPS.get(network)
    if made is None or made[0] != features_spec:
        ref = weakref.ref(network)  # the cache must not keep the network alive
        made = (features_spec, tf.function(lambda x: ref()(x, training=False),
                                           input_signature=[features_spec]))
        _PREDICT_STEPS[network] = made
    return made[1]


def predict(network: tf.keras.Model, ds: tf.data.Dataset):
    """Runs ``network`` over ``ds``; returns (outputs dict of [N] arrays, labels dict)."""
    step = predict_step(network, ds.element_spec[0])
    outs: Dict[str, list] = {}
    labels: Dict[str, list] = {}
    for x, y in ds:
        for k, v in step(x).items():
            outs.setdefault(k, []).append(v.numpy())
        for k, v in y.items():
            labels.setdefault(k, []).append(v.numpy())
    return ({k: np.concatenate(v) for k, v in outs.items()},
            {k: np.concatenate(v) for k, v in labels.items()})


def collect_rows(ds: tf.data.Dataset, max_rows: int) -> Dict[str, np.ndarray]:
    """The first ``max_rows`` rows of a ``(features, labels)`` dataset as one array per key
    (features keep their ``[N, 1]`` shape; labels, e.g. ``click``, are ``[N]``)."""
    parts: Dict[str, list] = {}
    count = 0
    for x, y in ds:
        for k, v in {**x, **y}.items():
            parts.setdefault(k, []).append(v.numpy())
        count += int(next(iter(y.values())).shape[0])
        if count >= max_rows:
            break
    return {k: np.concatenate(v)[:max_rows] for k, v in parts.items()}


def count_records(file_pattern) -> int:
    """Rows in gzipped TFRecord files (a pattern or a list of patterns)."""
    ds = tf.data.TFRecordDataset(_transformed_files(file_pattern), compression_type="GZIP")
    return int(ds.reduce(np.int64(0), lambda n, _: n + 1).numpy())
