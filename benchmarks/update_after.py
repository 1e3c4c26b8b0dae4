"""What the optimizer's update costs after each call of a training step: the price of cache lines
that the other core read or wrote last.

    python benchmarks/update_after.py --config embed-10k-sparse --threads 2
    python benchmarks/update_after.py --config mlp --threads 2 --repeats 300

A config of ``fastnn.bench`` (``--config``), its recorded step run call by call (``model.step_plan``:
the forward calls, the loss, the backward calls), and the update alone timed by the wall clock right
after. The update is ``optimizer.step`` with a given norm, from Python: the fused step's update kernel
for a dense model; with a sparse table, the dense update and then the rows' in a call of their own,
where the fused step runs both in one region (``kernels.step_update.adam_sparse_step``). Before it:

- another update: every buffer the update touches is warm in the cache of the thread that touches it;
- each call of the step, alone, after an update: which call leaves the update slower;
- the whole forward, loss and backward, as a training step runs them;
- the same with the Dense forward products run on one thread: the lines of the weights then sit in
  one core's cache, not in both.

Session 35 found with it that the output tiles of embed-10k's 64x2048 @ 2048x128 forward (each
thread reading half of every row of the weights) made Adam after the step 2.3x slower than alone;
the forward is now split along k (``kernels.dense._k_parts``). Median microseconds over
``--repeats`` rounds, the cases interleaved.
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from fastnn.bench import ALL_CONFIGS, build_fastnn, make_batch, set_threads


def _name(fn) -> str:
    return getattr(fn, "__name__", str(fn))


def cases(model, xb, yb) -> dict:
    """{label: callable run before the timed update}."""
    plan = model.step_plan(xb.shape[0])
    plan.x[...] = xb
    plan.y[...] = yb
    forward, backward = list(plan.forward), list(plan.backward)
    threads = numba.get_num_threads()

    def step(one_thread_dense: bool = False):
        for fn, args in forward:
            if one_thread_dense and _name(fn) == "dense_forward":
                numba.set_num_threads(1)
            fn(*args)
            numba.set_num_threads(threads)
        plan.loss_fn(*plan.loss_args)
        for fn, args in backward:
            fn(*args)

    out: dict = {"another update (warm)": lambda: None}
    for i, (fn, args) in enumerate(forward):
        out[f"forward {i}: {_name(fn)}"] = lambda fn=fn, args=args: fn(*args)
    for i, (fn, args) in enumerate(backward):
        out[f"backward {i}: {_name(fn)}"] = lambda fn=fn, args=args: fn(*args)
    out["forward, loss and backward"] = step
    out["the same, Dense forwards on one thread"] = lambda: step(True)
    return out


def measure(config: str, threads: int, repeats: int) -> dict[str, float]:
    """{case: median us of the update after it}."""
    set_threads(threads)
    cfg = ALL_CONFIGS[config]
    model = build_fastnn(cfg)
    xb, yb = make_batch(cfg)
    for _ in range(20):
        model.train_step(xb, yb)
    update = model.optimizer.step
    before = cases(model, xb, yb)
    times: dict[str, list[float]] = {label: [] for label in before}
    clock = time.perf_counter
    for r in range(-5, repeats):
        for label, run in before.items():
            update(grad_norm=1.0)
            run()
            start = clock()
            update(grad_norm=1.0)
            if r >= 0:
                times[label].append(clock() - start)
    return {label: float(np.median(t)) * 1e6 for label, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="embed-10k-sparse", choices=sorted(ALL_CONFIGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    result = measure(args.config, args.threads, args.repeats)
    print(f"## {args.config}: the optimizer's update after each call, {args.threads} thread(s), median us\n")
    print("| before the update | update us |\n|---|---|")
    for label, us in result.items():
        print(f"| {label} | {us:.1f} |")
    print(f"\nCommand: `python benchmarks/update_after.py --config {args.config} --threads {args.threads}`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
