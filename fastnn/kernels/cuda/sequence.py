"""CUDA twins of kernels/sequence.py: one thread per (sample, feature), looping over time.

The valid steps come from the CPU module's :func:`~fastnn.kernels.sequence.valid_steps`. Shapes
and arguments as on the CPU; ``lengths`` may be a host array (copied to the device per call).
"""

from __future__ import annotations

from numba import cuda

from .. import sequence
from .._scalar import like
from ._common import BLOCK, blocks_for

#: the CPU's valid_steps (it takes the lengths array) as a device function
valid_steps = cuda.jit(device=True)(sequence.valid_steps.py_func)


def device_lengths(lengths):
    """``lengths`` on the device: a host int64 array is copied (an empty one stays tiny)."""
    return cuda.to_device(lengths) if hasattr(lengths, "__array_interface__") else lengths


@cuda.jit
def _samples(x, y, lengths, last, backward):
    steps, features = x.shape[1], x.shape[2]
    zero = like(0.0, x)
    for e in range(cuda.grid(1), x.shape[0] * features, cuda.gridsize(1)):
        b = e // features
        f = e - b * features
        n = valid_steps(lengths, b, steps)
        if backward:
            for t in range(steps):
                if t >= n or (last and t != n - 1):
                    x[b, t, f] = zero
                else:
                    x[b, t, f] = y[b, f] if last else y[b, f] * (like(1.0, x) / like(n, x))
        elif n == 0:
            y[b, f] = zero
        elif last:
            y[b, f] = x[b, n - 1, f]
        else:
            acc = x[b, 0, f]
            for t in range(1, n):
                acc += x[b, t, f]
            y[b, f] = acc * (like(1.0, x) / like(n, x))


def _launch(x, y, lengths, last, backward):
    _samples[blocks_for(x.shape[0] * x.shape[2]), BLOCK](x, y, device_lengths(lengths), last, backward)


def last_step_forward(x, lengths, y):
    """y[b] = x[b, valid_steps(b) - 1] on the device."""
    _launch(x, y, lengths, True, False)


def last_step_backward(grad_y, lengths, grad_x):
    """grad_x[b, valid_steps(b) - 1] = grad_y[b], 0 elsewhere, on the device."""
    _launch(grad_x, grad_y, lengths, True, True)


def time_mean_forward(x, lengths, y):
    """y[b] = mean of x[b, :valid_steps(b)] on the device."""
    _launch(x, y, lengths, False, False)


def time_mean_backward(grad_y, lengths, grad_x):
    """grad_x[b, t] = grad_y[b] / valid_steps(b) for valid t, 0 elsewhere, on the device."""
    _launch(grad_x, grad_y, lengths, False, True)


__all__ = [
    "device_lengths",
    "valid_steps",
    "last_step_backward",
    "last_step_forward",
    "time_mean_backward",
    "time_mean_forward",
]
