"""A change of issue 18's round 4 against the code before it, side by side in one process.

``--change`` names what to compare:

* ``gates``: the gates' expert mixture as an einsum over stacked experts (before) or as the sum
  of weighted experts (``trainer.layers.gates.weighted_sum``, now). "before" patches back the
  old ``SoftmaxGate.call`` (``einsum("be,bed->bd")``) and the old ``MMoE.call`` / ``CGC.call``
  (experts stacked to ``[B, E, d]``).
* ``sparse_adam``: ``FusedAdam`` with an embedding table's sparse gradient left to tf-keras'
  Adam (before: whole-table ops and scatters) or scattered into a dense gradient for its one
  ``ResourceApplyAdam`` kernel (now). The speed benchmarks' model trains its tables with Adam
  (no LazyAdam), as the peers do.

Both forms are built for MMoE and PLE (the speed benchmarks' model:
``benchmarks.speed_model.speed_config``, batch 2048, same seed, so the same initial weights),
"before" under its patch while its model is built and its functions traced. Each model then
runs its compiled train function on 24 cached batches (the throughput benchmark's "ideal": no
input pipeline) and its forward pass, in interleaved blocks (``--blocks`` rounds), so that a
slow spell of the machine hits both alike; the table gives the median block. Writes ``--out``
(default ``benchmarks/results/step_ab_<change>.json``).

Usage::

    .venv/bin/python benchmarks/step_ab.py --change gates|sparse_adam [--models mmoe,ple]
        [--blocks 11]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def einsum_gates():
    """The gate mixture and the backbones' calls as they were before round 4."""
    from collections.abc import Mapping

    import tensorflow as tf

    from trainer.layers import gates, mmoe, ple

    def gate_call(self, inputs):
        gate_input, experts = inputs
        return tf.einsum("be,bed->bd", self.gate_weights(gate_input), experts)

    def mmoe_call(self, inputs, training=None):
        experts = tf.stack([e(inputs, training=training) for e in self.experts], axis=1)
        return {t: self.gates[t]((inputs, experts)) for t in self.tasks}

    def cgc_call(self, inputs, training=None):
        x = (dict(inputs) if isinstance(inputs, Mapping)
             else {k: inputs for k in self.tasks + [ple.SHARED]})
        shared = [e(x[ple.SHARED], training=training) for e in self.shared_experts]
        own = {t: [e(x[t], training=training) for e in self.task_experts[t]]
               for t in self.tasks}
        out = {t: self.gates[t]((x[t], tf.stack(own[t] + shared, axis=1))) for t in self.tasks}
        if self.shared_gate:
            everything = [h for t in self.tasks for h in own[t]] + shared
            out[ple.SHARED] = self.gates[ple.SHARED]((x[ple.SHARED],
                                                      tf.stack(everything, axis=1)))
        return out

    saved = gates.SoftmaxGate.call, mmoe.MMoE.call, ple.CGC.call
    gates.SoftmaxGate.call, mmoe.MMoE.call, ple.CGC.call = gate_call, mmoe_call, cgc_call
    try:
        yield
    finally:
        gates.SoftmaxGate.call, mmoe.MMoE.call, ple.CGC.call = saved


@contextlib.contextmanager
def keras_sparse_adam():
    """``FusedAdam`` handing sparse gradients to tf-keras' Adam, as before round 4."""
    import tensorflow as tf

    from trainer.optimizers import FusedAdam

    def update_step(self, gradient, variable):
        if isinstance(gradient, tf.IndexedSlices):
            return tf.keras.optimizers.Adam.update_step(self, gradient, variable)
        return saved(self, gradient, variable)

    saved = FusedAdam.update_step
    FusedAdam.update_step = update_step
    try:
        yield
    finally:
        FusedAdam.update_step = saved


CHANGES = {"gates": ({"einsum (before)": einsum_gates,
                      "weighted sum (new)": contextlib.nullcontext}, "gate mixture"),
           "sparse_adam": ({"tf-keras sparse Adam (before)": keras_sparse_adam,
                            "dense kernel (new)": contextlib.nullcontext}, "table updates")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--change", required=True, choices=sorted(CHANGES))
    parser.add_argument("--models", default="mmoe,ple")
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=80, help="train steps per block")
    parser.add_argument("--blocks", type=int, default=11)
    parser.add_argument("--out", default=None,
                        help="default: benchmarks/results/step_ab_<change>.json")
    args = parser.parse_args(argv)
    out_path = args.out or os.path.join(ROOT, "benchmarks", "results",
                                        f"step_ab_{args.change}.json")
    sys.path.insert(0, ROOT)
    from benchmarks.speed_model import (configure_threads_as_trained, speed_config,
                                        steps_per_call, synthetic_rows, timed_steps)

    configure_threads_as_trained()  # before TF's runtime starts, as `funnelrank train` does
    import tensorflow as tf

    from funnelrank.commands.bench import write_report
    from trainer.data import from_arrays
    from trainer.session import build_model, compile_model
    from trainer.strategy import make_strategy

    data = synthetic_rows(args.rows)
    strategy = make_strategy()
    cached = from_arrays(data.arrays, data.info.input_names, data.spec, args.batch,
                         shuffle=True, seed=1, drop_remainder=True).take(24).cache().repeat()
    batches = [x for x, _ in cached.take(8)]
    forms, what = CHANGES[args.change]
    rows = []
    for model_name in args.models.split(","):
        cfg = speed_config(model_name, args.batch)
        spc = steps_per_call(cfg, strategy)
        runs = {}
        for form, patch in forms.items():
            with patch():
                tf.keras.utils.set_random_seed(0)
                with strategy.scope():
                    model = build_model(cfg, data.info)
                    compile_model(model, cfg)
                iterator = iter(strategy.experimental_distribute_dataset(cached))
                step = model.make_train_function()
                timed_steps(step, iterator, 10 * spc, spc)  # traces under the patch
                forward = tf.function(lambda x, m=model: m.network(x, training=False))
                graph = forward.get_concrete_function(batches[0]).graph.as_graph_def()
            einsums = sum(node.op == "Einsum" for node in graph.node)
            runs[form] = (step, iterator, forward, {"train": [], "inference": []}, einsums)
        for _ in range(args.blocks):
            for step, iterator, forward, blocks, _ in runs.values():
                timed = timed_steps(step, iterator, args.steps, spc)
                blocks["train"].append(timed.steps * args.batch / timed.seconds)
                t0 = time.perf_counter()
                for x in batches:
                    out = forward(x)
                float(out["ctr"][0])
                blocks["inference"].append(len(batches) * args.batch /
                                           (time.perf_counter() - t0))
        for form, (_, _, _, blocks, einsums) in runs.items():
            rows.append({"model": model_name, "form": form, "forward_einsum_ops": einsums,
                         "train_examples_per_sec": statistics.median(blocks["train"]),
                         "inference_examples_per_sec": statistics.median(blocks["inference"]),
                         "blocks": blocks})
        tf.keras.backend.clear_session()
    print(f"| model | {what} | train examples/s | inference examples/s |")
    print("|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['form']} | {r['train_examples_per_sec']:,.0f} | "
              f"{r['inference_examples_per_sec']:,.0f} |")
    write_report(out_path, {"benchmark": "step_ab", "change": args.change,
                            "batch": args.batch,
                            "blocks": args.blocks, "steps_per_block": args.steps,
                            "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
