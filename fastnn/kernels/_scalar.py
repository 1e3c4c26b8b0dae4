"""Typed scalar helpers shared by every kernel (CPU loops and, later, CUDA kernels)."""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload
from numba.np.numpy_support import as_dtype

from .._config import JIT_INLINE


def like(value, ref):
    """``value`` cast to the dtype of the scalar or array ``ref`` (float32 stays float32)."""
    return np.asarray(ref).dtype.type(value)


@overload(like, jit_options=dict(JIT_INLINE))
def _like_overload(value, ref):
    numba_type = ref.dtype if isinstance(ref, types.Array) else ref
    scalar = as_dtype(numba_type).type

    def impl(value, ref):
        return scalar(value)

    return impl


@njit(**JIT_INLINE)
def n_chunks(n, chunk):
    """Number of fixed-size chunks of ``chunk`` items covering ``n`` items."""
    return (n + chunk - 1) // chunk


@njit(**JIT_INLINE)
def nonneg(i):
    """An index known to be >= 0, as uint64: numba then skips the negative-index wraparound, a
    select per access that otherwise stops vectorisation of flat copy loops (4-10x measured)."""
    return np.uint64(i)


@njit(**JIT_INLINE)
def start_of(n):
    """A 0 typed like ``n`` (int64), not a literal: serial twins pass it where the parallel path
    passes a computed row, so the callee is compiled once instead of once more for literal 0."""
    return n - n
