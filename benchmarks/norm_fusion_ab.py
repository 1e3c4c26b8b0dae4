"""Same-process A/B of the fused BatchNorm+activation+Dropout step plans (fastnn._norm_fusion):
the mlp-bn-do training step with the groups fused against layer by layer, interleaved, on
fastnn.bench's clock and threads; then the groups' own kernel calls of each plan (forward and
backward: the fused pair against batch norm, activation and dropout one by one).

    python benchmarks/norm_fusion_ab.py --threads 1 --cpu-clock --runs 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fastnn import _norm_fusion
from fastnn.bench import CONFIGS, build_fastnn, interleaved, make_batch, set_threads

#: the kernels of the groups in each plan, forward and backward
GROUP_KERNELS = {
    ("fused", "forward"): {"batchnorm_act_forward_train"},
    ("fused", "backward"): {"batchnorm_act_backward"},
    ("layer by layer", "forward"): {
        "batchnorm_forward_train_counted",
        "activation_forward",
        "dropout_forward_counted_from",
    },
    ("layer by layer", "backward"): {"batchnorm_backward", "activation_backward", "dropout_backward"},
}


def _group_calls(model, batch: int, names: set) -> list:
    return [(fn, args) for fn, args in model.step_plan(batch).calls if fn.__name__ in names]


def _run_calls(calls) -> None:
    for fn, args in calls:
        fn(*args)


def _model(cfg, fused: bool):
    _norm_fusion.ENABLED = fused
    try:
        model = build_fastnn(cfg)
        x, y = make_batch(cfg)
        model.train_step(x, y)  # records the plan (fused or not) at this batch size
    finally:
        _norm_fusion.ENABLED = True
    return model, x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mlp-bn-do")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpu-clock", action="store_true", help="the calling thread's CPU time (1 thread)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    set_threads(args.threads)
    cfg = CONFIGS[args.config]
    cases, kernel_cases = {}, {}
    for name, fused in (("fused", True), ("layer by layer", False)):
        model, x, y = _model(cfg, fused)
        kernels = {fn.__name__ for fn, _ in model.step_plan(x.shape[0]).calls}
        assert ("batchnorm_act_forward_train" in kernels) == fused, kernels
        cases[name] = lambda model=model, x=x, y=y: model.train_step(x, y)
        for phase in ("forward", "backward"):
            calls = _group_calls(model, x.shape[0], GROUP_KERNELS[name, phase])
            kernel_cases[f"{name} {phase}"] = lambda calls=calls: _run_calls(calls)
    clock = time.thread_time if args.cpu_clock else time.perf_counter
    medians: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, seconds in interleaved(cases, args.repeats, 0.2, clock=clock).items():
            medians[name].append(float(np.median(seconds)) * 1e3)
    print(
        f"{args.config} train batch {cfg.batch}, {args.threads} thread(s), {'CPU' if args.cpu_clock else 'wall'} clock"
    )
    print("| plan | ms per step: median of runs (min-max) |\n|---|---|")
    for name, ms in medians.items():
        print(f"| {name} | {np.median(ms):.3f} ({min(ms):.3f}-{max(ms):.3f}) |")
    ratio = [a / b for a, b in zip(medians["layer by layer"], medians["fused"])]
    print(f"layer by layer / fused: {np.median(ratio):.3f} ({min(ratio):.3f}-{max(ratio):.3f})")
    print("\n| the groups' kernel calls | us per step: median of runs (min-max) |\n|---|---|")
    runs: dict[str, list[float]] = {name: [] for name in kernel_cases}
    for _ in range(args.runs):
        for name, seconds in interleaved(kernel_cases, args.repeats, 0.2, clock=clock).items():
            runs[name].append(float(np.median(seconds)) * 1e6)
    for name, us in runs.items():
        print(f"| {name} | {np.median(us):.1f} ({min(us):.1f}-{max(us):.1f}) |")


if __name__ == "__main__":
    main()
