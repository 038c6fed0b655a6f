"""Data for the KAML benchmark grid: the synthetic log split by time, observed and oracle labels.

KAML trains on weeks of logs and tests on the following day; here the last ``--test-days`` of
the generated log are the test split. Two copies are written with the same rows:

* ``<out>/observed/{train,test}.csv``: the labels advertisers submitted (``conv_j = 0`` for
  actions an advertiser does not submit), what every model but the Oracle trains on;
* ``<out>/oracle/{train,test}.csv``: train labels ``conv_j = gt_conv_j`` (every action that
  happened, submitted or not), KAML Table 3's Oracle. The test files are identical: every model
  is evaluated on the target action's label, which is always submitted.

Usage::

    .venv/bin/python benchmarks/kaml_data.py [--rows 500000] [--out work/bench/kaml_data]
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--test-days", type=int, default=3)
    parser.add_argument("--out", default=os.path.join("work", "bench", "kaml_data"))
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from transform.ingest import csv_io, synthetic

    log = synthetic.generate(args.rows, seed=args.seed)
    cut = log["timestamp"].max() - args.test_days * 86_400
    train, test = log[log["timestamp"] <= cut], log[log["timestamp"] > cut]
    oracle = train.copy()
    actions = [c for c in log.columns if c.startswith("conv_")]
    for key in actions:
        oracle[key] = oracle["gt_" + key]
    for name, frame in (("observed", train), ("oracle", oracle)):
        os.makedirs(os.path.join(args.out, name), exist_ok=True)
        csv_io.write_frame(frame, os.path.join(args.out, name, "train.csv"))
        csv_io.write_frame(test, os.path.join(args.out, name, "test.csv"))
    added = int((oracle[actions].to_numpy() - train[actions].to_numpy()).sum())
    print(f"wrote {len(train)} train / {len(test)} test rows (test = last {args.test_days} days) "
          f"to {args.out}/observed and {args.out}/oracle; the oracle train split has {added} "
          f"more positive action labels ({int(train[actions].to_numpy().sum())} observed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
