"""What ships: the wheel (package data: the configs) and the Docker image Kubeflow runs.

Docker cannot run on the test machines, so the Dockerfile is checked as text: the pinned
lock installed with uv, every package and the configs copied and installed, the entry point
and the environment the components need."""
import glob
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = sorted(d for d in os.listdir(ROOT) if d not in ("tests", "benchmarks") and
                  os.path.isfile(os.path.join(ROOT, d, "__init__.py")))


def dockerfile():
    """``(instruction, argument)`` pairs of the Dockerfile (continuations joined)."""
    text = open(os.path.join(ROOT, "Dockerfile")).read()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages():
    """The Dockerfile's stages: lists of instructions, each starting with its FROM."""
    found = []
    for word, arg in dockerfile():
        if word == "FROM":
            found.append([])
        found[-1].append((word, arg))
    return found


def test_every_stage_is_python_310_slim():
    assert [s[0][1].split()[0] for s in stages()] == ["python:3.10-slim"] * len(stages())


def test_the_lock_is_installed_with_uv_before_the_code_is_copied():
    build = stages()[0]
    runs = [arg for word, arg in build if word == "RUN"]
    copies = [arg for word, arg in build if word == "COPY"]
    assert any(re.search(r"pip install .*uv==[\d.]+", r) for r in runs)
    lock = [i for i, (w, a) in enumerate(build) if w == "COPY" and "requirements/lock.txt" in a]
    install = [i for i, (w, a) in enumerate(build)
               if w == "RUN" and re.search(r"uv pip install .*-r \S*requirements/lock.txt", a)]
    code = [i for i, (w, a) in enumerate(build) if w == "COPY" and a.startswith("funnelrank/")]
    assert lock and install and code and lock[0] < install[0] < code[0]
    # every package of the project and the configs are copied, then installed, not editable
    sources = {a.split()[0].rstrip("/") for a in copies}
    assert set(PACKAGES) | {"configs", "setup.py"} <= sources, sources
    for source in sources - {"requirements/lock.txt"}:
        assert os.path.exists(os.path.join(ROOT, source)), source
    package_install = [r for r in runs if re.search(r"uv pip install .*--no-deps /src$", r)]
    assert package_install and not any("-e " in r for r in runs)


def test_runtime_stage_has_the_entry_point_and_the_environment():
    runtime = stages()[-1]
    assert ("COPY", "--from=build /opt/venv /opt/venv") in runtime
    env = " ".join(arg for word, arg in runtime if word == "ENV")
    assert "TF_USE_LEGACY_KERAS=1" in env  # TFX imports TensorFlow before our code runs
    assert "PATH=/opt/venv/bin:" in env  # Kubeflow runs `python -m tfx...`: the venv's python
    assert ("ENTRYPOINT", '["funnelrank"]') in runtime
    setup = open(os.path.join(ROOT, "setup.py")).read()
    assert '"funnelrank=funnelrank.cli:main"' in setup


def test_dockerignore_keeps_everything_the_dockerfile_copies():
    ignored = [line.strip().rstrip("/") for line in open(os.path.join(ROOT, ".dockerignore"))
               if line.strip() and not line.startswith("#")]
    copied = {a.split()[0].rstrip("/").split("/")[0] for w, a in dockerfile()
              if w == "COPY" and not a.startswith("--from")}
    assert not copied & set(ignored), copied & set(ignored)


@pytest.mark.slow
def test_the_wheel_ships_the_configs_and_an_installed_copy_finds_them(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in PACKAGES + ["configs", "requirements"]:
        shutil.copytree(os.path.join(ROOT, name), src / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "MANIFEST.in"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(src)], check=True, cwd=tmp_path)
    wheel, = glob.glob(str(tmp_path / "dist" / "funnelrank-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs",
                                                                         "*.yaml")))
    assert sorted(n.split("/")[-1] for n in names
                  if n.startswith("funnelrank/configs/")) == shipped
    assert "schemas/config.py" in names
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert "funnelrank = funnelrank.cli:main" in zipfile.ZipFile(wheel).read(entry[0]).decode()

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), wheel], check=True, cwd=tmp_path)
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); from schemas import config; "
             "print(config.shipped_configs_dir()); print(config.load('mmoe').model.backbone)")
    out = subprocess.run([sys.executable, "-c", probe, str(target)], check=True,
                         capture_output=True, text=True, cwd=tmp_path).stdout.split()
    assert out == [str(target / "funnelrank" / "configs"), "mmoe"]
