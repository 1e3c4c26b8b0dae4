"""One GEMM call per product shape of the mlp, mlp-bn-do and embed-10k layers, through fastnn's BLAS
binding (``kernels.blas.gemm``), which takes the register-blocked kernel or OpenBLAS by
``FASTNN_MICRO_GEMM``: run it once with each and compare.

    FASTNN_MICRO_GEMM=off python benchmarks/micro_gemm_ab.py      # OpenBLAS for every product
    FASTNN_MICRO_GEMM=on  python benchmarks/micro_gemm_ab.py      # fastnn's kernel (kernels/microgemm.py)

One thread (CPU time of the calling thread, so a busy machine moves it less), median of 7 blocks of
300 calls, float32, microseconds. Shapes as ``m x k x n``: ``N`` is ``A @ B`` (a forward), ``TN``
``A.T @ B`` (a weight gradient); the last column is a whole ``dense_forward`` of 784 -> 256.
"""

from __future__ import annotations

import os
import time

import numba
import numpy as np

numba.set_num_threads(1)

from fastnn.kernels import blas, dense  # noqa: E402  (after the thread count is set)

SHAPES = [  # (m, k, n, A transposed)
    (128, 784, 256, False),
    (128, 256, 128, False),
    (784, 128, 256, True),
    (256, 128, 128, True),
    (256, 512, 512, False),
    (64, 2048, 128, False),
]


def _median_us(fn, calls=300, blocks=7) -> float:
    times = []
    for _ in range(blocks):
        start = time.thread_time()
        for _ in range(calls):
            fn()
        times.append((time.thread_time() - start) / calls)
    return sorted(times)[blocks // 2] * 1e6


def main() -> None:
    rng = np.random.default_rng(0)
    cells = []
    for m, k, n, trans in SHAPES:
        a = rng.standard_normal((k, m) if trans else (m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = np.empty((m, n), np.float32)
        blas.gemm(trans, False, 1.0, a, b, 0.0, c)  # compile, first touch
        cells.append(
            f"{m}x{k}x{n}{'TN' if trans else 'N'} {_median_us(lambda: blas.gemm(trans, False, 1.0, a, b, 0.0, c)):.1f}"
        )
    x = rng.standard_normal((128, 784)).astype(np.float32)
    w = rng.standard_normal((784, 256)).astype(np.float32)
    bias, z = np.zeros(256, np.float32), np.empty((128, 256), np.float32)
    dense.dense_forward(x, w, bias, z, z, 0, 0.0)
    cells.append(f"dense_forward {_median_us(lambda: dense.dense_forward(x, w, bias, z, z, 0, 0.0)):.1f}")
    print(f"FASTNN_MICRO_GEMM={os.environ.get('FASTNN_MICRO_GEMM', 'auto')}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
