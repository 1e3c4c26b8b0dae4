"""Typed scalar helpers shared by every kernel (CPU loops and CUDA kernels)."""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload
from numba.np.numpy_support import as_dtype

from .._config import JIT_INLINE, JIT_ORDERED


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


def big(ref):
    """The largest finite value of the dtype of the scalar or array ``ref``."""
    return np.finfo(np.asarray(ref).dtype).max


@overload(big, jit_options=dict(JIT_INLINE))
def _big_overload(ref):
    numba_type = ref.dtype if isinstance(ref, types.Array) else ref
    value = np.finfo(as_dtype(numba_type)).max

    def impl(ref):
        return value

    return impl


@njit(**JIT_INLINE)
def wide(value):
    """``value`` as float64: the working precision of loss terms (float32 errors square past 3e38)."""
    return np.float64(value)


@njit(**JIT_INLINE)
def is_finite(value):
    """Not inf and not NaN. (Numba lowers math.isfinite(x) as "x - x is ordered", which the
    kernels' fastmath flags fold to True: measured, isfinite(inf) gave True in a kernel.)"""
    return abs(value) <= big(value)


@njit(**JIT_INLINE)
def clamp_finite(value, ref):
    """``value`` limited to [-big, big] of ``ref``'s dtype (for statistics that must stay finite)."""
    limit = big(ref)
    return min(max(value, -limit), limit)


@njit(**JIT_ORDERED)  # not inlined: the caller's 'reassoc' would turn it into (a - b) / 2, which overflows
def halved_difference(a, b):
    """a/2 - b/2: finite for all finite a, b of one dtype (a - b itself overflows near +-max)."""
    half = like(0.5, a)
    return half * a - half * b


@njit(**JIT_ORDERED)  # not inlined: re-associated into (a + shift) - b, a is lost when shift is huge
def sub_shifted(a, b, shift):
    """a - (b - shift), in this order."""
    return a - (b - shift)
