"""``prepare``: the one way data enters both training paths.

Turns a configured data source (``data.path`` in CSV or Parquet, or rows of the synthetic
generator) into validated, typed, split examples under ``<work_dir>/prepared``::

    prepared/train/<source>.tfrecord.gz       gzipped tf.Examples, one file per source file
    prepared/validation/<source>.tfrecord.gz
    prepared/eval/<source>.tfrecord.gz
    prepared/dataset_spec.json                the completed DatasetSpec (types, optional keys)
    prepared/schema.pbtxt                     the TFDV schema derived from it
    prepared/content.sha256                   a digest of the typed rows, splits and spec

Steps: every header is checked against the roles before any row is read (a typo in a column
name fails at once); sparse columns declared ``dtype: auto`` are typed by one pass over the data
(integer when every value is an integer); then every row is validated and typed
(:mod:`transform.ingest.validate`), assigned to a split (:mod:`transform.ingest.splits`) and
written. Features with empty cells become optional. ``<work_dir>/prepared`` is written beside,
then moved in (one rename locally, file by file on a bucket), unless what is there already
holds the same content: then it is left as it was, files and modification times, so that a
cached pipeline run (``pipeline.enable_cache``) finds ImportExampleGen's input fingerprint
(file sizes and modification times) unchanged and reuses everything up to Transform. The
content is compared by digest, not by bytes: the same examples serialise in another feature
order from one process to the next (a tf.Example's features are a protobuf map). Every file
goes through ``tf.io.gfile``, so ``work_dir`` may be ``gs://...`` (or ``ram://`` in tests).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from typing import Dict, Iterator, List, Tuple

import pandas as pd

from schemas import features, storage
from transform.ingest import examples, readers, schema, splits, synthetic, validate

log = logging.getLogger(__name__)

PREPARED_DIR = "prepared"
SPEC_FILE = "dataset_spec.json"
SCHEMA_FILE = "schema.pbtxt"
CONTENT_FILE = "content.sha256"


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """Validated examples split for training, ready for ImportExampleGen or :func:`load_frames`.

    Attributes:
      spec: The completed dataset spec (sparse dtypes resolved, optional keys set).
      splits: ``train``/``validation``/``eval`` -> prepared TFRecord files.
      rows: Split -> rows written.
      stats: Source file -> its validation statistics.
      root: ``<work_dir>/prepared``; split ``s`` lives in ``<root>/<s>/``.
      hash_split: True when the rows were split by hash (no named split files).
      reused: True when ``root`` already held the same content and was left as it was.
    """

    spec: features.DatasetSpec
    splits: Dict[str, List[str]]
    rows: Dict[str, int]
    stats: Dict[str, validate.ValidationStats]
    root: str
    hash_split: bool
    reused: bool = False

    @property
    def total_stats(self) -> validate.ValidationStats:
        """Statistics summed over every source file."""
        total = validate.ValidationStats()
        for s in self.stats.values():
            total.merge(s)
        return total

    @property
    def schema_path(self) -> str:
        return f"{self.root}/{SCHEMA_FILE}"


def _generated_chunks(data_cfg, columns, chunk_rows: int
                      ) -> Iterator[Tuple[int, pd.DataFrame]]:
    frame = synthetic.generate(data_cfg.generate_rows, seed=data_cfg.seed,
                               num_actions=data_cfg.num_actions,
                               mode=data_cfg.synthetic_mode)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise validate.DataValidationError(
            f"generated data: no column(s) {missing}; with data.path null the roles must name "
            f"columns of the synthetic generator {list(synthetic.columns(data_cfg.num_actions))}")
    for start in range(0, len(frame), chunk_rows):
        part = frame.iloc[start:start + chunk_rows]
        yield start, pd.DataFrame({k: part[k].astype(str) for k in columns})


def _sources(data_cfg, fmt: str) -> Dict[str, List[str]]:
    if data_cfg.path is None:
        return {splits.ALL: [synthetic.GENERATED]}
    return splits.find_sources(data_cfg.path, fmt)


def _chunks(source: str, data_cfg, fmt: str, columns, chunk_rows: int):
    if source == synthetic.GENERATED:
        return _generated_chunks(data_cfg, columns, chunk_rows)
    return readers.iter_chunks(source, fmt, columns, chunk_rows)


def check_headers(data_cfg, spec: features.DatasetSpec) -> Dict[str, List[str]]:
    """Reads only the headers: every column the roles name must be there.

    Returns:
      Split -> source files (see :func:`transform.ingest.splits.find_sources`).

    Raises:
      FileNotFoundError, SplitError, DataValidationError: naming the file and the columns.
    """
    fmt = readers.format_of(data_cfg.path or "", data_cfg.adapter)
    sources = _sources(data_cfg, fmt)
    for files in sources.values():
        for path in files:
            if path == synthetic.GENERATED:
                continue
            extra = validate.check_header(path, readers.read_header(path, fmt), spec,
                                          data_cfg.extra_columns)
            if extra:
                log.info("%s: ignoring %d column(s) without a role: %s", path, len(extra),
                         extra[:10])
    return sources


def resolve_dtypes(data_cfg, spec: features.DatasetSpec, sources, chunk_rows: int
                   ) -> features.DatasetSpec:
    """``spec`` with every ``auto`` sparse dtype decided from the data (one pass)."""
    auto = [k for k in spec.sparse_keys if spec.sparse_dtypes.get(k, "auto") == "auto"]
    if not auto:
        return spec
    fmt = readers.format_of(data_cfg.path or "", data_cfg.adapter)
    is_int = {k: True for k in auto}
    for files in sources.values():
        for path in files:
            for _, text in _chunks(path, data_cfg, fmt, spec.columns, chunk_rows):
                for key, ok in validate.sparse_kinds(text, [k for k in auto if is_int[k]]
                                                     ).items():
                    is_int[key] = is_int[key] and ok
    resolved = {**spec.sparse_dtypes,
                **{k: features.INT if v else features.STRING for k, v in is_int.items()}}
    log.info("sparse column types: %s", {k: resolved[k] for k in auto})
    return dataclasses.replace(spec, sparse_dtypes=resolved)


def prepare(data_cfg, spec: features.DatasetSpec, work_dir: str,
            chunk_rows: int = readers.DEFAULT_CHUNK_ROWS) -> PreparedData:
    """Validates, types, splits and writes the data (see the module docstring).

    Args:
      data_cfg: A resolved ``schemas.config.DataConfig``.
      spec: ``schemas.features.spec_from_config(data_cfg, ...)``.
      work_dir: ``prepared/`` goes under it (a local path or a ``tf.io.gfile`` URL).
      chunk_rows: Rows per chunk (memory bound of validation).

    Returns:
      The :class:`PreparedData`.

    Raises:
      FileNotFoundError: The path does not exist or has no data files.
      transform.ingest.splits.SplitError: Split files that do not form splits.
      transform.ingest.validate.DataValidationError: A bad file or row (naming file, row,
        column, expectation and value), unless ``skip_bad_rows`` drops bad rows.
    """
    import tensorflow as tf

    t0 = time.perf_counter()
    sources = check_headers(data_cfg, spec)
    spec = resolve_dtypes(data_cfg, spec, sources, chunk_rows)
    fmt = readers.format_of(data_cfg.path or "", data_cfg.adapter)
    hash_split = list(sources) == [splits.ALL]
    carve_validation = splits.VALIDATION not in sources
    root = f"{work_dir}/{PREPARED_DIR}"
    # Not "<root>.tmp": a name with ``root`` as prefix makes ``exists(root)`` true on
    # filesystems that match by prefix (TF's ram://).
    staging = f"{work_dir}/.staging-{PREPARED_DIR}"
    if tf.io.gfile.exists(staging):
        tf.io.gfile.rmtree(staging)
    stats: Dict[str, validate.ValidationStats] = {}
    rows = {s: 0 for s in splits.SPLITS}
    files: Dict[str, List[str]] = {s: [] for s in splits.SPLITS}
    missing: Dict[str, int] = {}
    positives = {column: 0 for column in spec.label_keys.values()}  # in the train split
    used_names = set()
    content = hashlib.sha256()
    for source_split, paths in sources.items():
        for path in paths:
            name = os.path.basename(path).split(".")[0] or "data"
            while name in used_names:
                name += "_"
            used_names.add(name)
            file_stats = validate.ValidationStats(files=[path])
            writers = {}
            for offset, text in _chunks(path, data_cfg, fmt, spec.columns, chunk_rows):
                chunk = validate.type_chunk(text, spec, path, offset, data_cfg.skip_bad_rows)
                file_stats.merge(validate.ValidationStats(
                    rows_read=chunk.rows_read, rows_kept=len(chunk.frame),
                    dropped=chunk.dropped, missing=chunk.missing))
                split_of = splits.assign(chunk.frame, source_split, data_cfg.eval_percent,
                                         data_cfg.validation_percent, carve_validation)
                for split in splits.SPLITS:
                    part = chunk.frame[split_of == split]
                    if not len(part):
                        continue
                    if split not in writers:
                        writers[split] = examples.SplitWriter(f"{staging}/{split}", name)
                    writers[split].write(examples.encode(part, spec))
                    _digest_rows(content, split, name, part)
                    if split == splits.TRAIN:
                        for column in positives:
                            positives[column] += int((part[column] == 1).sum())
            for split, writer in writers.items():
                files[split].append(writer.close())
                rows[split] += writer.rows
            stats[path] = file_stats
            for column, count in file_stats.missing.items():
                missing[column] = missing.get(column, 0) + count
    empty = [s for s in splits.SPLITS if not rows[s]]
    if empty:
        raise validate.DataValidationError(
            f"{data_cfg.path or 'generated data'}: split(s) {empty} got no rows (rows per split "
            f"{rows}); give more rows, or adjust data.eval_percent / data.validation_percent")
    _warn_single_class_labels(spec, positives, rows[splits.TRAIN])
    optional = tuple(k for k in spec.feature_keys if missing.get(k))
    spec = dataclasses.replace(spec, optional_keys=optional)
    with tf.io.gfile.GFile(f"{staging}/{SPEC_FILE}", "w") as f:
        json.dump(features.spec_to_dict(spec), f, indent=1)
    schema.write_schema(spec, f"{staging}/{SCHEMA_FILE}")
    for name in (SPEC_FILE, SCHEMA_FILE):
        with tf.io.gfile.GFile(f"{staging}/{name}", "rb") as f:
            content.update(name.encode() + b"\0" + f.read())
    digest = content.hexdigest()
    with tf.io.gfile.GFile(f"{staging}/{CONTENT_FILE}", "w") as f:
        f.write(digest + "\n")
    reused = _same_content(staging, root)
    if reused:
        tf.io.gfile.rmtree(staging)
    else:
        storage.replace_tree(staging, root)
    files = {s: [p.replace(staging, root, 1) for p in v] for s, v in files.items()}
    log.info("prepared %s rows per split in %.1fs (optional features: %s)%s", rows,
             time.perf_counter() - t0, list(optional) or "none",
             f"; the same content as {root} held (sha256 {digest[:12]}): kept it as it was"
             if reused else "")
    return PreparedData(spec=spec, splits=files, rows=rows, stats=stats, root=root,
                        hash_split=hash_split, reused=reused)


def _warn_single_class_labels(spec: features.DatasetSpec, positives: Dict[str, int],
                              train_rows: int) -> None:
    """Logs a warning for each task whose label is all 0 or all 1 in the train split: its
    head cannot learn and its AUCs are NaN (a label mapped to the wrong column, often)."""
    for task, column in spec.label_keys.items():
        count = positives[column]
        if count in (0, train_rows):
            log.warning("data.labels.%s: column %r is %d in all %d train rows: the %s head "
                        "cannot learn from it and its AUCs will be NaN (is it the right "
                        "column?)", task, column, 1 if count else 0, train_rows, task)


def _digest_rows(content, split: str, name: str, part: pd.DataFrame) -> None:
    """Adds a chunk's typed rows (values, column names and dtypes) bound for ``split``'s file
    ``name`` to the ``content`` digest."""
    header = [split, name] + [f"{c}:{t}" for c, t in part.dtypes.items()]
    content.update("\0".join(header).encode() + b"\0")
    content.update(pd.util.hash_pandas_object(part, index=False).to_numpy().tobytes())


def _same_content(staging: str, root: str) -> bool:
    """True when ``root`` holds the content digest ``staging`` holds, the same split files and
    (at least) its top-level files; a top-level file written later beside them (the ADM
    schema) does not count, a stray file in a split folder does (ImportExampleGen reads it)."""
    import tensorflow as tf

    def listing(folder):
        files = [f"{d}/{n}"[len(folder) + 1:] for d, _, names in tf.io.gfile.walk(folder)
                 for n in names]
        return {f for f in files if "/" in f}, {f for f in files if "/" not in f}

    def digest(folder):
        path = f"{folder}/{CONTENT_FILE}"
        if not tf.io.gfile.exists(path):
            return None
        with tf.io.gfile.GFile(path) as f:
            return f.read()

    if not tf.io.gfile.exists(root) or digest(root) != digest(staging):
        return False
    (root_splits, root_top), (new_splits, new_top) = listing(root), listing(staging)
    return root_splits == new_splits and new_top <= root_top


def load_frames(prepared: PreparedData) -> Dict[str, pd.DataFrame]:
    """The prepared splits in memory (typed as ``examples.read_frame`` gives them)."""
    return {split: examples.read_frame(paths, prepared.spec)
            for split, paths in prepared.splits.items()}


def read_spec(root: str) -> features.DatasetSpec:
    """The completed spec that :func:`prepare` wrote under ``root`` (``.../prepared``)."""
    import tensorflow as tf

    path = f"{root}/{SPEC_FILE}"
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} not found: run `funnelrank prepare` with the same "
                                f"config and --root first")
    with tf.io.gfile.GFile(path) as f:
        return features.spec_from_dict(json.load(f))


def describe_drops(prepared: PreparedData) -> str:
    """One line: rows read and kept, and the rows dropped per reason (``skip_bad_rows``)."""
    total = prepared.total_stats
    line = f"validated {total.rows_read} rows, kept {total.rows_kept}"
    if total.dropped:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(total.dropped.items()))
        line += f", dropped {total.rows_dropped} ({reasons})"
    return line
