"""pipeline.common: what every runner does before building the pipeline."""
import os
import uuid

import pytest
import tensorflow as tf

from pipeline.common import schema_by_content


@pytest.mark.parametrize("where", ["local", "ram"])
def test_schema_path_changes_with_its_content_and_only_then(tmp_path, where):
    """ImportSchemaGen is cached by its path alone: the path it gets must change when, and
    only when, the schema's bytes do."""
    base = str(tmp_path) if where == "local" else f"ram://common-{uuid.uuid4().hex}"
    source, folder = f"{base}/prepared/schema.pbtxt", f"{base}/data/schemas"
    tf.io.gfile.makedirs(f"{base}/prepared")
    with tf.io.gfile.GFile(source, "w") as f:
        f.write('feature { name: "a" type: INT }\n')
    first = schema_by_content(source, folder)
    assert first.startswith(folder + "/") and first.endswith("/schema.pbtxt")
    assert tf.io.gfile.GFile(first).read() == 'feature { name: "a" type: INT }\n'
    assert schema_by_content(source, folder) == first  # the same bytes: the same path
    tf.io.gfile.remove(source)  # (ram:// appends to a file opened for writing)
    with tf.io.gfile.GFile(source, "w") as f:  # rewritten, as new data would
        f.write('feature { name: "a" type: FLOAT }\n')
    second = schema_by_content(source, folder)
    assert second != first
    assert tf.io.gfile.GFile(second).read() == 'feature { name: "a" type: FLOAT }\n'
    assert tf.io.gfile.GFile(first).read() == 'feature { name: "a" type: INT }\n'  # untouched
    assert not tf.io.gfile.glob(f"{folder}/*/*.tmp")
    if where == "local":
        assert sorted(os.listdir(folder)) == sorted(
            os.path.basename(os.path.dirname(p)) for p in (first, second))


def test_a_missing_schema_is_named(tmp_path):
    with pytest.raises(tf.errors.NotFoundError, match="nope.pbtxt"):
        schema_by_content(str(tmp_path / "nope.pbtxt"), str(tmp_path / "schemas"))
