"""Same-process A/B of a training step with a frozen first layer: the update inside the step's
fused call on the trainable ranges (``kernels/step_update.py``) against the update from Python
(``Optimizer.step`` over the ranges, as before the step kernels took ranges: the optimizer's
``fused_step_token`` patched to None), ``train_step`` on fastnn.bench's configs and clock.

    python benchmarks/frozen_step_ab.py --configs tiny,mlp --threads 1 --cpu-clock --runs 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastnn as fnn
from fastnn import _config
from fastnn.bench import ALL_CONFIGS, build_fastnn, interleaved, make_batch, set_threads


def _model(name: str, inside: bool):
    cfg = ALL_CONFIGS[name]
    model = build_fastnn(cfg).freeze(0)
    x, y = make_batch(cfg)
    if not inside:
        model.optimizer.fused_step_token = lambda: None  # this instance only: Optimizer.step from Python
    model.train_step(x, y)
    plan = model.step_plan(x.shape[0])
    if (plan.token is not None) != inside:
        raise RuntimeError(f"{name}: expected the update {'inside' if inside else 'outside'} the fused call")
    return model, x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,mlp")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpu-clock", action="store_true", help="the calling thread's CPU time (1 thread)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    set_threads(args.threads)
    _config.FUSE = "always"
    clock = time.thread_time if args.cpu_clock else time.perf_counter
    print(
        f"{args.threads} thread(s), {'CPU' if args.cpu_clock else 'wall'} clock; first layer frozen; fastnn {fnn.__file__}"
    )
    print("| config | update inside the call, us | from Python, us | Python / inside |\n|---|---|---|---|")
    for name in args.configs.split(","):
        cases = {}
        for label, inside in (("inside", True), ("python", False)):
            model, x, y = _model(name, inside)
            cases[label] = lambda model=model, x=x, y=y: model.train_step(x, y)
        runs: dict[str, list[float]] = {label: [] for label in cases}
        for _ in range(args.runs):
            for label, seconds in interleaved(cases, args.repeats, 0.2, clock=clock).items():
                runs[label].append(float(np.median(seconds)) * 1e6)
        ratio = [b / a for a, b in zip(runs["inside"], runs["python"])]
        cells = [f"{np.median(us):.1f} ({min(us):.1f}-{max(us):.1f})" for us in runs.values()]
        print(f"| {name} | {cells[0]} | {cells[1]} | {np.median(ratio):.2f} ({min(ratio):.2f}-{max(ratio):.2f}) |")


if __name__ == "__main__":
    main()
