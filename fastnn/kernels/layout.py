"""Channel transposes between (N, C, S) and (N * S, C), so per-feature kernels (batch norm) run
per channel of convolutional activations: S is the flattened spatial size (H * W, or L).

One dtype, C-contiguous; (N, C, H, W) arrays pass as their (N, C, H * W) views. Pure copies:
each task writes one sample's block, so results never depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._config import JIT, JIT_PARALLEL, PARALLEL_MIN_ELEMENTS


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _transpose_sample(x, rows, n, to_rows):
    c, s = x.shape[1], x.shape[2]
    xs, block = x[n], rows[n * s : (n + 1) * s]
    for k in range(c):
        for t in range(s):
            if to_rows:
                block[t, k] = xs[k, t]
            else:
                xs[k, t] = block[t, k]


@njit(**JIT_PARALLEL)
def _transpose(x, rows, to_rows):
    if x.size < PARALLEL_MIN_ELEMENTS:
        for n in range(x.shape[0]):
            _transpose_sample(x, rows, n, to_rows)
    else:
        for n_u in prange(x.shape[0]):
            n = np.int64(n_u)  # prange indices are uint64; int64 like the serial twin
            _transpose_sample(x, rows, n, to_rows)


@njit(**JIT)
def nchw_to_rows(x, rows):
    """rows[n * S + s, c] = x[n, c, s]; x (N, C, S), rows (N * S, C)."""
    _transpose(x, rows, True)


@njit(**JIT)
def rows_to_nchw(rows, x):
    """x[n, c, s] = rows[n * S + s, c]; rows (N * S, C), x (N, C, S)."""
    _transpose(x, rows, False)


__all__ = ["nchw_to_rows", "rows_to_nchw"]

#: the functions the object layer calls (fastnn.backend.kernels); the CUDA twin module has them too
DEVICE_API = ("nchw_to_rows", "rows_to_nchw")
