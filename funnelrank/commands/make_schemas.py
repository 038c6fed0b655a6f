"""Regenerates ``schemas/synthetic.pbtxt``, ``schemas/ali_ccp.pbtxt`` (TFDV) and
``schemas/synthetic_adm.pbtxt`` (the synthetic schema plus the ADM columns).

Each schema is inferred (``tfdv.infer_schema`` with ``infer_feature_shape=True``, as the
pipeline's SchemaGen does) from statistics of *prepared* CSVs (``transform.ingest.adapters``),
i.e. exactly what CsvExampleGen reads: INT for integer columns, FLOAT for dense ones, every
feature required (presence min_fraction 1) with one value (shape [1]). Domains and
vocabularies are removed so ExampleValidator never flags ids or values unseen here.

The ADM schema adds ``adm_count_<j>``, ``adm_mask_<j>`` and ``adm_original_<j>`` (INT, like
the action labels) for the KAML pipeline, whose Transform reads the ADM component's output.

Usage (from the repository root)::

    .venv/bin/python funnelrank/commands/make_schemas.py [--ali-ccp-dir ../shared/data/ali_ccp_sample]
        [--synthetic-rows 20000] [--out-dir schemas] [--value-count] [--adm-only]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import funnelrank  # noqa: E402,F401  (selects tf-keras before TensorFlow is imported)
from schemas.config import DataConfig  # noqa: E402
from transform.ingest import adapters  # noqa: E402

DEFAULT_ALI_CCP_DIR = os.path.join(ROOT, "..", "shared", "data", "ali_ccp_sample")


def strip_domains(schema) -> None:
    """Removes value domains and vocabularies (in place), keeping type, presence and shape."""
    for feature in schema.feature:
        for field in ("domain", "int_domain", "float_domain", "string_domain", "bool_domain",
                      "distribution_constraints"):
            if feature.HasField(field):
                feature.ClearField(field)
    del schema.string_domain[:]


def infer(data_cfg: DataConfig, work_dir: str, infer_feature_shape: bool = True):
    """Prepares ``data_cfg`` under ``work_dir`` and infers its schema from every split.

    ``infer_feature_shape=False`` gives ``value_count {min: 1 max: 1}`` (VarLen features)
    instead of ``shape [1]`` (FixedLen features, what the pipeline's SchemaGen infers).
    """
    import tensorflow_data_validation as tfdv

    prepared = adapters.prepare(data_cfg, work_dir)
    paths = [p for files in prepared.splits.values() for p in files]
    stats = tfdv.generate_statistics_from_csv(
        data_location=paths[0] if len(paths) == 1 else os.path.join(prepared.root, "*", "*.csv"),
        output_path=os.path.join(work_dir, "stats.tfrecord"))
    schema = tfdv.infer_schema(stats, infer_feature_shape=infer_feature_shape)
    strip_domains(schema)
    return schema


def with_adm_features(schema, num_actions: int):
    """A copy of ``schema`` with the ADM columns, each shaped like ``conv_0``."""
    from schemas.features import ADM_COUNT, ADM_MASK, ADM_ORIGINAL, adm_key

    out = type(schema)()
    out.CopyFrom(schema)
    template = next(f for f in schema.feature if f.name == "conv_0")
    for prefix in (ADM_COUNT, ADM_MASK, ADM_ORIGINAL):
        for j in range(num_actions):
            feature = out.feature.add()
            feature.CopyFrom(template)
            feature.name = adm_key(prefix, j)
    return out


def write_adm_schema(out_dir: str, num_actions: int = 5) -> str:
    """Derives ``synthetic_adm.pbtxt`` from ``synthetic.pbtxt`` in ``out_dir``."""
    import tensorflow_data_validation as tfdv

    schema = tfdv.load_schema_text(os.path.join(out_dir, "synthetic.pbtxt"))
    out = os.path.join(out_dir, "synthetic_adm.pbtxt")
    tfdv.write_schema_text(with_adm_features(schema, num_actions), out)
    return out


def main(argv=None) -> int:
    """Writes both schema files; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ali-ccp-dir", default=DEFAULT_ALI_CCP_DIR)
    parser.add_argument("--synthetic-rows", type=int, default=20_000)
    parser.add_argument("--out-dir", default=os.path.join(ROOT, "schemas"))
    parser.add_argument("--value-count", action="store_true",
                        help="value_count 1 (VarLen) instead of shape [1] (FixedLen)")
    parser.add_argument("--adm-only", action="store_true",
                        help="only derive synthetic_adm.pbtxt from synthetic.pbtxt")
    args = parser.parse_args(argv)
    if args.adm_only:
        print(f"wrote {write_adm_schema(args.out_dir)}")
        return 0

    import tensorflow_data_validation as tfdv

    configs = {
        "synthetic": DataConfig(adapter="synthetic", generate_rows=args.synthetic_rows),
        "ali_ccp": DataConfig(adapter="ali_ccp", path=args.ali_ccp_dir),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in configs.items():
            schema = infer(cfg, os.path.join(tmp, name),
                           infer_feature_shape=not args.value_count)
            out = os.path.join(args.out_dir, f"{name}.pbtxt")
            tfdv.write_schema_text(schema, out)
            print(f"wrote {out} ({len(schema.feature)} features)")
    print(f"wrote {write_adm_schema(args.out_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
