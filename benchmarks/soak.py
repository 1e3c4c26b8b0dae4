"""Soak: a long training run that must not grow. 20,000 ``train_step`` calls of a small MLP
(batch 32) with validation (``model.evaluate``) and a checkpoint (``model.save``) every N steps.

    python benchmarks/soak.py                       # 20,000 steps, exit 1 on a leak
    python benchmarks/soak.py --steps 4000          # a quicker look

Reports resident memory (RSS, from /proc/self/statm; psutil or ru_maxrss where there is no
/proc) and the number of Python memory blocks allocated, sampled along the run, the least-squares slope of
each over the steps after warm-up, and whether the checkpoint directory holds anything but the
checkpoints (a temporary file left by ``model.save`` is a failure). Exits 1 when the RSS slope
exceeds ``--max-kib-per-1000`` (see ``_THRESHOLD_WHY``), when Python's allocated blocks grow, when a
temporary file is left, or when the last checkpoint does not reload to the same predictions.
This is a benchmark script, not a test: it takes about a minute.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import fastnn as fnn  # noqa: E402

#: 32 KiB per 1000 steps is 32 bytes per step: any array leaked per step (a NumPy array costs over
#: 100 bytes with its header) shows, with a 4x margin over the growth measured after warm-up in
#: clean runs (+1 to +7 KiB per 1000 steps: the allocator taking a page now and then). Leaked
#: Python objects (array headers included) are caught exactly by the count of Python's allocated
#: memory blocks (``sys.getallocatedblocks``, which allocates nothing, unlike ``gc.get_objects``:
#: its 1 MiB list moved glibc's mmap threshold and showed up as RSS steps).
_THRESHOLD_WHY = "32 B/step: any array leaked per step; clean runs measure 1-7"
_MAX_KIB_PER_1000 = 32.0


def rss_bytes() -> int:
    """Current resident set size of this process in bytes."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:  # peak, not current: a leak still shows as a rising peak
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def slope_per_1000(steps, values) -> float:
    """Least-squares slope of ``values`` over ``steps``, per 1000 steps."""
    steps, values = np.asarray(steps, np.float64), np.asarray(values, np.float64)
    if steps.size < 2:
        return 0.0
    return float(np.polyfit(steps, values, 1)[0] * 1000)


def make_data(n: int, features: int, classes: int, seed: int):
    """A learnable classification set: labels of a random linear teacher."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    y = (X @ rng.normal(size=(features, classes))).argmax(axis=1)
    return X, y


def make_model(features: int, classes: int) -> fnn.Sequential:
    model = fnn.Sequential(
        [
            fnn.Dense(features, 64, activation="relu"),
            fnn.BatchNorm1d(64),
            fnn.Dropout(0.1),
            fnn.Dense(64, 64, activation="relu"),
            fnn.Dense(64, classes),
        ],
        seed=0,
    )
    return model.compile(loss="cross_entropy", optimizer=fnn.optim.Adam(lr=1e-3))


def soak(steps: int, batch: int, val_every: int, ckpt_every: int, samples: int, warmup: int, directory: str):
    """Run the soak; returns (rows sampled, checkpoint names, model, validation data)."""
    X, y = make_data(4096 + 512, 32, 10, seed=0)
    X, y, Xv, yv = X[:4096], y[:4096], X[4096:], y[4096:]
    model = make_model(32, 10)
    n_batches = X.shape[0] // batch
    sample_every = max(1, (steps - warmup) // samples)
    rows, metrics = [], {}
    start = time.perf_counter()
    for step in range(1, steps + 1):
        b = step % n_batches
        model.train_step(X[b * batch : (b + 1) * batch], y[b * batch : (b + 1) * batch])
        if step % val_every == 0:
            metrics = model.evaluate(Xv, yv)
        if step % ckpt_every == 0:
            model.save(os.path.join(directory, f"step-{step % (3 * ckpt_every) // ckpt_every}.safetensors"))
        if (step >= warmup and (step - warmup) % sample_every == 0) or step == steps:
            gc.collect()
            rows.append(
                {
                    "step": step,
                    "rss": rss_bytes(),
                    "blocks": sys.getallocatedblocks(),
                    "val_loss": metrics.get("loss", float("nan")),
                    "val_accuracy": metrics.get("accuracy", float("nan")),
                    "seconds": time.perf_counter() - start,
                }
            )
    return rows, model, (Xv, yv)


def check_directory(directory: str, model, validation) -> list[str]:
    """Problems with the checkpoint directory: leftover temporaries, a checkpoint that does not reload."""
    names = sorted(os.listdir(directory))
    problems = [f"left behind: {name}" for name in names if not name.startswith("step-")]
    last = max((os.path.join(directory, n) for n in names if n.startswith("step-")), key=os.path.getmtime, default=None)
    if last is None:
        return [*problems, "no checkpoint written"]
    model.save(last)  # the final state, so the reload compares exactly
    if not np.array_equal(fnn.load(last).predict(validation[0]), model.predict(validation[0])):
        problems.append(f"{last} does not reload to the same predictions")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--val-every", type=int, default=500)
    parser.add_argument("--ckpt-every", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=40, help="RSS samples after warm-up")
    parser.add_argument(
        "--warmup",
        type=int,
        default=2000,
        help="steps before the first sample (step plans, the fused step compiled after 200 "
        "steps, first save and evaluate)",
    )
    parser.add_argument(
        "--max-kib-per-1000", type=float, default=_MAX_KIB_PER_1000, help=f"RSS slope limit ({_THRESHOLD_WHY})"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fastnn-soak-") as directory:
        rows, model, validation = soak(
            args.steps,
            args.batch,
            args.val_every,
            args.ckpt_every,
            args.samples,
            min(args.warmup, args.steps - 1),
            directory,
        )
        problems = check_directory(directory, model, validation)

    print(f"{'step':>7} {'RSS MiB':>9} {'blocks':>8} {'val_loss':>9} {'val_acc':>8} {'s':>7}")
    shown = {r["step"]: r for r in [*rows[:: max(1, len(rows) // 8)], rows[-1]]}  # about 9 rows, the last one
    for r in shown.values():
        print(
            f"{r['step']:>7} {r['rss'] / 2**20:>9.2f} {r['blocks']:>8} {r['val_loss']:>9.4f} "
            f"{r['val_accuracy']:>8.3f} {r['seconds']:>7.1f}"
        )
    steps = [r["step"] for r in rows]
    rss_slope = slope_per_1000(steps, [r["rss"] for r in rows]) / 1024
    block_slope = slope_per_1000(steps, [r["blocks"] for r in rows])
    growth = (rows[-1]["rss"] - rows[0]["rss"]) / 1024
    total = rows[-1]["seconds"]
    print(
        f"RSS slope: {rss_slope:+.2f} KiB per 1000 steps (limit {args.max_kib_per_1000:g}: {_THRESHOLD_WHY}); "
        f"RSS {rows[0]['step']} -> {rows[-1]['step']}: {growth:+.0f} KiB"
    )
    print(f"Python blocks slope: {block_slope:+.2f} per 1000 steps; {rows[0]['blocks']} -> {rows[-1]['blocks']}")
    print(
        f"{args.steps} steps in {total:.1f} s ({args.steps / total:.0f} steps/s, validation every "
        f"{args.val_every}, checkpoint every {args.ckpt_every})"
    )
    if rss_slope > args.max_kib_per_1000:
        problems.append(f"RSS grows {rss_slope:.1f} KiB per 1000 steps (limit {args.max_kib_per_1000:g})")
    # one object leaked per step adds 18,000 blocks; clean runs add ~400 (snapshot's small strings,
    # a rate that falls off as it goes: 90, 37, 24, 16 per 500 snapshots)
    if rows[-1]["blocks"] - rows[0]["blocks"] > 2000:
        problems.append(f"Python's allocated blocks grew from {rows[0]['blocks']} to {rows[-1]['blocks']}")
    if not any(p.startswith("left") for p in problems):
        print("checkpoint directory: no temporary files left")
    for problem in problems:
        print(f"FAIL: {problem}")
    print("OK" if not problems else "FAILED")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
