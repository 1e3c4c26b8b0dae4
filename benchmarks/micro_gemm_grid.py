"""fastnn's register-blocked GEMM (kernels/microgemm.py) against OpenBLAS on a grid of a Dense layer's
product shapes, on the output tiles that ``dense_forward`` / ``dense_backward`` give each kernel: which
of the two is faster where, for the shape rule of ``microgemm.micro_wanted``.

    python benchmarks/micro_gemm_grid.py            # the whole grid (about a minute)
    python benchmarks/micro_gemm_grid.py --quick    # m in {64, 200}, k in {64, 256}, n in {64, 100, 256}
    python benchmarks/micro_gemm_grid.py --small    # narrow and short products, float32 and float64
    python benchmarks/micro_gemm_grid.py --float64  # the grid (or --quick) in float64
    python benchmarks/micro_gemm_grid.py --nt       # the NT form only (any of the above)
    python benchmarks/micro_gemm_grid.py --partial  # widths that end in a partial vector, float32 and float64

``--small`` covers what the grid leaves out, the products of scikit-learn-style nets and of the
"tiny" bench net: batches of 2-8, 32 and 200 rows (m), inner sizes from 2 (k), outputs from 2 wide
(n: a classifier's 10, 16-wide hidden layers). Batch 1 is not measured: ``gemm_block`` gives a
one-row product to the row-times-matrix kernel (kernels/gemv.py) or OpenBLAS's gemv, never to
either GEMM.

``--partial`` covers widths that are not a multiple of the vectors (the kernel's last vector masked):
a classifier's 10 outputs, LeNet's 84 and 120, 100 hidden units, and others around the vectors
(16 float32 lanes) and panels (64), at products from 0.2 to 30 million multiply-adds.

One thread, float32 (and float64 where asked), best of 5 blocks, microseconds per product (all
its tiles, run in a loop as the kernels run them on one thread). ``N``: the forward ``x @ w`` (m x k @ k x n); ``TN``: the weight
gradient ``x.T @ grad_z`` (k x m @ m x n, inner size m); ``NT``: the input gradient ``grad_z @ w.T``
(here ``m x k @ (n x k).T``: a layer of ``n`` inputs and ``k`` outputs, inner size k). The micro times include a call of
``gemm_block`` on an empty block per tile (its entry and argument checks: ~0.05 us), as the products
that ``gemm_block`` sends to the kernel pay them. Each row gives the tile the rule sees
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
#: --small: batches (m), inner sizes (k) and outputs (n) below the grid's (and a few of its own to join them)
SMALL_M = (2, 3, 4, 5, 6, 7, 8, 32, 200)
SMALL_K = (2, 10, 16, 32, 100, 256)
SMALL_N = (2, 10, 16, 24, 32, 64, 100, 256)
#: --partial: widths (n) ending in a partial vector, and batches (m) and inner sizes (k) around the rule's 10**6
PARTIAL_M = (32, 128, 256)
PARTIAL_K = (64, 256, 784)
PARTIAL_N = (10, 20, 36, 50, 72, 84, 100, 120, 136, 200)


@njit
def _tiles_blas(trans_a, trans_b, a, b, c, grid, reps):
    rows, cols, row_tiles, col_tiles = grid
    for _ in range(reps):
        for t in range(row_tiles * col_tiles):
            r0 = (t // col_tiles) * rows
            c0 = (t % col_tiles) * cols
            blas.gemm_block(
                trans_a, trans_b, 1.0, a, b, 0.0, c, r0, min(r0 + rows, c.shape[0]), c0, min(c0 + cols, c.shape[1])
            )


@njit
def _tiles_micro(trans_a, trans_b, a, b, c, grid, reps):
    rows, cols, row_tiles, col_tiles = grid
    for _ in range(reps):
        for t in range(row_tiles * col_tiles):
            r0 = (t // col_tiles) * rows
            c0 = (t % col_tiles) * cols
            # gemm_block's entry and return (an empty block): what the kernel costs when gemm_block takes it to it
            blas.gemm_block(trans_a, trans_b, 1.0, a, b, 0.0, c, r0, r0, c0, c0)
            r1, c1 = min(r0 + rows, c.shape[0]), min(c0 + cols, c.shape[1])
            microgemm.micro_gemm_block(trans_a, a, b, c, r0, r1, c0, c1, trans_b)


def _grid(m, n, k, small_form):
    """dense._grid's tiles of an m x n output with inner size k (its rule, from the public pieces)."""
    if m * n * k < _config.PARALLEL_MIN_MACS:
        return (m, n, 1, 1)
    return tuple(
        int(v) for v in blas.tile_grid(m, n, k, _config.GEMM_TILES, _config.SMALL_GEMM_MACS if small_form else 0)
    )


def _pair_us(a, b, c, trans_a, trans_b, grid) -> tuple[float, float]:
    """(OpenBLAS, micro) microseconds of one product: best of 5 blocks each, the two alternated."""
    macs = a.size * c.shape[1]
    reps = max(1, int(2e6 // max(macs, 1)))
    _tiles_blas(trans_a, trans_b, a, b, c, grid, 1)
    _tiles_micro(trans_a, trans_b, a, b, c, grid, 1)
    best = [np.inf, np.inf]
    for _ in range(5):
        for which, fn in enumerate((_tiles_blas, _tiles_micro)):
            start = time.perf_counter()
            fn(trans_a, trans_b, a, b, c, grid, reps)
            best[which] = min(best[which], (time.perf_counter() - start) / reps)
    return best[0] * 1e6, best[1] * 1e6


def _measure(rng, form, m, k, n, dtype) -> str:
    """One row of the table: the product of a batch of ``m`` rows, ``k`` inputs and ``n`` outputs."""
    if form == "N":  # x (m, k) @ w (k, n) -> (m, n)
        a, rows, inner = rng.standard_normal((m, k)).astype(dtype), m, k
    elif form == "TN":  # x.T @ grad_z: x (m, k), grad_z (m, n) -> (k, n), inner size m
        a, rows, inner = rng.standard_normal((m, k)).astype(dtype), k, m
    else:  # NT, grad_z @ w.T: grad_z (m, k), w (n, k) -> (m, n), inner size k
        a, rows, inner = rng.standard_normal((m, k)).astype(dtype), m, k
    trans_a, trans_b = form == "TN", form == "NT"
    b = rng.standard_normal((n, inner) if trans_b else (inner, n)).astype(dtype)
    c = np.empty((rows, n), dtype)
    grid = _grid(rows, n, inner, not trans_b)  # blas.small_kernel_form: every form but A @ B.T
    ob, mi = _pair_us(a, b, c, trans_a, trans_b, grid)
    tile = f"{grid[0]}x{grid[1]}x{inner}"
    wanted = microgemm.micro_wanted_shape(grid[0], grid[1], inner, trans_b, blas.OPENBLAS_FAMILY)
    rule = "micro" if wanted else "blas"
    name = np.dtype(dtype).name.replace("float", "f")
    return f"{form:4s} {name:3s} {m:4d} {k:4d} {n:4d}  {tile:>14s} {ob:9.3f} {mi:9.3f} {mi / ob:6.2f} {rule}"


def main() -> None:
    quick, small = "--quick" in sys.argv, "--small" in sys.argv
    forms = ("NT",) if "--nt" in sys.argv else ("N", "TN", "NT")
    if small:
        ms, ks, ns, dtypes = SMALL_M, SMALL_K, SMALL_N, (np.float32, np.float64)
    elif "--partial" in sys.argv:
        ms, ks, ns, dtypes = PARTIAL_M, PARTIAL_K, PARTIAL_N, (np.float32, np.float64)
    else:
        ms, ks, ns = ((64, 200), (64, 256), (64, 100, 256)) if quick else (M, K, N)
        dtypes = (np.float64,) if "--float64" in sys.argv else (np.float32,)
    rng = np.random.default_rng(0)
    print(f"GEMM_TILES={_config.GEMM_TILES} SMALL_GEMM_MACS={_config.SMALL_GEMM_MACS} OpenBLAS {blas.CORE_NAME}")
    print(
        f"{'form':4s} {'dt':3s} {'m':>4s} {'k':>4s} {'n':>4s}  {'tile':>14s} {'openblas':>9s} {'micro':>9s} {'ratio':>6s} rule"
    )
    for dtype in dtypes:
        for m in ms:
            for k in ks:
                for n in ns:
                    for form in forms:
                        print(_measure(rng, form, m, k, n, dtype), flush=True)


if __name__ == "__main__":
    main()
