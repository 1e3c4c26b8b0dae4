"""Whether a config's training step keeps one speed within a process: blocks of steps timed in turn
with the same config's GEMM floor, and each thread's CPU time and last CPU in each block.

    python benchmarks/step_modes.py --config mlp --blocks 12

Made to find out why the same code's step ratio moved 30% between processes at 2 threads
(RESULTS.md, session 12): a block's median is either fast or ~1.8x slower, with both threads
busy on separate CPUs, and the floor's blocks move too (by ~1.4x).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from fastnn.bench import CONFIGS, GemmFloor, build_fastnn, make_batch


def thread_times() -> dict[str, tuple[int, int]]:
    """{thread id: (user + system CPU ticks, the CPU it last ran on)} of this process (Linux)."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        out[tid] = (int(fields[11]) + int(fields[12]), int(fields[36]))
    return out


def median_us(fn, calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mlp", choices=sorted(CONFIGS))
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--steps", type=int, default=200, help="steps per block")
    args = parser.parse_args()
    cfg = CONFIGS[args.config]
    model = build_fastnn(cfg)
    x, y = make_batch(cfg)
    floor = GemmFloor(cfg.sizes, cfg.batch)
    for _ in range(300):  # compiled, tiered up to the fused step, warm
        model.train_step(x, y)
    print("| block | fastnn step us | floor us | busy threads (CPU ticks @ last CPU) |\n|---|---|---|---|")
    for block in range(args.blocks):
        time.sleep(0.2)  # the floor's BLAS threads spin ~0.1 s after its last call: let them sleep first
        before = thread_times()
        step = median_us(lambda: model.train_step(x, y), args.steps)
        after = thread_times()
        busy = [
            f"{after[t][0] - before[t][0]}@{after[t][1]}" for t in after if t in before and after[t][0] > before[t][0]
        ]
        time.sleep(0.2)
        print(f"| {block} | {step:.0f} | {median_us(floor.train_step, args.steps):.0f} | {' '.join(busy)} |")


if __name__ == "__main__":
    main()
