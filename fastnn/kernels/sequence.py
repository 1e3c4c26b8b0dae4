"""Sequence reductions over (batch, time, features) that honour per-sample lengths.

``lengths`` is int64: (batch,) valid leading steps of each sample (values clipped to [0, time]),
or an empty (0,) array when every step is valid. A sample of length 0 gives zeros forward and
zero gradients. Forward outputs are (batch, features); gradients at padded steps are 0.
Each sample's work is independent (no reduction across the batch): bit-identical on any number
of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._config import JIT, JIT_INLINE, JIT_PARALLEL, PARALLEL_MIN_ELEMENTS
from ._scalar import like


@njit(**JIT_INLINE)
def valid_steps(lengths, b, steps):
    """Valid steps of sample ``b``: ``lengths[b]`` clipped to [0, steps], or ``steps`` without lengths."""
    if lengths.shape[0] == 0:
        return steps
    return min(max(lengths[b], 0), steps)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _sample(x, y, lengths, b, last, backward):
    """One sample of the last-step pick or the time mean (``backward``: x is grad_x, y grad_y)."""
    steps = x.shape[1]
    n = valid_steps(lengths, b, steps)
    zero = like(0.0, x)
    if backward:
        x[b, :, :] = zero
        if n > 0:
            if last:
                x[b, n - 1, :] = y[b]
            else:
                inv = like(1.0, x) / like(n, x)
                for t in range(n):
                    x[b, t, :] = y[b] * inv
        return
    if n == 0:
        y[b, :] = zero
    elif last:
        y[b, :] = x[b, n - 1]
    else:
        row = y[b]
        row[:] = x[b, 0]
        for t in range(1, n):
            row += x[b, t]
        row *= like(1.0, x) / like(n, x)


@njit(**JIT_PARALLEL)
def _samples(x, y, lengths, last, backward):
    if x.size < PARALLEL_MIN_ELEMENTS:
        for b in range(x.shape[0]):
            _sample(x, y, lengths, b, last, backward)
    else:
        for b_u in prange(x.shape[0]):
            _sample(x, y, lengths, np.int64(b_u), last, backward)  # prange indices are uint64


@njit(**JIT)
def last_step_forward(x, lengths, y):
    """y[b] = x[b, valid_steps(b) - 1]; x (batch, time, features), y (batch, features)."""
    _samples(x, y, lengths, True, False)


@njit(**JIT)
def last_step_backward(grad_y, lengths, grad_x):
    """grad_x[b, valid_steps(b) - 1] = grad_y[b], 0 at every other step."""
    _samples(grad_x, grad_y, lengths, True, True)


@njit(**JIT)
def time_mean_forward(x, lengths, y):
    """y[b] = mean of x[b, :valid_steps(b)] over time; x (batch, time, features), y (batch, features)."""
    _samples(x, y, lengths, False, False)


@njit(**JIT)
def time_mean_backward(grad_y, lengths, grad_x):
    """grad_x[b, t] = grad_y[b] / valid_steps(b) for valid t, 0 at padded steps."""
    _samples(grad_x, grad_y, lengths, False, True)


__all__ = ["last_step_backward", "last_step_forward", "time_mean_backward", "time_mean_forward", "valid_steps"]

#: the functions the object layer calls (fastnn.backend.kernels); the CUDA twin module has them too
DEVICE_API = ("last_step_forward", "last_step_backward", "time_mean_forward", "time_mean_backward")
