"""CUDA twins of kernels/layout.py: (N, C, S) <-> (N * S, C) channel transposes, one thread per element."""

from __future__ import annotations

from numba import cuda

from ._common import BLOCK, blocks_for


@cuda.jit
def _transpose(x, rows, to_rows):
    c, s = x.shape[1], x.shape[2]
    for e in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        k = e % c
        r = e // c  # r = n * S + t: consecutive threads write consecutive row elements
        n = r // s
        t = r - n * s
        if to_rows:
            rows[r, k] = x[n, k, t]
        else:
            x[n, k, t] = rows[r, k]


def nchw_to_rows(x, rows):
    """rows[n * S + s, c] = x[n, c, s] (device arrays)."""
    _transpose[blocks_for(x.size), BLOCK](x, rows, True)


def rows_to_nchw(rows, x):
    """x[n, c, s] = rows[n * S + s, c] (device arrays)."""
    _transpose[blocks_for(x.size), BLOCK](x, rows, False)


__all__ = ["nchw_to_rows", "rows_to_nchw"]
