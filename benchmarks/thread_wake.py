"""Does Numba's second thread take its tile? The 2-thread slow mode of fastnn's steps, seen per region.

    python benchmarks/thread_wake.py                 # tbb (fastnn's default threading layer)
    NUMBA_THREADING_LAYER=omp python benchmarks/thread_wake.py

fastnn's parallel GEMMs split a product into two output tiles run by a ``prange`` over two tasks
(``fastnn.kernels.dense``). This script runs that region alone (the mlp's first layer: 128x784 @
784x256, float32, fastnn's one-thread OpenBLAS per tile) and records, for every call, its time and
which Numba thread ran each tile (``numba.get_thread_id``). Patterns of calls:

  back to back      400 calls in a row
  after a sleep     10 rounds of (sleep 50 ms, 20 calls): the process idle between bursts, as a
                    benchmark's pause before each timed block or a fit's validation pass leaves it
  after NumPy       10 rounds of (20 calls of NumPy's own 2-thread ``x @ w``, 20 calls): NumPy's
                    OpenBLAS threads spin for a while after their last call

For each: the median call, the one-thread time of the same two tiles (a loop), and the share of
calls where one thread ran both tiles (the second thread never joined the region).
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np
from numba import njit, prange

from fastnn.kernels.blas import gemm_block


@njit(parallel=True)
def two_tiles(x, w, z, ran_on):
    """z = x @ w (float32) in two column tiles, one per ``prange`` task; ran_on[t] = the Numba thread of tile t."""
    m, n = z.shape
    for t in prange(2):
        ran_on[t] = numba.get_thread_id()
        gemm_block(False, False, np.float32(1.0), x, w, np.float32(0.0), z, 0, m, t * n // 2, (t + 1) * n // 2)


@njit
def two_tiles_serial(x, w, z):
    """The same two tiles of ``two_tiles`` in a loop on the calling thread (its one-thread time)."""
    m, n = z.shape
    for t in range(2):
        gemm_block(False, False, np.float32(1.0), x, w, np.float32(0.0), z, 0, m, t * n // 2, (t + 1) * n // 2)


def _calls(x, w, z, ran_on, count: int) -> tuple[list[float], int]:
    """(seconds of each call, calls where one thread ran both tiles)."""
    seconds, alone = [], 0
    for _ in range(count):
        start = time.perf_counter()
        two_tiles(x, w, z, ran_on)
        seconds.append(time.perf_counter() - start)
        alone += int(ran_on[0] == ran_on[1])
    return seconds, alone


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="128,784,256", help="m,k,n of the product (default the mlp's first layer)")
    args = parser.parse_args(argv)
    m, k, n = (int(s) for s in args.shape.split(","))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((k, n), dtype=np.float32)
    z = np.empty((m, n), np.float32)
    ran_on = np.zeros(2, np.int64)
    two_tiles(x, w, z, ran_on)
    two_tiles_serial(x, w, z)
    serial = []
    for _ in range(100):
        start = time.perf_counter()
        two_tiles_serial(x, w, z)
        serial.append(time.perf_counter() - start)

    rows = []
    seconds, alone = _calls(x, w, z, ran_on, 400)
    rows.append(("back to back", seconds, alone))
    seconds, alone = [], 0
    for _ in range(10):
        time.sleep(0.05)
        s, a = _calls(x, w, z, ran_on, 20)
        seconds += s
        alone += a
    rows.append(("after a sleep", seconds, alone))
    seconds, alone = [], 0
    for _ in range(10):
        for _ in range(20):
            x @ w
        s, a = _calls(x, w, z, ran_on, 20)
        seconds += s
        alone += a
    rows.append(("after NumPy", seconds, alone))

    print(f"threading layer {numba.threading_layer()}, {numba.get_num_threads()} threads, {m}x{k} @ {k}x{n} float32")
    print(f"one thread, both tiles in a loop: {np.median(serial) * 1e6:.0f} us")
    print("| calls | median us | p90 us | one thread ran both tiles |")
    print("|---|---|---|---|")
    for name, seconds, alone in rows:
        us = np.array(seconds) * 1e6
        print(f"| {name} | {np.median(us):.0f} | {np.quantile(us, 0.9):.0f} | {alone}/{len(us)} |")


if __name__ == "__main__":
    main()
