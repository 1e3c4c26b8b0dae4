"""Elementwise arithmetic on (batch, features) arrays: the residual connection's sum.

``add(a, b, out)``: out = a + b (Residual: block output + skip in the forward pass, gradient
of the block's input + gradient of the skip in the backward pass). A kernel rather than
``np.add`` so a step's calls are all kernels and can be fused into one (``fastnn._fused``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._config import JIT_INLINE, JIT_PARALLEL, PARALLEL_MIN_ELEMENTS, REDUCTION_CHUNK_ROWS
from ._scalar import n_chunks, start_of


@njit(**JIT_INLINE)
def _add_rows(a, b, out, r0, r1):
    n = out.shape[1]
    for i in range(r0, r1):
        ai, bi, oi = a[i], b[i], out[i]
        for j in range(n):
            oi[j] = ai[j] + bi[j]


@njit(**JIT_PARALLEL)
def add(a, b, out):
    """out = a + b; a, b, out (batch, features) of one dtype, float32 or float64; ``out`` may be
    ``a`` or ``b``. Parallel over row chunks from PARALLEL_MIN_ELEMENTS values."""
    m = out.shape[0]
    if out.size < PARALLEL_MIN_ELEMENTS:
        _add_rows(a, b, out, start_of(m), m)
    else:
        for c_u in prange(n_chunks(m, REDUCTION_CHUNK_ROWS)):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            r0 = c * REDUCTION_CHUNK_ROWS
            _add_rows(a, b, out, r0, min(m, r0 + REDUCTION_CHUNK_ROWS))


__all__ = ["add"]

#: the functions the object layer calls (fastnn.backend.kernels); the CUDA twin module has them too
DEVICE_API = ("add",)
