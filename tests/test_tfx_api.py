"""pipeline.tfx_api: the same objects as TFX's public ``tfx.v1``, without importing it."""
import subprocess
import sys

from pipeline.tfx_api import tfx


def _leaves(namespace, prefix="tfx"):
    """``dotted name -> object`` for every leaf of a nested SimpleNamespace."""
    out = {}
    for name, value in vars(namespace).items():
        if type(value).__name__ == "SimpleNamespace":
            out.update(_leaves(value, f"{prefix}.{name}"))
        else:
            out[f"{prefix}.{name}"] = value
    return out


def test_every_name_is_the_object_tfx_v1_exports():
    from tfx import v1

    leaves = _leaves(tfx)
    assert len(leaves) == 19, sorted(leaves)
    for dotted, value in leaves.items():
        public = v1
        for part in dotted.split(".")[1:]:
            public = getattr(public, part)
        if dotted == "tfx.types.standard_artifacts":  # v1 re-exports a subset of the module
            assert public.Model is value.Model and public.ModelBlessing is value.ModelBlessing
        else:
            assert public is value, dotted


def test_building_and_running_pipelines_never_imports_tfx_v1_or_its_extensions():
    """What the module is for: the runners import without ``tfx.v1`` (whose extensions cost
    about 10 s of start-up on this machine)."""
    script = ("import sys, pipeline.local_runner, pipeline.kubeflow_runner; "
              "print(sorted(m for m in sys.modules if m == 'tfx.v1' or 'aiplatform' in m))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
