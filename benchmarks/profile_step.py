"""Where a training step's time goes: each kernel call of the step plan timed on its own,
beside the bare matrix products of the same layers (NumPy BLAS, the GEMM floor).

    python benchmarks/profile_step.py --config mlp-bn-do
    python benchmarks/profile_step.py --dispatch --configs tiny,mlp --threads 1   # Python-side work per call
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastnn as fnn
from fastnn.bench import ALL_CONFIGS, CONFIGS, build_fastnn, make_batch


def median_us(fn, args=(), repeats=200):
    for _ in range(5):
        fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e6


def _compiled_parts(model, x, y, phase):
    """The compiled work of one call, without the Python around it: {name: callable}. Training: the
    step plan's kernels as one fused function, its last call the optimizer's update (before: the
    optimizer's update kernel called on its own); inference: the
    forward's kernels as one fused function (fastnn._inference's plan; ``inference_plan`` in older code)."""
    from fastnn import _config
    from fastnn._fused import FusedCalls

    saved, _config.FUSE = _config.FUSE, "never"  # the model's own runners keep their tiering
    try:
        if phase == "train":
            plan = model.step_plan(x.shape[0])
            opt = model.optimizer
            fused = FusedCalls(plan.run.calls, plan.run.returns)
            if getattr(plan, "token", None) is not None:  # the optimizer's update is the plan's last call
                from fastnn.kernels.step_update import ARMED

                scalars = opt._step_scalars

                def armed_step():
                    scalars[ARMED] = 1.0  # the update runs, as in train_step
                    return fused()

                return {"step kernels and optimizer update (one fused call)": armed_step}
            return {"step kernels (one fused call)": fused, "optimizer kernel": lambda: opt._update(1.0)}
        try:
            from fastnn import _inference
        except ImportError:  # before the inference plans
            return {"forward kernels (one fused call)": FusedCalls(model.inference_plan(x.shape[0])[1].calls)}
        plan = _inference.plan(model, x.shape[0])
        fused = FusedCalls(plan.runner.calls, plan.runner.returns, plan.runner.slots)
        out = np.empty((x.shape[0], *model.output_shape), model.dtype)
        arrays = (x,) * plan._x_slot + (out,) * plan._out_slot
        return {"forward kernels (one fused call)": lambda: fused(*arrays)}
    finally:
        _config.FUSE = saved


def dispatch(configs, threads: int, repeats: int = 7) -> None:
    """Python-side work per call: the public call's time minus its compiled work (CPU time of the
    calling thread; needs --threads 1 to mean the whole work)."""
    from fastnn.bench import interleaved

    print(
        f"## Python-side work per call, {threads} thread(s) (median us of {repeats} interleaved blocks, "
        f"CPU time of the calling thread)\n"
    )
    print("| config | call | whole call us | compiled work us | Python-side us | share |\n|---|---|---|---|---|---|")
    for name in configs:
        cfg = CONFIGS[name]
        model = build_fastnn(cfg)
        xb, yb = make_batch(cfg)
        x1 = np.ascontiguousarray(xb[:1])
        for phase, x, call in (
            ("train", xb, lambda: model.train_step(xb, yb)),
            ("infer", x1, lambda: model.predict(x1)),
            ("infer", xb, lambda: model.predict(xb)),
        ):
            for _ in range(300):  # past the fused-step tier-up
                call()
            parts = _compiled_parts(model, x, yb, phase)
            cases = {"whole": call, **parts}
            t = {
                k: float(np.median(v)) * 1e6
                for k, v in interleaved(cases, repeats, 0.1, pause=0.0, clock=time.thread_time).items()
            }
            compiled = sum(t[k] for k in parts)
            label = "train_step" if phase == "train" else "predict"
            print(
                f"| {name} | {label} b{x.shape[0]} | {t['whole']:.2f} | {compiled:.2f} | {t['whole'] - compiled:.2f} "
                f"| {(t['whole'] - compiled) / t['whole']:.0%} |"
            )
    print(
        f"\nCommand: `python benchmarks/profile_step.py --dispatch --configs {','.join(configs)} --threads {threads}`"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mlp-bn-do", choices=list(ALL_CONFIGS))
    parser.add_argument(
        "--dispatch",
        action="store_true",
        help="Python-side work per train_step/predict call of --configs (CPU time, use --threads 1)",
    )
    parser.add_argument("--configs", default="tiny,mlp", help="configs of --dispatch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--in-context",
        action="store_true",
        help="time each call inside the real sequence of a step (caches as a step leaves them) instead of alone",
    )
    args = parser.parse_args(argv)
    fnn.set_num_threads(args.threads)
    if args.dispatch:
        dispatch(args.configs.split(","), args.threads)
        return 0
    cfg = ALL_CONFIGS[args.config]
    model = build_fastnn(cfg)
    xb, yb = make_batch(cfg)
    for _ in range(10):
        model.train_step(xb, yb)
    plan = model.step_plan(xb.shape[0])
    # train_step hands its batch to the fused call directly, so the plan's own input buffers hold
    # whatever was last copied there: the calls timed one by one must see the same batch (with
    # stale token ids an embedding step touches fewer rows and looks cheaper than it is)
    plan.x[...] = xb
    plan.y[...] = yb
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
    calls = (
        [(f"forward {fn.__name__}", fn, a) for fn, a in plan.forward]
        + [("loss", plan.loss_fn, plan.loss_args)]
        + [(f"backward {fn.__name__}", fn, a) for fn, a in plan.backward]
        + [("optimizer step", model.optimizer.step, ())]
    )
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
