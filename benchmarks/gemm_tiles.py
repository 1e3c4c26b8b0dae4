"""One serial BLAS call against the same GEMM in fastnn's tiles (kernels/blas.py: tile_grid).

    python benchmarks/gemm_tiles.py                  # float32, 1 thread: the tiles run one after another
    python benchmarks/gemm_tiles.py --dtype float64

For each shape (m x k) @ (k x n) and each form the layers use: ``N`` = x @ w (forward), ``T`` =
x.T @ grad (weight gradient, inner size = batch), ``B`` = grad @ w.T (input gradient), the time of one
``gemm_block`` call over the whole output and of the tiles ``tile_grid`` gives for one thread
(``tiles=1``: the small-kernel sizing alone; the ``B`` form is never sized, as the kernels do).
Best of 5 blocks, microseconds per product. A ratio below 1: the tiles are faster.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from numba import njit

from fastnn.kernels.blas import gemm_block, small_kernel_form, tile_grid
from fastnn.kernels.tiling import small_gemm_macs

# (m, k, n): the sklearn fit's layers (batch 200), mlp's (784-256-128, batch 128), embed-10k's dense
# (64 x 2048 -> 128) and two long inner sizes
SHAPES = ((200, 100, 100), (200, 64, 100), (128, 784, 256), (128, 256, 128), (64, 1024, 128), (64, 2048, 128))
FORMS = {"N": (False, False), "T": (True, False), "B": (False, True)}


@njit
def _run(trans_a, trans_b, a, b, c, grid, reps):
    m, n = c.shape
    one, zero = c.dtype.type(1), c.dtype.type(0)
    for _ in range(reps):
        for i in range(grid[2]):
            for j in range(grid[3]):
                r0, c0 = i * grid[0], j * grid[1]
                gemm_block(trans_a, trans_b, one, a, b, zero, c, r0, min(m, r0 + grid[0]), c0, min(n, c0 + grid[1]))


@njit
def _small_macs():
    return small_gemm_macs()


def _time(trans_a, trans_b, a, b, c, grid, k) -> float:
    _run(trans_a, trans_b, a, b, c, grid, 1)
    reps = max(5, int(1e8 / (c.size * k)))
    best = np.inf
    for _ in range(5):
        start = time.perf_counter()
        _run(trans_a, trans_b, a, b, c, grid, reps)
        best = min(best, (time.perf_counter() - start) / reps)
    return best * 1e6


def operands(form: str, m: int, k: int, n: int, dtype, rng):
    """(a, b, c, inner size) of the form's product for a layer (m x k) -> (m x n)."""
    x, w, g = (rng.standard_normal(s).astype(dtype) for s in ((m, k), (k, n), (m, n)))
    if form == "N":
        return x, w, np.empty((m, n), dtype), k
    if form == "T":
        return x, g, np.empty((k, n), dtype), m
    return g, w, np.empty((m, k), dtype), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    small = _small_macs()
    print(f"small-kernel size: {small:,} multiply-adds ({args.dtype}, 1 thread)\n")
    print(
        "| m x k -> n | form | one call us | tiles us | tiles / one call | tile grid (rows, cols, row tiles, col tiles) |"
    )
    print("|---|---|---|---|---|---|")
    for m, k, n in SHAPES:
        for form, (trans_a, trans_b) in FORMS.items():
            a, b, c, inner = operands(form, m, k, n, np.dtype(args.dtype), rng)
            grid = tile_grid(c.shape[0], c.shape[1], inner, 1, small if small_kernel_form(trans_a, trans_b) else 0)
            whole = _time(trans_a, trans_b, a, b, c, (c.shape[0], c.shape[1], 1, 1), inner)
            tiled = _time(trans_a, trans_b, a, b, c, grid, inner)
            print(f"| {m} x {k} -> {n} | {form} | {whole:.1f} | {tiled:.1f} | {tiled / whole:.2f} | {tuple(grid)} |")


if __name__ == "__main__":
    main()
