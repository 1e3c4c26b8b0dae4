"""The convolution forward's product ``zcol = w2 @ col``: fastnn's direct thin loops beside BLAS.

    NUMBA_NUM_THREADS=1 python benchmarks/conv_thin_forward.py

For each (rows, K, columns, groups) shape, float32 and float64: the best of 7 blocks of 20 calls
(us per call, CPU time of the calling thread) of ``kernels.conv.thin_forward`` (used when
``is_thin_forward``: an even number of rows per group, at most ``THIN_FORWARD_WEIGHTS`` weights per
group) and of one BLAS GEMM per group (the forward's other path at one thread), and which one the
forward takes.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

from fastnn.kernels import conv
from fastnn.kernels.blas import gemm

#: (output channels, weights per output row, columns = batch * positions, groups)
SHAPES = [
    (6, 25, 36864, 1),  # LeNet conv1 at batch 64
    (6, 25, 576, 1),  # LeNet conv1 at batch 1
    (8, 9, 36864, 1),
    (32, 9, 8192, 16),
    (16, 50, 8192, 1),
    (16, 27, 4096, 1),
    (16, 150, 4096, 1),  # LeNet conv2
    (32, 80, 16384, 1),  # the 1-D CNN's conv1
]


@njit
def group_gemm(w2, col, zcol, columns, groups, one, zero):
    """zcol_g[:, :columns] = w2_g @ col_g[:, :columns], one BLAS call per group."""
    m, k = w2.shape[0] // groups, w2.shape[1]
    for g in range(groups):
        gemm(
            False,
            False,
            one,
            w2[g * m : (g + 1) * m],
            col[g * k : (g + 1) * k, :columns],
            zero,
            zcol[g * m : (g + 1) * m, :columns],
        )


def best_us(fn, *args, blocks=7, calls=20):
    fn(*args)
    best = float("inf")
    for _ in range(blocks):
        t0 = time.thread_time()
        for _ in range(calls):
            fn(*args)
        best = min(best, (time.thread_time() - t0) / calls)
    return best * 1e6


def main() -> None:
    rng = np.random.default_rng(0)
    print("| dtype | rows x K over columns (groups) | thin us | BLAS us | forward takes |")
    print("|---|---|---|---|---|")
    for dtype in (np.float32, np.float64):
        for rows, k, columns, groups in SHAPES:
            w2 = rng.standard_normal((rows, k)).astype(dtype)
            col = rng.standard_normal((k * groups, columns)).astype(dtype)
            zcol = np.zeros((rows, columns), dtype)
            thin = conv.is_thin_forward(w2, groups)
            direct = (
                best_us(conv.thin_forward, w2, col, zcol, columns, groups) if rows // groups % 2 == 0 else float("nan")
            )
            blas = best_us(group_gemm, w2, col, zcol, columns, groups, dtype(1), dtype(0))
            name = np.dtype(dtype).name
            print(
                f"| {name} | {rows} x {k} over {columns} ({groups}) | {direct:.0f} | {blas:.0f} | {'thin' if thin else 'BLAS'} |"
            )


if __name__ == "__main__":
    main()
