#!/usr/bin/env bash
# GPU check (issue 18): one prepared script for a machine with a GPU, about 8 minutes there.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default: gpu_check/)
#
# Writes everything into OUT_DIR: devices.json (TF version, GPUs), tests.log (the tests that
# exercise MirroredStrategy and the global-batch losses), one `funnelrank train` output per
# setting (train_<setting>/metrics.json, .log), peers.json when peers are asked for, and
# summary.json + a printed table (examples/s and AUC per setting).
#
# Settings: the default MMoE config with no strategy on one device ("auto"), MirroredStrategy
# over every GPU ("mirrored"), and both with mixed_float16. Without a GPU it runs the same
# steps on the CPU (a test does, with GPU_CHECK_ROWS=3000, so the script cannot rot).
#
# Environment: GPU_CHECK_ROWS (synthetic rows, default 200000), GPU_CHECK_CONFIG (default
# configs/mmoe.yaml), GPU_CHECK_PEERS (e.g. "deepctr"; default none: the peers' venvs need the
# package registry, which a GPU machine without network cannot reach unless they were carried
# in work/peers), GPU_CHECK_TESTS (0 skips the pytest step), GPU_CHECK_SETTINGS (a subset of
# the settings), PY (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check}
ROWS=${GPU_CHECK_ROWS:-200000}
CONFIG=${GPU_CHECK_CONFIG:-configs/mmoe.yaml}
PEERS=${GPU_CHECK_PEERS:-}
PY=${PY:-.venv/bin/python}
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2 PYTHONHASHSEED=0
mkdir -p "$OUT"
started=$(date +%s)
say() { echo "[gpu_check $(( $(date +%s) - started ))s] $*"; }

say "devices"
"$PY" - "$OUT/devices.json" <<'PY'
import json, sys
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
info = {"tensorflow": tf.__version__, "gpus": [g.name for g in gpus],
        "details": [tf.config.experimental.get_device_details(g) for g in gpus]}
json.dump(info, open(sys.argv[1], "w"), indent=1, default=str)
print(json.dumps(info, default=str))
PY

if [ "${GPU_CHECK_TESTS:-1}" != "0" ]; then
  say "tests (MirroredStrategy, global-batch losses, strategy choice)"
  "$PY" -m pytest tests/test_global_batch.py tests/test_training.py -q -p no:cacheprovider \
    > "$OUT/tests.log" 2>&1 && say "tests passed" || say "tests FAILED: see $OUT/tests.log"
fi

SETTINGS=${GPU_CHECK_SETTINGS:-auto mirrored auto_mp16 mirrored_mp16}
for setting in $SETTINGS; do
  strategy=${setting%%_*}
  mp=false; [[ $setting == *mp16 ]] && mp=true
  say "train $setting (train.strategy=$strategy, mixed_precision=$mp, $ROWS rows)"
  "$PY" -m funnelrank.cli -q train --config "$CONFIG" --out "$OUT/train_$setting" \
    --set data.generate_rows="$ROWS" --set train.epochs=1 --set train.batch_size=2048 \
    --set train.strategy="$strategy" --set train.mixed_precision=$mp \
    > "$OUT/train_$setting.log" 2>&1 || say "train $setting FAILED: see $OUT/train_$setting.log"
done

if [ -n "$PEERS" ]; then
  say "throughput against $PEERS"
  "$PY" -m funnelrank.cli bench --throughput --rows "$ROWS" --peers "$PEERS" \
    --out "$OUT/peers.json" > "$OUT/peers.log" 2>&1 || say "peers FAILED: see $OUT/peers.log"
fi

"$PY" - "$OUT" $SETTINGS <<'PY'
import json, os, sys
out = sys.argv[1]
rows = []
for setting in sys.argv[2:]:
    path = os.path.join(out, f"train_{setting}", "metrics.json")
    if not os.path.exists(path):
        rows.append({"setting": setting, "error": f"no metrics.json (see train_{setting}.log)"})
        continue
    m = json.load(open(path))
    rows.append({"setting": setting, "replicas": m.get("replicas"),
                 "examples_per_sec": round(m["examples_per_sec"]),
                 "auc": {h: round(v["auc"], 4) for h, v in m["heads"].items()}})
json.dump({"runs": rows}, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(f"{'setting':<15}{'replicas':>9}{'examples/s':>12}  AUC")
for r in rows:
    print(f"{r['setting']:<15}{str(r.get('replicas', '-')):>9}"
          f"{str(r.get('examples_per_sec', '-')):>12}  {r.get('auc', r.get('error'))}")
PY
say "done: $OUT/summary.json"
