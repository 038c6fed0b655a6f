"""torch-rechub's MMOE / PLE trained and run on the shared synthetic arrays (peer of issue 9).

Runs INSIDE a throwaway venv with torch (CPU) and torch-rechub (made by
``benchmarks/throughput.py``); never imports this project. Usage::

    python torch_rechub_throughput.py DATA.npz MODEL BATCH EPOCHS

The training loop is the plain PyTorch one (shuffled DataLoader over in-memory tensors, Adam,
BCE on both heads): torch-rechub's models with the least framework around them. The first
epoch is not timed. Prints one JSON line like the DeepCTR script.
"""
import json
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset
from torch_rechub.basic.features import DenseFeature, SparseFeature
from torch_rechub.models.multi_task import MMOE, PLE


def main(path, model_name, batch, epochs):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    data = np.load(path)
    meta = json.loads(str(data["meta"]))
    arch = meta["models"][model_name]
    names = meta["sparse"] + meta["dense"]
    features = ([SparseFeature(k, vocab_size=meta["vocab"][k], embed_dim=meta["embedding_dim"])
                 for k in meta["sparse"]] + [DenseFeature(k) for k in meta["dense"]])
    towers = [{"dims": arch["tower_units"]}, {"dims": arch["tower_units"]}]
    if model_name == "mmoe":
        model = MMOE(features, ["classification", "classification"], arch["num_experts"],
                     {"dims": arch["expert_units"]}, towers)
    else:
        model = PLE(features, ["classification", "classification"], arch["num_levels"],
                    arch["num_task_experts"], arch["num_shared_experts"],
                    {"dims": arch["expert_units"]}, towers)
    tensors = [torch.as_tensor(data[k].reshape(-1)) for k in names]
    labels = torch.as_tensor(np.stack([data["click"], data["ctcvr"]], axis=1))
    loader = DataLoader(TensorDataset(*tensors, labels), batch_size=batch, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.002)
    loss_fn = torch.nn.BCELoss()
    times = []
    model.train()
    for _ in range(epochs):
        t0 = time.perf_counter()
        for *cols, y in loader:
            x = dict(zip(names, cols))
            out = model(x)
            loss = loss_fn(out[:, 0], y[:, 0]) + loss_fn(out[:, 1], y[:, 1])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - t0)
    rows = len(labels)
    train = rows / float(np.median(times[1:]))
    model.eval()
    batches = [{k: t[i:i + batch] for k, t in zip(names, tensors)}
               for i in range(0, rows - batch + 1, batch)][:24]
    with torch.no_grad():
        for b in batches[:3]:
            model(b)
        t0 = time.perf_counter()
        for _ in range(3):
            for b in batches:
                model(b)
    infer = 3 * len(batches) * batch / (time.perf_counter() - t0)
    params = int(sum(p.numel() for p in model.parameters() if p.requires_grad))
    print("RESULT " + json.dumps({"peer": "torch-rechub 0.9.0 (torch " + torch.__version__ + ")",
                                  "model": model_name, "train_examples_per_sec": train,
                                  "inference_examples_per_sec": infer,
                                  "trainable_parameters": params, "epoch_seconds": times}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
