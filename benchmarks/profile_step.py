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
    parser.add_argument("--in-context", action="store_true",
                        help="time each call inside the real sequence of a step (caches as a step leaves them) "
                             "instead of alone")
    args = parser.parse_args(argv)
    fnn.set_num_threads(args.threads)
    cfg = CONFIGS[args.config]
    model = build_fastnn(cfg)
    xb, yb = make_batch(cfg)
    for _ in range(10):
        model.train_step(xb, yb)
    plan = model.step_plan(xb.shape[0])
    if args.in_context:
        return _in_context(args, model, plan, xb, yb)
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


def _in_context(args, model, plan, xb, yb, steps=300) -> int:
    """Each call of the step timed where it runs: the plan's calls in order, a timer around each."""
    calls = ([(f"forward {fn.__name__}", fn, a) for fn, a in plan.forward]
             + [("loss", plan.loss_fn, plan.loss_args)]
             + [(f"backward {fn.__name__}", fn, a) for fn, a in plan.backward]
             + [("optimizer step", model.optimizer.step, ())])
    totals = np.zeros(len(calls))
    clock = time.perf_counter
    for _ in range(steps):
        for i, (_, fn, call_args) in enumerate(calls):
            start = clock()
            fn(*call_args)
            totals[i] += clock() - start
    whole = median_us(model.train_step, (xb, yb))
    print(f"## {args.config}: each call inside the step sequence, {args.threads} threads (mean us of {steps} steps)\n")
    print("| part | us | share of step |\n|---|---|---|")
    print(f"| whole train_step (median, alone) | {whole:.1f} | 100% |")
    for (name, _, call_args), total in zip(calls, totals):
        shape = "x".join(str(d) for d in call_args[0].shape) if call_args else ""
        t = total / steps * 1e6
        print(f"| {name} ({shape}) | {t:.1f} | {t / whole:.0%} |")
    t = totals.sum() / steps * 1e6
    print(f"| sum of the parts | {t:.1f} | {t / whole:.0%} |")
    print(f"\nCommand: `python benchmarks/profile_step.py --config {args.config} --in-context`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
