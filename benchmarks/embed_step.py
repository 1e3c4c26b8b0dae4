"""Where the embed-10k training step's time goes, beside its GEMM floor and Adam's memory floor.

    python benchmarks/embed_step.py --threads 1 --runs 3                  # Adam, as the config
    python benchmarks/embed_step.py --threads 1 --runs 3 --optimizer sgd  # plain SGD, same lr
    python benchmarks/embed_step.py --config embed-10k-sparse --threads 1  # the sparse table

Config ``embed-10k`` of fastnn.bench: Embedding(10000, 64) on 32 token ids, Flatten, Dense(128,
relu), Dense(10), batch 64, cross-entropy, Adam lr 1e-3 (``--optimizer sgd``: plain SGD lr 1e-3,
a local variant of the config, which stays as it is). All times are the calling thread's CPU
time (``time.thread_time``, meaningful at ``--threads 1``), in one process:

- whole cases, interleaved repeats (fastnn.bench.interleaved; each a block of repeated calls, so
  a case's buffers stay in cache as far as they fit): ``train_step``; the GEMM floor
  (bench.GemmListFloor: the Dense layers' products in NumPy); the optimizer's update alone on the
  model's buffers (``optimizer.step``); its memory floor over as many parameters (bench's stream
  kernel: read params, grads and the k state buffers, write params and states; k=2 for Adam);
  the same floor over the parameters outside the embedding table; torch's step when torch is
  installed.
- the step's parts inside the real sequence (each plan call timed where it runs, then the
  optimizer's update from Python, the same kernel the fused step calls): median over steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np

from fastnn.bench import (
    NET_CONFIGS,
    GemmListFloor,
    TorchBench,
    build_fastnn,
    interleaved,
    make_batch,
    model_gemms,
    set_threads,
    torch_or_none,
)
from fastnn.bench import _stream_floor_kernel as stream_floor_kernel

N_STATES = {"adam": 2, "sgd": 0}


def config(optimizer: str, name: str = "embed-10k"):
    cfg = NET_CONFIGS[name]
    if optimizer != cfg.optimizer:
        cfg = dataclasses.replace(cfg, name=f"{cfg.name}-{optimizer}", optimizer=optimizer)
    return cfg


def _label(fn) -> str:
    return getattr(fn, "__name__", str(fn))


def parts_in_context(model, xb, yb, steps: int) -> dict[str, float]:
    """Median CPU seconds of each call of the step, timed in the order the step runs them."""
    plan = model.step_plan(xb.shape[0])
    plan.x[...] = xb
    plan.y[...] = yb
    calls = [(f"forward {_label(fn)}", fn, a) for fn, a in plan.forward]
    calls.append(("loss", plan.loss_fn, plan.loss_args))
    calls += [(f"backward {_label(fn)}", fn, a) for fn, a in plan.backward]
    plain = [name for name, _, _ in calls]
    names = [  # the two Dense layers: say which
        f"{name} #{plain[:i].count(name) + 1}" if plain.count(name) > 1 else name for i, name in enumerate(plain)
    ]
    names += ["gradient norm (all params)", "optimizer update (all params)"]
    clock = time.thread_time
    table = np.zeros((steps, len(names)))
    for s in range(-10, steps):
        row = []
        for _, fn, call_args in calls:
            start = clock()
            fn(*call_args)
            row.append(clock() - start)
        start = clock()
        norm = model.grad_norm()
        row.append(clock() - start)
        start = clock()
        model.optimizer.step(grad_norm=norm)
        row.append(clock() - start)
        if s >= 0:
            table[s] = row
    return dict(zip(names, np.median(table, axis=0)))


def whole_cases(model, cfg, xb, yb, torch) -> dict:
    """{name: callable}: train_step, the GEMM floor, the update's stream floors, torch's step."""
    stream = stream_floor_kernel()
    k = N_STATES[cfg.optimizer]
    table = model.layers[0].weight.size
    n = model.params.size

    def buffers(size):
        rng = np.random.default_rng(0)
        p = rng.standard_normal(size, dtype=np.float32)
        g = np.zeros(size, np.float32)
        states = [np.zeros(size, np.float32) for _ in range(k)] + [np.empty(0, np.float32)] * (3 - k)
        return lambda: stream(p, g, *states, k)

    floor = GemmListFloor(model_gemms(model, cfg.batch))
    cases = {
        "train_step": lambda: model.train_step(xb, yb),
        "GEMM floor": floor.train_step,
        f"optimizer update alone, all {n:,} params": lambda: model.optimizer.step(grad_norm=1.0),
        f"update memory floor, all {n:,} params": buffers(n),
        f"update memory floor, {n - table:,} params outside the table": buffers(n - table),
    }
    if torch is not None:
        tb = TorchBench(cfg, model)
        tx, ty = tb.tensors(xb, yb)
        cases["torch train step"] = lambda: tb.train_step(tx, ty)
    return cases


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--config", choices=["embed-10k", "embed-10k-sparse"], default="embed-10k")
    parser.add_argument("--optimizer", choices=sorted(N_STATES), default="adam")
    parser.add_argument("--runs", type=int, default=3, help="whole runs (median and range over them)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats per run")
    parser.add_argument("--steps", type=int, default=300, help="steps of the in-context breakdown per run")
    args = parser.parse_args(argv)
    torch = torch_or_none()
    set_threads(args.threads)
    cfg = config(args.optimizer, args.config)
    model = build_fastnn(cfg)
    xb, yb = make_batch(cfg)
    for _ in range(300):  # past the fused step's tier-up
        model.train_step(xb, yb)
    runs_whole, runs_parts = [], []
    for _ in range(args.runs):
        times = interleaved(whole_cases(model, cfg, xb, yb, torch), args.repeats, 0.2, clock=time.thread_time)
        runs_whole.append({k: float(np.median(v)) for k, v in times.items()})
        runs_parts.append(parts_in_context(model, xb, yb, args.steps))

    def cell(values, scale=1e6, fmt="{:.0f}"):
        return f"{fmt.format(np.median(values) * scale)} ({fmt.format(min(values) * scale)}-{fmt.format(max(values) * scale)})"

    print(f"## {args.config}, {cfg.optimizer}, {args.threads} thread(s): median (min-max) over {args.runs} runs\n")
    print("| case | us | / GEMM floor |\n|---|---|---|")
    for name in runs_whole[0]:
        us = [r[name] for r in runs_whole]
        ratio = [r[name] / r["GEMM floor"] for r in runs_whole]
        print(f"| {name} | {cell(us)} | {cell(ratio, 1, '{:.2f}')} |")
    if "torch train step" in runs_whole[0]:
        ratio = [r["torch train step"] / r["train_step"] for r in runs_whole]
        print(f"| torch / fastnn | | {cell(ratio, 1, '{:.2f}')} |")
    print("\n| part of the step (in context) | us |\n|---|---|")
    for name in runs_parts[0]:
        print(f"| {name} | {cell([r[name] for r in runs_parts])} |")
    total = [sum(r.values()) for r in runs_parts]
    print(f"| sum of the parts | {cell(total)} |")
    load = os.getloadavg()
    print(
        f"\nCommand: `python benchmarks/embed_step.py --config {args.config} --threads {args.threads} --runs {args.runs} "
        f"--optimizer {args.optimizer}`; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
