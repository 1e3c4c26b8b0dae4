"""Same-process A/B of the fused conv -> pool step plans (fastnn._conv_pool_fusion): each
model of benchmarks/cnn_step.py trained with its (conv, pool) pairs fused and layer by layer,
and its GEMM floor, in interleaved blocks (median per step, us). ``--switch gap``: the
"layers" plan fuses the max pools and leaves only the global average pools to the layers.

    python benchmarks/conv_pool_ab.py --threads 1 --cpu-clock --runs 3
    python benchmarks/conv_pool_ab.py --threads 1 --cpu-clock --runs 3 --models conv1d --switch gap
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from cnn_step import BATCH, MODELS, Floor

import fastnn as fnn
from fastnn import _conv_pool_fusion
from fastnn.bench import median_seconds, set_threads


def _step(build, xb, yb, fused: bool, switch: str):
    flag = "GLOBAL_AVG_ENABLED" if switch == "gap" else "ENABLED"
    setattr(_conv_pool_fusion, flag, fused)
    try:
        model = build()
        model.compile("cross_entropy", fnn.optim.SGD(0.01, momentum=0.9))
        model.train_step(xb, yb)  # the plan is built (fused or not) here
    finally:
        setattr(_conv_pool_fusion, flag, True)
    names = {fn.__name__ for fn, _ in model.step_plan(BATCH).calls}
    kernel = "conv2d_gap_forward" if switch == "gap" else "conv2d_maxpool_forward"
    if fused != (kernel in names):
        raise RuntimeError(f"the {'fused' if fused else 'layer-by-layer'} plan has other kernels: {sorted(names)}")
    return lambda: model.train_step(xb, yb)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--models", default="conv1d,lenet")
    parser.add_argument("--switch", choices=("all", "gap"), default="all", help="which pairs the A/B turns off")
    parser.add_argument("--cpu-clock", action="store_true", help="the calling thread's CPU time (needs --threads 1)")
    args = parser.parse_args(argv)
    if args.cpu_clock and args.threads != 1:
        parser.error("--cpu-clock needs --threads 1")
    set_threads(args.threads)
    clock = time.thread_time if args.cpu_clock else time.perf_counter
    print("| model | run | fused | layer by layer | floor | fused/floor | layers/floor | fused/layers |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        shape, build, _, spec = MODELS[name]
        rng = np.random.default_rng(0)
        xb = rng.standard_normal((BATCH, *shape), dtype=np.float32)
        yb = rng.integers(0, 10, BATCH).astype(np.int64)
        impls = {"fused": _step(build, xb, yb, True, args.switch), "layers": _step(build, xb, yb, False, args.switch)}
        impls["floor"] = Floor(spec, BATCH).train
        for run in range(args.runs):
            t = median_seconds(impls, args.repeats, 0.15, pause=0.0, clock=clock)
            f, u, g = t["fused"], t["layers"], t["floor"]
            print(
                f"| {name} | {run + 1} | {f * 1e6:.0f} | {u * 1e6:.0f} | {g * 1e6:.0f} | {f / g:.2f} | {u / g:.2f} | "
                f"{f / u:.3f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
