"""DeepCTR's MMOE / PLE trained and run on the shared synthetic arrays (peer of issue 9).

Runs INSIDE a throwaway venv with deepctr and tensorflow-cpu 2.10 (made by
``benchmarks/throughput.py``); never imports this project. Usage::

    python deepctr_throughput.py DATA.npz MODEL BATCH EPOCHS

Prints one JSON line: training examples/second over the timed epochs (Keras ``fit`` on the
in-memory arrays, DeepCTR's own usage; the first epoch, which traces, is not timed) and
inference examples/second (the model's forward pass on in-memory batches). With
``PEER_INTRA_OP_THREADS=N`` in the environment TF's intra-op pool has N threads (funnelrank's
``train.intra_op_threads``), so that the two can be compared under the same thread setting.
"""
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from deepctr.feature_column import DenseFeat, SparseFeat  # noqa: E402
from deepctr.models import MMOE, PLE  # noqa: E402


class EpochTimer(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times = getattr(self, "times", []) + [time.perf_counter() - self.t0]


def main(path, model_name, batch, epochs):
    intra = int(os.environ.get("PEER_INTRA_OP_THREADS", "0"))
    if intra:  # the thread setting funnelrank trains with (benchmarks/throughput.py --peer-threads)
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    data = np.load(path)
    meta = json.loads(str(data["meta"]))
    arch = meta["models"][model_name]
    columns = ([SparseFeat(k, vocabulary_size=meta["vocab"][k],
                           embedding_dim=meta["embedding_dim"]) for k in meta["sparse"]]
               + [DenseFeat(k, 1) for k in meta["dense"]])
    common = dict(task_types=("binary", "binary"), task_names=("ctr", "ctcvr"),
                  tower_dnn_hidden_units=tuple(arch["tower_units"]), gate_dnn_hidden_units=())
    if model_name == "mmoe":
        model = MMOE(columns, num_experts=arch["num_experts"],
                     expert_dnn_hidden_units=tuple(arch["expert_units"]), **common)
    else:
        model = PLE(columns, shared_expert_num=arch["num_shared_experts"],
                    specific_expert_num=arch["num_task_experts"], num_levels=arch["num_levels"],
                    expert_dnn_hidden_units=tuple(arch["expert_units"]), **common)
    model.compile("adam", loss=["binary_crossentropy", "binary_crossentropy"])
    x = {k: data[k] for k in meta["sparse"] + meta["dense"]}
    y = [data["click"], data["ctcvr"]]
    timer = EpochTimer()
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, shuffle=True,
              callbacks=[timer])
    rows = len(data["click"])
    train = rows / float(np.median(timer.times[1:]))
    forward = tf.function(lambda b: model(b, training=False))
    batches = [{k: v[i:i + batch] for k, v in x.items()}
               for i in range(0, rows - batch + 1, batch)][:24]
    for b in batches[:3]:
        forward(b)
    t0 = time.perf_counter()
    for _ in range(3):
        for b in batches:
            out = forward(b)
    float(np.asarray(out[0])[0, 0])
    infer = 3 * len(batches) * batch / (time.perf_counter() - t0)
    params = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    threads = f", intra-op threads {intra}" if intra else ""
    print("RESULT " + json.dumps({"peer": "DeepCTR 0.9.3 (TF " + tf.__version__ + threads + ")",
                                  "model": model_name, "train_examples_per_sec": train,
                                  "inference_examples_per_sec": infer,
                                  "trainable_parameters": params,
                                  "epoch_seconds": timer.times}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
