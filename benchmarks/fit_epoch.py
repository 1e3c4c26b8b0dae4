"""One fit() epoch on a 10,000 x 784 float32 data set (10 classes) beside a hand-written torch
loop doing the same work: shuffle (torch.randperm), batch, zero_grad, forward, loss, backward, step.

    python benchmarks/fit_epoch.py               # 5 interleaved repeats, all threads
    python benchmarks/fit_epoch.py --quick       # 3 repeats on 2,000 samples
    python benchmarks/fit_epoch.py --threads 1 --repeats 9

The network is the 'mlp' config (784-256-128-10 ReLU, Adam, cross-entropy, batch 128).
The data are make-believe: labels are the argmax of a fixed random linear map of the inputs,
so both learn. fastnn runs ``model.fit(X, y, epochs=1, batch_size=128, shuffle=True, verbose=0)``.
Writes benchmarks/results/fit_epoch.{md,json}.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastnn.bench import (
    CONFIGS,
    TorchBench,
    build_fastnn,
    interleaved,
    machine_info,
    set_threads,
    summarize,
    torch_or_none,
)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def make_data(n: int, features: int = 784, classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, features), dtype=np.float32)
    y = (X @ rng.standard_normal((features, classes), dtype=np.float32)).argmax(axis=1).astype(np.int64)
    return X, y


def torch_epoch(tb: TorchBench, X, y, batch: int) -> float:
    """One shuffled epoch of the hand-written loop; returns the mean loss."""
    torch = tb.torch
    n = X.shape[0]
    perm = torch.randperm(n)
    total = torch.zeros(())
    for lo in range(0, n, batch):
        idx = perm[lo : lo + batch]
        loss = tb.train_step(X[idx], y[idx])
        total += loss.detach() * idx.shape[0]
    return float(total) / n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=None, help="data set rows (default 10,000; 2,000 with --quick)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None, help="interleaved epochs of each (default 5)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--cpu-clock", action="store_true", help="CPU time of the calling thread (with --threads 1, on a busy machine)"
    )
    parser.add_argument("--out", default=RESULTS, help="results folder; '-' writes nothing")
    args = parser.parse_args(argv)
    import numba

    torch = torch_or_none()
    threads = args.threads or numba.config.NUMBA_NUM_THREADS
    set_threads(threads)
    n = args.samples or (2_000 if args.quick else 10_000)
    repeats = args.repeats or (3 if args.quick else 5)
    cfg = CONFIGS["mlp"]
    X, y = make_data(n)
    model = build_fastnn(cfg)
    cases = {"fastnn fit()": lambda: model.fit(X, y, epochs=1, batch_size=cfg.batch, shuffle=True, verbose=0)}
    if torch is not None:
        tb = TorchBench(cfg, model)
        tX, ty = tb.tensors(X, y)
        cases["torch loop"] = lambda: torch_epoch(tb, tX, ty, cfg.batch)
    clock = time.thread_time if args.cpu_clock else time.perf_counter
    times = interleaved(cases, repeats, min_time=0.0, warmup=1, clock=clock)
    stats = {k: summarize(v) for k, v in times.items()}
    fast = stats["fastnn fit()"]["median_s"]
    lines = [
        f"## One fit() epoch: {n:,} x 784 float32, 10 classes, {cfg.describe()}, {threads} threads",
        "",
        "| implementation | s/epoch median (min-max) | samples/s | ratio to torch |",
        "|---|---|---|---|",
    ]
    for k, s in stats.items():
        ratio = s["median_s"] / stats["torch loop"]["median_s"] if "torch loop" in stats else float("nan")
        lines.append(
            f"| {k} | {s['median_s']:.3f} ({s['min_s']:.3f}-{s['max_s']:.3f}) | {n / s['median_s']:,.0f} "
            f"| {ratio:.2f} |"
        )
    loss = model.evaluate(X, y)
    lines += [
        "",
        (
            f"fastnn after the timed epochs: loss {loss['loss']:.3f}, accuracy {loss['accuracy']:.3f}. "
            f"{repeats} interleaved repeats (one epoch each, after one warm-up epoch each)."
        ),
        f"Command: `python benchmarks/fit_epoch.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out != "-":
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "fit_epoch.md"), "w") as handle:
            handle.write(text + "\n")
        with open(os.path.join(args.out, "fit_epoch.json"), "w") as handle:
            json.dump(
                {
                    "samples": n,
                    "threads": threads,
                    "repeats": repeats,
                    "stats": stats,
                    "fastnn_over_torch": fast / stats["torch loop"]["median_s"] if "torch loop" in stats else None,
                    "machine": machine_info(),
                },
                handle,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
