"""The package layers: no module imports from a layer above its own.

Bottom to top (a module may import from its own layer and every layer below it):

    schemas                 contracts: feature names and dataset spec, experiment config,
                            argument checks, the process environment
    transform               data in: ingest (synthetic, CSV validation, adapters, split),
                            preprocessing (tf.Transform and its NumPy twin), ADM
    serving                 export of an inference network, signatures, client, serve-check
    trainer.layers          Keras layers
    trainer.losses          Keras losses
    trainer.objectives      loss recipes (layers + losses -> named terms)
    trainer                 model assembly, FunnelModel, the training session, TFX run_fn
    pipeline                the TFX pipeline, its components and runners
    funnelrank, benchmarks  the CLI, its drivers, the public import surface, benchmark scripts

Every import counts, also those inside functions (a lazy import is still a dependency).
"""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LAYERS = (
    ("schemas",),
    ("transform",),
    ("serving",),
    ("trainer.layers",),
    ("trainer.losses",),
    ("trainer.objectives",),
    ("trainer",),
    ("pipeline",),
    ("funnelrank", "benchmarks"),
)
PACKAGES = ("schemas", "transform", "serving", "trainer", "pipeline", "funnelrank", "benchmarks")


def layer_of(module: str) -> int:
    """Index in LAYERS of the most specific prefix matching ``module``."""
    best, best_len = None, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    if best is None:
        raise KeyError(module)
    return best


def project_modules():
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    yield rel.removesuffix(".__init__"), path


def imported_modules(path: str, module: str):
    """Project modules imported anywhere in the file (absolute and relative imports)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" if base else alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                yield node.lineno, name


def violations():
    found = []
    for module, path in project_modules():
        own = layer_of(module)
        for line, imported in imported_modules(path, module):
            if layer_of(imported) > own:
                found.append(f"{os.path.relpath(path, ROOT)}:{line}: {module} "
                             f"({'/'.join(LAYERS[own])}) imports {imported} "
                             f"({'/'.join(LAYERS[layer_of(imported)])})")
    return found


def test_no_import_from_a_higher_layer():
    bad = violations()
    assert not bad, "imports from a higher layer:\n" + "\n".join(bad)


def test_the_check_sees_the_packages_and_their_imports():
    modules = dict(project_modules())
    assert "trainer.session" in modules and "schemas.config" in modules
    imported = {name for _, name in imported_modules(modules["trainer.session"],
                                                     "trainer.session")}
    assert any(name.startswith("schemas.config") for name in imported), imported


@pytest.mark.parametrize("module, imported, upward", [
    ("schemas.features", "trainer.model", True),
    ("trainer.layers.mmoe", "trainer.objectives.base", True),
    ("trainer.objectives.esmm", "trainer.layers.aitm", False),
    ("pipeline.pipeline", "trainer.session", False),
    ("trainer.session", "funnelrank.commands.train", True),
    ("serving.export", "trainer.model", True),
])
def test_layer_order(module, imported, upward):
    assert (layer_of(imported) > layer_of(module)) == upward
