"""Do this machine's two vCPUs run on two cores? The 2-thread speed-up of four kinds of work, per process.

    python benchmarks/core_sharing.py                      # one process
    python benchmarks/core_sharing.py --processes 6        # six fresh processes, one line each
    python benchmarks/core_sharing.py --processes 6 --step mlp-bn-do   # with a training step's time

Session 23 found processes whose training steps run at one thread's speed for minutes while both
Numba threads are 100% busy (benchmarks/RESULTS.md, "Session 23: the 2-thread spread"). If a host
puts two vCPUs on the two hardware threads of one physical core, work that fills the core's
floating-point units (a GEMM in cache) gains little from the second thread, while work bound by an
instruction's latency (a dependent chain) still doubles. Each kind below runs as two independent
tasks in a ``prange`` (private data, nothing shared) and as one task alone; the speed-up is
2 x (one task's time) / (two tasks' time): 2.0 on two free cores.

  chain   a dependent float64 multiply-add chain (latency-bound; doubles on hyper-threads too)
  fma     a 96x96 @ 96x96 float32 GEMM in L1/L2, repeated (fills the FMA units)
  stream  a sum over a private 64 MB float32 array (memory bandwidth)
  tiles   fastnn's two-tile region of the mlp's first layer (128x784 @ 784x256, shared operand)

With ``--step CONFIG`` the process also times that config's ``train_step`` (fastnn.bench's model
and batch, 2 threads, median of 5 blocks of 100 steps).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
from numba import njit, prange
from thread_wake import two_tiles, two_tiles_serial

from fastnn.kernels.blas import gemm_block

_CHAIN_STEPS = 20_000_000
_FMA_REPEATS = 400
_STREAM_BYTES = 64 << 20


@njit
def _chain(seed, steps):
    x = seed
    for _ in range(steps):
        x = x * 0.999999 + 1e-7
    return x


@njit(parallel=True)
def _chain_pair(out, steps):
    for t in prange(2):
        out[t] = _chain(1.0 + t, steps)


@njit
def _fma(x, w, z, repeats):
    m, n = z.shape
    for _ in range(repeats):
        gemm_block(False, False, np.float32(1.0), x, w, np.float32(0.0), z, 0, m, 0, n)


@njit(parallel=True)
def _fma_pair(xs, ws, zs, repeats):
    for t in prange(2):
        _fma(xs[t], ws[t], zs[t], repeats)


@njit(fastmath=True)
def _stream(a):
    s = np.float32(0.0)
    for i in range(a.size):
        s += a[i]
    return s


@njit(parallel=True)
def _stream_pair(arrays, out):
    for t in prange(2):
        out[t] = _stream(arrays[t])


def _best(fn, repeats: int = 5) -> float:
    """Fastest of ``repeats`` calls, in seconds (after one untimed call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(step: str | None = None) -> dict:
    """Speed-ups of the four kinds of work in this process (and the step's ms with ``step``)."""
    rng = np.random.default_rng(0)
    out = np.zeros(2)
    one = _best(lambda: _chain(1.0, _CHAIN_STEPS))
    two = _best(lambda: _chain_pair(out, _CHAIN_STEPS))
    result = {"chain": 2 * one / two}

    xs = rng.standard_normal((2, 96, 96), dtype=np.float32)
    ws = rng.standard_normal((2, 96, 96), dtype=np.float32)
    zs = np.empty((2, 96, 96), np.float32)
    one = _best(lambda: _fma(xs[0], ws[0], zs[0], _FMA_REPEATS))
    two = _best(lambda: _fma_pair(xs, ws, zs, _FMA_REPEATS))
    result["fma"] = 2 * one / two
    result["fma_gflops_1"] = 2 * 96**3 * _FMA_REPEATS / one / 1e9

    arrays = rng.standard_normal((2, _STREAM_BYTES // 4), dtype=np.float32)
    sums = np.zeros(2, np.float32)
    one = _best(lambda: _stream(arrays[0]))
    two = _best(lambda: _stream_pair(arrays, sums))
    result["stream"] = 2 * one / two
    result["stream_gbs_2"] = 2 * _STREAM_BYTES / two / 1e9

    x = rng.standard_normal((128, 784), dtype=np.float32)
    w = rng.standard_normal((784, 256), dtype=np.float32)
    z = np.empty((128, 256), np.float32)
    ran_on = np.zeros(2, np.int64)
    one = _best(lambda: two_tiles_serial(x, w, z), 50)
    two = _best(lambda: two_tiles(x, w, z, ran_on), 50)
    result["tiles"] = one / two  # the serial time is both tiles already
    if step:
        result["step_ms"] = _step_ms(step)
    return result


def _step_ms(name: str) -> float:
    from fastnn.bench import ALL_CONFIGS, build_fastnn, make_batch

    cfg = ALL_CONFIGS[name]
    model = build_fastnn(cfg)
    x, y = make_batch(cfg)
    for _ in range(300):
        model.train_step(x, y)
    blocks = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(100):
            model.train_step(x, y)
        blocks.append((time.perf_counter() - start) / 100)
    return float(np.median(blocks)) * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=0, help="run this many fresh processes, one line each")
    parser.add_argument("--gap", type=float, default=2.0, help="seconds between processes (default 2)")
    parser.add_argument("--step", default=None, help="also time this fastnn.bench config's train_step")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.json:
        print(json.dumps(measure(args.step)))
        return
    runs = []
    if args.processes:
        for _ in range(args.processes):
            command = [sys.executable, __file__, "--json"] + (["--step", args.step] if args.step else [])
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            runs.append((time.strftime("%H:%M:%S"), json.loads(done.stdout.strip().splitlines()[-1])))
            time.sleep(args.gap)
    else:
        runs.append((time.strftime("%H:%M:%S"), measure(args.step)))
    step = " step ms |" if args.step else ""
    print(f"2-thread speed-ups (2.0 = two free cores){'; step: ' + args.step if args.step else ''}")
    print(f"| time | chain | fma (1-thread GFLOP/s) | stream (2-thread GB/s) | tiles |{step}")
    print("|---|---|---|---|---|" + ("---|" if args.step else ""))
    for when, r in runs:
        cells = [
            when,
            f"{r['chain']:.2f}",
            f"{r['fma']:.2f} ({r['fma_gflops_1']:.0f})",
            f"{r['stream']:.2f} ({r['stream_gbs_2']:.0f})",
            f"{r['tiles']:.2f}",
        ]
        if args.step:
            cells.append(f"{r['step_ms']:.3f}")
        print("| " + " | ".join(cells) + " |")
    print(f"load average: {open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()
