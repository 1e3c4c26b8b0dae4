"""Where a tiny network's train_step spends its time outside the kernels (us per call, min of 7 x 3000).

    python benchmarks/tiny_step_overhead.py [--cpu-clock]

``--cpu-clock`` times the calling thread's CPU time (the tiny step runs no parallel region, so all
of it is in that thread): a loaded machine's preemptions drop out.

The tiny config of fastnn.bench (2-16-16-1 tanh, batch 32, SGD with momentum, MSE): the whole
train_step, the input checks, the step plan's calls (fused), the optimizer call and run_step (the
transactional step: lock, buffer guard, commit).
"""

from __future__ import annotations

import sys
import time

import numpy as np

import fastnn as fnn

CLOCK = time.thread_time if "--cpu-clock" in sys.argv else time.perf_counter


def best_us(fn, n: int = 3000, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        start = CLOCK()
        for _ in range(n):
            fn()
        times.append((CLOCK() - start) / n)
    return min(times) * 1e6


def main() -> None:
    model = fnn.Sequential(
        [fnn.Dense(2, 16, activation="tanh"), fnn.Dense(16, 16, activation="tanh"), fnn.Dense(16, 1)], seed=0
    )
    model.compile(loss="mse", optimizer=fnn.optim.SGD(lr=0.01, momentum=0.9))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 2)).astype(np.float32)
    y = rng.standard_normal((32, 1)).astype(np.float32)
    for _ in range(400):  # past the fused-step tier-up
        model.train_step(X, y)
    plan = model.step_plan(32)
    rows = [
        ("train_step", lambda: model.train_step(X, y)),
        ("check_data", lambda: model.check_data(X, y)),
        (f"step plan calls (fused: {plan.run.fused})", plan.run),
        ("optimizer.step", lambda: model.optimizer.step(grad_norm=1.0)),
        ("run_step", lambda: model.run_step(plan.x, plan.y)),
    ]
    for name, fn in rows:
        print(f"{name:40s} {best_us(fn):8.2f} us")


if __name__ == "__main__":
    main()
