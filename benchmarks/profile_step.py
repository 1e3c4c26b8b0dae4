"""Where a training step's time goes: each kernel call of the step plan timed on its own,
beside the bare matrix products of the same layers (NumPy BLAS, the GEMM floor).

    python benchmarks/profile_step.py --config mlp-bn-do
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import fastnn as fnn
from fastnn.bench import CONFIGS, build_fastnn, make_batch


def median_us(fn, args=(), repeats=200):
    for _ in range(5):
        fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mlp-bn-do", choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    fnn.set_num_threads(args.threads)
    cfg = CONFIGS[args.config]
    model = build_fastnn(cfg)
    xb, yb = make_batch(cfg)
    for _ in range(10):
        model.train_step(xb, yb)
    plan = model._plan(xb.shape[0])
    rows = [("whole train_step", median_us(model.train_step, (xb, yb)))]
    for phase, calls in (("forward", plan.forward), ("backward", plan.backward)):
        for fn, call_args in calls:
            shapes = "x".join(str(s) for s in call_args[0].shape)
            rows.append((f"{phase} {getattr(fn, '__name__', fn)} ({shapes})", median_us(fn, call_args)))
    rows.append(("loss", median_us(plan.loss_fn, plan.loss_args)))
    rows.append(("optimizer step", median_us(model.optimizer.step)))
    kernels = sum(t for name, t in rows[1:])
    print(f"## {args.config}: one training step, {args.threads} threads (median us of 200 calls each)\n")
    print("| part | us | share of step |\n|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.1f} | {t / rows[0][1]:.0%} |")
    print(f"| sum of the parts | {kernels:.1f} | {kernels / rows[0][1]:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
