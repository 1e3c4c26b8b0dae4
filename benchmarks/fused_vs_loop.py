"""A training step and a batch-1 prediction through the Python loop of kernel calls and fused into
one compiled call (fastnn._fused), interleaved in one process.

    python benchmarks/fused_vs_loop.py --config tiny
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fastnn import _config
from fastnn.bench import CONFIGS, build_fastnn, make_batch


def _us(fn, calls: int) -> float:
    time.sleep(0.1)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny", choices=list(CONFIGS))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    cfg = CONFIGS[args.config]
    x, y = make_batch(cfg)
    x1 = np.ascontiguousarray(x[:1])
    models = {}
    for mode in ("never", "always"):  # the plans read the mode when they are built
        _config.FUSE = mode
        models[mode] = model = build_fastnn(cfg)
        model.train_step(x, y)
        model.predict(x1)
    assert models["always"].step_plan(x.shape[0]).run.fused and not models["never"].step_plan(x.shape[0]).run.fused
    step_calls = max(20, int(0.2 / max(_us(lambda: models["never"].train_step(x, y), 5) * 1e-6, 1e-6)))
    rows = []
    for _ in range(args.repeats):
        rows.append(
            [_us(lambda m=models[mode]: m.train_step(x, y), step_calls) for mode in ("never", "always")]
            + [_us(lambda m=models[mode]: m.predict(x1), 2000) for mode in ("never", "always")]
        )
    med = np.median(np.array(rows), axis=0)
    print(f"## {args.config}: Python loop of kernel calls vs fused (median of {args.repeats} interleaved blocks, us)\n")
    print("| | loop | fused | fused/loop |\n|---|---|---|---|")
    print(f"| train_step (batch {x.shape[0]}) | {med[0]:.1f} | {med[1]:.1f} | {med[1] / med[0]:.2f} |")
    print(f"| predict (batch 1) | {med[2]:.1f} | {med[3]:.1f} | {med[3] / med[2]:.2f} |")
    print(f"\nCommand: `python benchmarks/fused_vs_loop.py --config {args.config}`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
