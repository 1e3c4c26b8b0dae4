"""Time per step of ``fit()`` on in-memory arrays, shuffled: a long epoch's time per step, and the
slope between a short and a long epoch (the per-epoch work, fingerprint, callbacks and logs, drops
out; noisier), beside the compiled work of one step (the step plan's fused call as ``train_step``
runs it, no gather, no metric); "the rest" is the first minus the last.
Where ``fastnn.training.ArrayBatches.gather_inside`` exists, both paths, interleaved: the batch
gathered with ``np.take`` and counted from Python, or both inside the step's call.

    python benchmarks/fit_step_profile.py --configs tiny,tiny-ce,mlp --threads 1

``tiny-ce`` is tiny with two outputs and cross-entropy (so fit also counts the correct ones).
``--sample-weight`` fits with a weight per sample (the weighted loss; "step call" stays the plain step).
``--accumulate K`` fits with gradient accumulation, one update per K batches ("step call" stays the plain step).
``--metrics accuracy,f1,auc`` compiles the model with those metrics (a classification config: tiny-ce, mlp);
``--paths inside`` times only the in-call path (A/B of two versions: run each version's tree).
CPU time of the calling thread (``time.thread_time``): use --threads 1. ``--fuse always`` (the
default) times the steady state of a fused fit: every runner fused at once, as a long fit's are
after their tier-up (``auto`` fuses only where the fit's steps pay for the compile).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time

import numpy as np

import fastnn as fnn
from fastnn import training
from fastnn.bench import CONFIGS, build_fastnn, interleaved


def _config(name: str):
    if name == "tiny-ce":
        return dataclasses.replace(CONFIGS["tiny"], name="tiny-ce", sizes=(2, 16, 16, 2), loss="cross_entropy")
    return CONFIGS[name]


def _data(cfg, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, cfg.sizes[0]), dtype=np.float32)
    if cfg.loss == "cross_entropy":
        return X, rng.integers(0, cfg.sizes[-1], n).astype(np.int64)
    return X, rng.standard_normal((n, cfg.sizes[-1]), dtype=np.float32)


def _armed_call(model, plan, xb, yb):
    """The step plan's call as train_step makes it (the optimizer's update armed when inside)."""
    if plan.token is not None:
        model.optimizer.begin_fused_step(True)
    return plan.run(*plan.inputs(xb, yb))


def _fit(model, X, y, batch, inside, weights=None, accumulate=1):
    if inside is not None:
        training.ArrayBatches.gather_inside = inside
    options = {} if weights is None else {"sample_weight": weights[: X.shape[0]]}
    if accumulate > 1:
        options["accumulate"] = accumulate
    model.fit(X, y, epochs=1, batch_size=batch, verbose=0, **options)


def profile(
    name: str, steps: int, repeats: int, weighted: bool = False, accumulate: int = 1, metrics=(), only: str = ""
) -> list[str]:
    """Table rows of config ``name``: per path (the batch gathered in Python with np.take, or
    inside the step's call, when this version has both), interleaved in one process."""
    cfg = _config(name)
    batch = cfg.batch
    X, y = _data(cfg, 2 * steps * batch)
    short = (np.ascontiguousarray(X[: steps * batch]), np.ascontiguousarray(y[: steps * batch]))
    weights = np.linspace(0.5, 2.0, X.shape[0]) if weighted else None
    paths = {"np.take": False, "inside": True} if hasattr(training.ArrayBatches, "gather_inside") else {"np.take": None}
    paths = {path: inside for path, inside in paths.items() if only in path}
    cases, models = {}, {}
    for path, inside in paths.items():
        model = models[path] = build_fastnn(cfg)
        if metrics:
            model.compile(cfg.loss, model.optimizer, metrics=list(metrics))
        for _ in range(3):  # compiles and loads
            _fit(model, X, y, batch, inside, weights, accumulate)
        cases[f"{path} long"] = functools.partial(_fit, model, X, y, batch, inside, weights, accumulate)
        cases[f"{path} short"] = functools.partial(_fit, model, *short, batch, inside, weights, accumulate)
    model = next(iter(models.values()))
    plan = model.step_plan(batch)
    xb, yb = np.ascontiguousarray(X[:batch]), np.ascontiguousarray(y[:batch])
    for _ in range(400):
        model.train_step(xb, yb)
    cases["step call"] = functools.partial(_armed_call, model, plan, xb, yb)
    t = {k: float(np.median(v)) * 1e6 for k, v in interleaved(cases, repeats, 0.2, clock=time.thread_time).items()}
    rows = []
    for path in paths:
        per_step = (t[f"{path} long"] - t[f"{path} short"]) / steps
        whole = t[f"{path} long"] / (2 * steps)
        rows.append(
            f"| {name} | b{batch} | {path} | {whole:.2f} | {per_step:.2f} | {t['step call']:.2f} "
            f"| {whole - t['step call']:.2f} |"
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,tiny-ce,mlp")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=128, help="batches of the short epoch (mlp: a quarter)")
    parser.add_argument("--sample-weight", action="store_true", help="fit with a weight per sample")
    parser.add_argument("--accumulate", type=int, default=1, help="fit(..., accumulate=K): batches per update")
    parser.add_argument("--fuse", default="always", choices=["always", "auto", "never"], help="fastnn._config.FUSE")
    parser.add_argument("--metrics", default="", help="compile(metrics=...), comma-separated (e.g. accuracy,f1,auc)")
    parser.add_argument("--paths", default="", help="only the paths whose name contains this (np.take, inside)")
    args = parser.parse_args(argv)
    fnn.set_num_threads(args.threads)
    from fastnn import _config

    _config.FUSE = args.fuse
    print(
        f"## fit() per step{' with sample weights' if args.sample_weight else ''}"
        f"{f', accumulate={args.accumulate}' if args.accumulate > 1 else ''}"
        f"{f', metrics={args.metrics}' if args.metrics else ''}, {args.threads} thread(s), "
        f"FUSE={args.fuse}, CPU time of the calling thread, median of "
        f"{args.repeats} interleaved blocks\n"
    )
    print(
        "| config | batch | batch gathered by | fit us/step | slope us/step | step call us | the rest us/step |\n"
        "|---|---|---|---|---|---|---|"
    )
    for name in args.configs.split(","):
        steps = max(1, args.steps // 4) if name == "mlp" else args.steps
        metrics = [m for m in args.metrics.split(",") if m]
        rows = profile(name, steps, args.repeats, args.sample_weight, args.accumulate, metrics, args.paths)
        print("\n".join(rows), flush=True)
    print(
        f"\nCommand: `python benchmarks/fit_step_profile.py --configs {args.configs} --threads {args.threads} "
        f"--fuse {args.fuse} --steps {args.steps} --repeats {args.repeats}"
        f"{' --sample-weight' if args.sample_weight else ''}"
        f"{f' --accumulate {args.accumulate}' if args.accumulate > 1 else ''}"
        f"{f' --metrics {args.metrics}' if args.metrics else ''}{f' --paths {args.paths}' if args.paths else ''}`"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
