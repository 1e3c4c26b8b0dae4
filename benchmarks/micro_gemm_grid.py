"""fastnn's register-blocked GEMM (kernels/microgemm.py) against OpenBLAS on a grid of a Dense layer's
product shapes, on the output tiles that ``dense_forward`` / ``dense_backward`` give each kernel: which
of the two is faster where, for the shape rule of ``microgemm.micro_wanted``.

    python benchmarks/micro_gemm_grid.py            # the whole grid (about a minute)
    python benchmarks/micro_gemm_grid.py --quick    # m in {64, 200}, k in {64, 256}, n in {64, 100, 256}

One thread, float32, best of 5 blocks, microseconds per product (all its tiles, run in a loop as the
kernels run them on one thread). ``N``: the forward ``x @ w`` (m x k @ k x n); ``TN``: the weight
gradient ``x.T @ grad_z`` (k x m @ m x n, inner size m). Each row gives the tile the rule sees
(rows x cols, inner size), both times, their ratio (micro / OpenBLAS: below 1 the register-blocked
kernel wins) and what ``micro_wanted`` chooses for that tile.
"""

from __future__ import annotations

import os
import sys
import time

os.environ["FASTNN_MICRO_GEMM"] = "off"  # gemm_block: OpenBLAS always; micro_gemm_block is called directly
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

numba.set_num_threads(1)

from fastnn import _config  # noqa: E402
from fastnn.kernels import blas, microgemm  # noqa: E402

M = (32, 64, 128, 200, 256, 512)
K = (32, 64, 100, 128, 256, 512, 784)
N = (32, 64, 100, 128, 256)


@njit
def _tiles_blas(trans_a, a, b, c, grid, reps):
    rows, cols, row_tiles, col_tiles = grid
    for _ in range(reps):
        for t in range(row_tiles * col_tiles):
            r0 = (t // col_tiles) * rows
            c0 = (t % col_tiles) * cols
            blas.gemm_block(
                trans_a, False, 1.0, a, b, 0.0, c, r0, min(r0 + rows, c.shape[0]), c0, min(c0 + cols, c.shape[1])
            )


@njit
def _tiles_micro(trans_a, a, b, c, grid, reps):
    rows, cols, row_tiles, col_tiles = grid
    for _ in range(reps):
        for t in range(row_tiles * col_tiles):
            r0 = (t // col_tiles) * rows
            c0 = (t % col_tiles) * cols
            microgemm.micro_gemm_block(trans_a, a, b, c, r0, min(r0 + rows, c.shape[0]), c0, min(c0 + cols, c.shape[1]))


def _grid(m, n, k, small_form):
    """dense._grid's tiles of an m x n output with inner size k (its rule, from the public pieces)."""
    if m * n * k < _config.PARALLEL_MIN_MACS:
        return (m, n, 1, 1)
    return tuple(
        int(v) for v in blas.tile_grid(m, n, k, _config.GEMM_TILES, _config.SMALL_GEMM_MACS if small_form else 0)
    )


def _best_us(fn, *args) -> float:
    macs = args[1].size * args[2].shape[1]
    reps = max(1, int(2e6 // max(macs, 1)))
    fn(*args, 1)
    best = np.inf
    for _ in range(5):
        start = time.perf_counter()
        fn(*args, reps)
        best = min(best, (time.perf_counter() - start) / reps)
    return best * 1e6


def main() -> None:
    quick = "--quick" in sys.argv
    ms, ks, ns = ((64, 200), (64, 256), (64, 100, 256)) if quick else (M, K, N)
    rng = np.random.default_rng(0)
    print(f"GEMM_TILES={_config.GEMM_TILES} SMALL_GEMM_MACS={_config.SMALL_GEMM_MACS} OpenBLAS {blas.CORE_NAME}")
    print(f"{'form':4s} {'m':>4s} {'k':>4s} {'n':>4s}  {'tile':>14s} {'openblas':>9s} {'micro':>9s} {'ratio':>6s} rule")
    for m in ms:
        for k in ks:
            for n in ns:
                for form in ("N", "TN"):
                    if form == "N":  # x (m, k) @ w (k, n) -> (m, n)
                        a, rows, inner = rng.standard_normal((m, k)).astype(np.float32), m, k
                    else:  # x.T @ grad_z: x (m, k), grad_z (m, n) -> (k, n), inner size m
                        a, rows, inner = rng.standard_normal((m, k)).astype(np.float32), k, m
                    b = rng.standard_normal((inner, n)).astype(np.float32)
                    c = np.empty((rows, n), np.float32)
                    grid = _grid(rows, n, inner, True)
                    trans = form == "TN"
                    ob = _best_us(_tiles_blas, trans, a, b, c, grid)
                    mi = _best_us(_tiles_micro, trans, a, b, c, grid)
                    tile = f"{grid[0]}x{grid[1]}x{inner}"
                    rule = "micro" if microgemm.micro_wanted_shape(grid[0], grid[1], inner) else "blas"
                    print(
                        f"{form:4s} {m:4d} {k:4d} {n:4d}  {tile:>14s} {ob:9.2f} {mi:9.2f} {mi / ob:6.2f} {rule}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
