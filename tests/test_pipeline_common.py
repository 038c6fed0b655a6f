"""pipeline.common: what every runner does before building the pipeline."""
import os
import uuid

import apache_beam
import pytest
import tensorflow as tf

from pipeline.common import beam_pipeline_args, schema_by_content

IMAGE = "gcr.io/funnelrank/funnelrank:0.1.0"
DEFAULT_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


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


def test_beam_args_tell_tfx_the_direct_runner_needs_no_tfx_sdist(monkeypatch):
    """On the DirectRunner, TFX's Beam executors take the args as they are: no sdist of TFX is
    built for workers that are the component's own process (1-1.5 s per Beam component)."""
    from tfx.utils import dependency_utils

    def no_build():
        raise AssertionError("TFX would build its sdist")

    monkeypatch.setattr(dependency_utils, "build_ephemeral_package", no_build)
    for given in (DEFAULT_ARGS, ["--direct_running_mode=multi_processing"],
                  ["--runner=DirectRunner"]):
        args = beam_pipeline_args(given, IMAGE)
        assert args == given + [f"--update_compatibility_version={apache_beam.__version__}",
                                f"--sdk_container_image={IMAGE}"]
        assert dependency_utils.make_beam_dependency_flags(args) == args
    with pytest.raises(AssertionError, match="sdist"):  # what the option avoids
        dependency_utils.make_beam_dependency_flags(beam_pipeline_args(DEFAULT_ARGS))


@pytest.mark.parametrize("given", [
    ["--runner=DataflowRunner", "--project=p"],  # its workers need what the user stages
    ["--runner=FlinkRunner", "--environment_type=DOCKER"],
    DEFAULT_ARGS + ["--setup_file=./setup.py"],  # the user said how
    DEFAULT_ARGS + ["--sdk_container_image=my/image:1"],
])
def test_beam_args_add_no_image_off_the_direct_runner_or_when_dependencies_are_given(given):
    args = beam_pipeline_args(given, IMAGE)
    assert args == given + [f"--update_compatibility_version={apache_beam.__version__}"]
