"""trainer.data.from_arrays: the ``funnelrank train`` input pipeline."""
import re

import numpy as np
import pytest
import tensorflow as tf

from schemas import features
from tests import fixtures
from trainer.data import (from_arrays, from_transformed, in_canonical_order,
                          load_transformed)


def _epoch_rows(ds):
    """Row ids (the ``price_xf`` column, made unique below) in the order one epoch gives them."""
    return np.concatenate([x["price_xf"].numpy().reshape(-1) for x, _ in ds]).astype(int)


@pytest.fixture
def numbered():
    _, arrays, info = fixtures.tiny_arrays(1000)
    arrays = dict(arrays)
    arrays["price_xf"] = np.arange(1000, dtype=np.float32).reshape(arrays["price_xf"].shape)
    return arrays, info


def test_batches_keep_rows_together_with_their_labels(numbered):
    arrays, info = numbered
    ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 64, shuffle=True, seed=4)
    for x, y in ds.take(3):
        rows = x["price_xf"].numpy().reshape(-1).astype(int)
        np.testing.assert_array_equal(x["item_xf"].numpy().reshape(-1),
                                      arrays["item_xf"].reshape(-1)[rows])
        assert sorted(y) == ["ctr", "cvr", "user"]  # one label per task, named by the task
        np.testing.assert_array_equal(y["ctr"].numpy(), arrays["click_xf"].reshape(-1)[rows])
        np.testing.assert_array_equal(y["cvr"].numpy(),
                                      arrays["conversion_xf"].reshape(-1)[rows])
        np.testing.assert_array_equal(y["user"].numpy(), arrays["user_xf"].reshape(-1)[rows])
        assert y["ctr"].shape == (64,) and x["item_xf"].shape == (64, 1)


def test_columns_keep_their_dtype_and_shape_through_the_grouped_gather(numbered):
    arrays, info = numbered
    x, y = next(iter(from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 50)))
    for k in info.input_names:
        assert x[k].dtype == tf.as_dtype(arrays[k].dtype), k
        assert x[k].shape == (50, *arrays[k].shape[1:]), k
        np.testing.assert_array_equal(x[k].numpy(), arrays[k][:50])


def test_columns_of_different_lengths_are_refused(numbered):
    arrays, info = numbered
    short = {**arrays, "price_xf": arrays["price_xf"][:10]}
    with pytest.raises(ValueError, match=r"from_arrays: column 'price_xf' has 10 rows, "
                                         r"expected 1000"):
        from_arrays(short, info.input_names, fixtures.TINY_SPEC, 50)


def test_unshuffled_keeps_order_and_the_last_partial_batch(numbered):
    arrays, info = numbered
    ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 300)
    np.testing.assert_array_equal(_epoch_rows(ds), np.arange(1000))
    assert [int(x["price_xf"].shape[0]) for x, _ in ds] == [300, 300, 300, 100]
    dropped = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 300, drop_remainder=True)
    assert [int(x["price_xf"].shape[0]) for x, _ in dropped] == [300, 300, 300]


def test_shuffle_is_a_full_permutation_new_each_epoch_and_seeded(numbered):
    arrays, info = numbered
    tf.keras.utils.set_random_seed(11)
    ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 128, shuffle=True, seed=2)
    first, second = _epoch_rows(ds), _epoch_rows(ds)
    np.testing.assert_array_equal(np.sort(first), np.arange(1000))
    np.testing.assert_array_equal(np.sort(second), np.arange(1000))
    assert not np.array_equal(first, second)  # reshuffled each epoch
    assert abs(np.corrcoef(first, np.arange(1000))[0, 1]) < 0.2  # not a local shuffle
    tf.keras.utils.set_random_seed(11)
    again = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 128, shuffle=True, seed=2)
    np.testing.assert_array_equal(_epoch_rows(again), first)


def test_shuffled_batches_cover_the_rows_once_and_seeds_differ(numbered):
    """One permutation per pass, cut into batches: the last batch partial, or dropped with a
    static batch dimension; another seed gives another order."""
    arrays, info = numbered
    tf.keras.utils.set_random_seed(5)
    ds = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 300, shuffle=True, seed=3)
    assert [int(x["price_xf"].shape[0]) for x, _ in ds] == [300, 300, 300, 100]
    other = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 300, shuffle=True, seed=4)
    assert not np.array_equal(_epoch_rows(ds), _epoch_rows(other))
    dropped = from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 300, shuffle=True,
                          seed=3, drop_remainder=True)
    assert dropped.element_spec[0]["price_xf"].shape[0] == 300
    kept = _epoch_rows(dropped)
    assert len(kept) == 900 and len(set(kept.tolist())) == 900


def test_labels_are_keyed_by_task_for_any_tasks():
    """Independent tasks (no funnel, no user): one ``[B]`` label per task name, in order."""
    spec = features.DatasetSpec(name="own", sparse_keys=("s",), dense_keys=(),
                                label_keys={"income": "y0", "married": "y1", "home": "y2"})
    arrays = {"s_xf": np.arange(6, dtype=np.int64).reshape(-1, 1)}
    for i in range(3):
        arrays[f"y{i}_xf"] = ((np.arange(6) + i) % 2).astype(np.float32).reshape(-1, 1)
    (x, y), = list(from_arrays(arrays, ["s_xf"], spec, 6))
    assert list(x) == ["s_xf"] and list(y) == ["income", "married", "home"]
    for i, task in enumerate(y):
        np.testing.assert_array_equal(y[task].numpy(), (np.arange(6) + i) % 2)


def test_a_missing_column_is_named(numbered):
    arrays, info = numbered
    del arrays["click_xf"]
    with pytest.raises(KeyError, match=r"columns \['click_xf'\] are not in the arrays"):
        from_arrays(arrays, info.input_names, fixtures.TINY_SPEC, 64)


def test_load_transformed_reads_every_row_back_and_feeds_the_same_rows(numbered, tmp_path):
    """``train.in_memory``: the TFRecords parsed once hold the rows from_transformed reads."""
    arrays, info = numbered
    columns = sorted(arrays)
    fixtures.write_gzipped_examples({k: v[:600] for k, v in arrays.items()}, tmp_path / "p-0.gz",
                            columns)
    fixtures.write_gzipped_examples({k: v[600:] for k, v in arrays.items()}, tmp_path / "p-1.gz",
                            columns)
    spec = fixtures.scalar_feature_spec(arrays, columns)
    loaded = load_transformed(str(tmp_path / "p-*.gz"), spec, columns, chunk=128)
    order = np.argsort(loaded["price_xf"])  # the row ids: files are read interleaved
    for k in columns:
        np.testing.assert_array_equal(loaded[k][order], arrays[k].reshape(-1))

    def rows(ds):
        parts = [{**x, **y} for x, y in ds]
        out = {k: np.concatenate([p[k].numpy().reshape(len(p["ctr"]), -1) for p in parts])
               for k in parts[0]}
        return {k: v[np.argsort(out["price_xf"][:, 0])] for k, v in out.items()}

    direct = rows(from_transformed(str(tmp_path / "p-*.gz"), spec, info.input_names,
                                   fixtures.TINY_SPEC, 256))
    via_memory = rows(from_arrays(loaded, info.input_names, fixtures.TINY_SPEC, 256))
    assert sorted(direct) == sorted(via_memory)
    for k in direct:
        np.testing.assert_array_equal(direct[k], via_memory[k])


def test_canonical_order_sorts_rows_by_every_column_in_name_order():
    """Against a NumPy reference: the rows as tuples (columns in name order, a [N, 2] column
    as two), sorted; each column's dtype and shape kept."""
    rng = np.random.default_rng(3)
    arrays = {"b_xf": rng.integers(0, 3, (200, 1)),  # few values: ties go to the next column
              "a_xf": rng.integers(0, 2, (200, 2)),
              "c_xf": rng.normal(size=(200, 1)).astype(np.float32)}
    given = dict(arrays)
    got = in_canonical_order(given)
    assert got is given  # sorted in place
    table = np.concatenate([arrays[k].reshape(200, -1).astype(np.float64)
                            for k in sorted(arrays)], axis=1)
    want = np.array(sorted(map(tuple, table)))
    np.testing.assert_array_equal(np.concatenate(
        [got[k].reshape(200, -1).astype(np.float64) for k in sorted(got)], axis=1), want)
    for k in arrays:
        assert got[k].dtype == arrays[k].dtype and got[k].shape == arrays[k].shape, k


def test_canonical_order_needs_one_column_more_not_a_second_copy_of_the_split():
    """The columns are replaced one at a time, each freed once its sorted copy exists: the
    peak of new allocations (numpy reports them to ``tracemalloc``) stays under three columns'
    bytes. A sort that builds a second dict peaks at the whole split (ten columns here)."""
    import tracemalloc

    rows = 400_000
    rng = np.random.default_rng(4)
    tracemalloc.start()  # before the columns exist: freeing them counts only if traced
    try:
        arrays = {f"c{i}_xf": rng.integers(0, 1000, (rows, 1)) for i in range(10)}
        column_bytes = arrays["c0_xf"].nbytes
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        in_canonical_order(arrays)
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert column_bytes <= peak < 3 * column_bytes, (peak, column_bytes)
    first = arrays["c0_xf"][:, 0]
    assert np.all(first[1:] >= first[:-1])


def test_the_same_rows_written_in_another_order_load_into_the_same_training_arrays(numbered,
                                                                                   tmp_path):
    """What Beam does between two runs of one pipeline (rows in another order, other files)
    changes nothing that training reads: ``SplitData.in_memory`` gives equal arrays."""
    from trainer.session import SplitData

    arrays, _ = numbered
    columns = sorted(arrays)
    spec = fixtures.scalar_feature_spec(arrays, columns)
    perm = np.random.default_rng(5).permutation(1000)
    fixtures.write_gzipped_examples(arrays, tmp_path / "a-0.gz", columns)
    fixtures.write_gzipped_examples({k: v[perm[:300]] for k, v in arrays.items()},
                                    tmp_path / "b-0.gz", columns)
    fixtures.write_gzipped_examples({k: v[perm[300:]] for k, v in arrays.items()},
                                    tmp_path / "b-1.gz", columns)
    first = SplitData(files=str(tmp_path / "a-*.gz"), feature_spec=spec).in_memory(columns)
    second = SplitData(files=str(tmp_path / "b-*.gz"), feature_spec=spec,  # the TFX Trainer's
                       count=1000).in_memory(columns)  # counted rows: columns filled in place
    for k in columns:
        np.testing.assert_array_equal(first.arrays[k], second.arrays[k], err_msg=k)
        assert first.arrays[k].shape == (1000,)  # parsed as scalars: load_transformed's shape
    assert not np.array_equal(  # read as written, the two orders differ
        load_transformed(str(tmp_path / "a-*.gz"), spec, columns)["price_xf"],
        load_transformed(str(tmp_path / "b-*.gz"), spec, columns)["price_xf"])


def test_load_transformed_frees_each_columns_chunks_once_joined(numbered, tmp_path,
                                                                 monkeypatch):
    """Each column's parsed chunks are released right after they are joined: when a column is
    concatenated, no chunk of the columns joined before it is alive (at the peak the load
    holds the split and one column, not the chunks and the joined split side by side)."""
    import weakref

    arrays, _ = numbered
    columns = sorted(arrays)
    fixtures.write_gzipped_examples(arrays, tmp_path / "p-0.gz", columns)
    spec = fixtures.scalar_feature_spec(arrays, columns)
    joined, alive_at_join = [], []
    concatenate = np.concatenate

    def tracking(chunks, *args, **kwargs):
        alive_at_join.append(sum(ref() is not None for refs in joined for ref in refs))
        joined.append([weakref.ref(c) for c in chunks])
        return concatenate(chunks, *args, **kwargs)

    monkeypatch.setattr(np, "concatenate", tracking)
    load_transformed(str(tmp_path / "p-*.gz"), spec, columns, chunk=128)
    monkeypatch.undo()
    assert len(joined) == len(columns) and len(joined[0]) == -(-1000 // 128)
    assert alive_at_join == [0] * len(columns)


@pytest.mark.parametrize("max_rows", [None, 300])
def test_load_transformed_with_the_row_count_fills_the_columns_without_joining_chunks(
        numbered, tmp_path, monkeypatch, max_rows):
    """Given ``rows`` (the TFX Trainer counts the records), the columns are allocated once and
    filled: the same arrays as the chunks joined, and no concatenation of chunks (which
    would hold the chunks and the joined split at once)."""
    arrays, _ = numbered
    columns = sorted(arrays)
    fixtures.write_gzipped_examples({k: v[:600] for k, v in arrays.items()},
                                    tmp_path / "p-0.gz", columns)
    fixtures.write_gzipped_examples({k: v[600:] for k, v in arrays.items()},
                                    tmp_path / "p-1.gz", columns)
    spec = fixtures.scalar_feature_spec(arrays, columns)
    pattern = str(tmp_path / "p-*.gz")
    joined = load_transformed(pattern, spec, columns, chunk=128, max_rows=max_rows)

    def no_join(*args, **kwargs):
        raise AssertionError("chunks joined")

    monkeypatch.setattr(np, "concatenate", no_join)
    filled = load_transformed(pattern, spec, columns, chunk=128, max_rows=max_rows, rows=1000)
    monkeypatch.undo()
    assert sorted(filled) == columns
    for k in columns:
        assert filled[k].dtype == joined[k].dtype and filled[k].shape == joined[k].shape, k
        np.testing.assert_array_equal(filled[k], joined[k])
    assert len(filled["price_xf"]) == (max_rows or 1000)


@pytest.mark.parametrize("rows, message", [
    (999, r"hold more than the 999 rows counted before reading them \(did the files change"),
    (1001, r"hold 1000 rows, expected the 1001 counted before reading them"),
])
def test_load_transformed_names_a_row_count_the_files_do_not_match(numbered, tmp_path, rows,
                                                                   message):
    arrays, _ = numbered
    columns = sorted(arrays)
    fixtures.write_gzipped_examples(arrays, tmp_path / "p-0.gz", columns)
    spec = fixtures.scalar_feature_spec(arrays, columns)
    pattern = str(tmp_path / "p-*.gz")
    with pytest.raises(ValueError, match=re.escape(repr(pattern)) + " " + message):
        load_transformed(pattern, spec, columns, chunk=128, rows=rows)


def test_load_transformed_reads_at_most_max_rows(numbered, tmp_path):
    arrays, _ = numbered
    columns = sorted(arrays)
    for i, part in enumerate((slice(0, 600), slice(600, None))):
        fixtures.write_gzipped_examples({k: v[part] for k, v in arrays.items()},
                                        tmp_path / f"p-{i}.gz", columns)
    spec = fixtures.scalar_feature_spec(arrays, columns)
    loaded = load_transformed(str(tmp_path / "p-*.gz"), spec, columns, chunk=128, max_rows=300)
    assert {len(v) for v in loaded.values()} == {300}
    rows = np.searchsorted(arrays["price_xf"].reshape(-1), loaded["price_xf"])  # row ids
    assert len(set(rows)) == 300 and rows.min() < 600 and rows.max() >= 600  # both files
    for k in columns:
        np.testing.assert_array_equal(loaded[k], arrays[k].reshape(-1)[rows])


def test_load_transformed_names_missing_columns(tmp_path):
    with pytest.raises(KeyError, match=r"columns \['click_xf'\] are not in the transformed"):
        load_transformed(str(tmp_path / "*.gz"), {"item_xf": None}, ["click_xf"])


def test_load_transformed_names_a_pattern_without_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no transformed examples match"):
        load_transformed(str(tmp_path / "missing-*.gz"),
                         {"click_xf": tf.io.FixedLenFeature([], tf.int64)}, ["click_xf"])


def _write_shards(arrays, tmp_path, shards):
    columns = sorted(arrays)
    rows = len(arrays["price_xf"])
    for i, part in enumerate(np.array_split(np.arange(rows), shards)):
        fixtures.write_gzipped_examples({k: v[part] for k, v in arrays.items()},
                                        tmp_path / f"s-{i:02d}.gz", columns)
    return str(tmp_path / "s-*.gz"), fixtures.scalar_feature_spec(arrays, columns)


def test_more_files_than_open_readers_still_gives_every_row_once(numbered, tmp_path):
    """The streaming reader keeps at most 16 files open (``_records``): 20 shards of 50 rows
    give each of the 1,000 rows exactly once, and the first batch mixes the first 16 files."""
    arrays, info = numbered
    pattern, spec = _write_shards(arrays, tmp_path, 20)
    got = _epoch_rows(from_transformed(pattern, spec, info.input_names, fixtures.TINY_SPEC, 64))
    np.testing.assert_array_equal(np.sort(got), np.arange(1000))
    np.testing.assert_array_equal(got[:16] // 50, np.arange(16))  # one record per file in turn
    loaded = load_transformed(pattern, spec, sorted(arrays), chunk=128)
    np.testing.assert_array_equal(np.sort(loaded["price_xf"]).astype(int), np.arange(1000))


def test_shuffled_streaming_gives_every_row_once_per_epoch_with_its_columns(numbered, tmp_path):
    arrays, info = numbered
    pattern, spec = _write_shards(arrays, tmp_path, 3)
    ds = from_transformed(pattern, spec, info.input_names, fixtures.TINY_SPEC, 64, shuffle=True,
                          seed=3, shuffle_buffer=256).repeat(2)
    batches = [(x, y) for x, y in ds]
    sizes = [len(y["ctr"]) for _, y in batches]
    assert sizes == ([64] * 15 + [40]) * 2  # whole batches, the remainder last in each epoch
    got = np.concatenate([x["price_xf"].numpy().reshape(-1) for x, _ in batches]).astype(int)
    first, second = got[:1000], got[1000:]
    np.testing.assert_array_equal(np.sort(first), np.arange(1000))
    np.testing.assert_array_equal(np.sort(second), np.arange(1000))
    assert not np.array_equal(first, second)  # a new order every epoch
    for x, y in batches:  # every row keeps its own columns and labels
        rows = x["price_xf"].numpy().reshape(-1).astype(int)
        np.testing.assert_array_equal(x["item_xf"].numpy().reshape(-1),
                                      arrays["item_xf"].reshape(-1)[rows])
        np.testing.assert_array_equal(y["ctr"].numpy(), arrays["click_xf"].reshape(-1)[rows])


def test_streaming_shuffle_permutes_rows_within_a_window_of_shuffle_buffer_rows(numbered,
                                                                                 tmp_path):
    """One file read in order, 64-row batches, ``shuffle_buffer`` 100 (rounded up to two whole
    batches): each pair of batches holds exactly the next 128 rows, permuted."""
    arrays, info = numbered
    pattern, spec = _write_shards(arrays, tmp_path, 1)
    got = _epoch_rows(from_transformed(pattern, spec, info.input_names, fixtures.TINY_SPEC, 64,
                                       shuffle=True, seed=5, shuffle_buffer=100))
    for start in range(0, 1000, 128):
        window = got[start:start + 128]
        np.testing.assert_array_equal(np.sort(window),
                                      np.arange(start, min(start + 128, 1000)))
    assert not np.array_equal(got[:128], np.arange(128))


def test_streaming_with_variable_length_features_shuffles_records(numbered, tmp_path):
    """A spec with a VarLen feature (parsed as a SparseTensor) takes the per-record shuffle
    buffer; every row still comes once, in a shuffled order."""
    arrays, info = numbered
    pattern, spec = _write_shards(arrays, tmp_path, 2)
    spec["tags_xf"] = tf.io.VarLenFeature(tf.int64)  # absent from the records: empty rows
    got = _epoch_rows(from_transformed(pattern, spec, info.input_names, fixtures.TINY_SPEC, 64,
                                       shuffle=True, seed=5, shuffle_buffer=1000))
    np.testing.assert_array_equal(np.sort(got), np.arange(1000))
    assert not np.array_equal(got, np.arange(1000)) and len(got) == 1000


def test_streaming_shuffle_is_new_each_epoch_and_repeatable_for_a_seed(numbered, tmp_path):
    """Keras starts a new iterator every epoch: the windows' permutations must change with it
    (a seeded stateful op in a map would repeat them), and the same seeds give the same
    orders."""
    arrays, info = numbered
    pattern, spec = _write_shards(arrays, tmp_path, 1)

    def two_epochs():
        tf.random.set_seed(11)
        ds = from_transformed(pattern, spec, info.input_names, fixtures.TINY_SPEC, 64,
                              shuffle=True, seed=5, shuffle_buffer=256)
        return _epoch_rows(ds), _epoch_rows(ds)  # two iterators, as two fit epochs

    first, second = two_epochs()
    assert not np.array_equal(first, second)
    again = two_epochs()
    np.testing.assert_array_equal(again[0], first)
    np.testing.assert_array_equal(again[1], second)


def test_shuffled_streaming_distributes_over_two_replicas(numbered, tmp_path, two_cpu_strategy):
    """MirroredStrategy splits each global batch of the windowed stream between the replicas:
    every row arrives once per epoch, with its own labels."""
    arrays, info = numbered
    pattern, spec = _write_shards(arrays, tmp_path, 2)
    ds = from_transformed(pattern, spec, info.input_names, fixtures.TINY_SPEC, 128, shuffle=True,
                          seed=2, shuffle_buffer=256)
    rows, per_replica = [], []
    for x, y in two_cpu_strategy.experimental_distribute_dataset(ds):
        for xr, yr in zip(two_cpu_strategy.experimental_local_results(x),
                          two_cpu_strategy.experimental_local_results(y)):
            ids = xr["price_xf"].numpy().reshape(-1).astype(int)
            np.testing.assert_array_equal(yr["ctr"].numpy(), arrays["click_xf"].reshape(-1)[ids])
            rows.append(ids)
            per_replica.append(len(ids))
    np.testing.assert_array_equal(np.sort(np.concatenate(rows)), np.arange(1000))
    assert max(per_replica) == 64  # the global batch of 128, halved
