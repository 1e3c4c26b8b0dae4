"""CUDA twins of kernels/activations.py: the same launchers, the same scalar functions.

Elementwise activations run one thread per element (grid-stride) and call the CPU module's
scalar :func:`activate` / :func:`activate_grad`, so both backends share one source of every
formula. Softmax and log_softmax run one thread per row (the same algorithm as the CPU's
``rows_activate``; that function takes arrays, which the simulator cannot pass to ``@njit``
code, so the row loop is restated here). Arrays are device arrays (batch, features), float32
or float64.
"""
from __future__ import annotations

import math

from numba import cuda

from .._scalar import like
from ..activations import ROWWISE_CODES, SOFTMAX, activate, activate_grad
from ._common import BLOCK, blocks_for, typed


@cuda.jit
def _forward_elementwise(x, out, code, alpha):
    n = x.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, x.shape[0] * n, stride):
        i = e // n
        j = e - i * n
        out[i, j] = activate(code, x[i, j], alpha)


@cuda.jit
def _backward_elementwise(x, y, grad_y, grad_x, code, alpha):
    n = x.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, x.shape[0] * n, stride):
        i = e // n
        j = e - i * n
        grad_x[i, j] = grad_y[i, j] * activate_grad(code, x[i, j], y[i, j], alpha)


@cuda.jit(device=True)
def _softmax_row(code, z, y, i):
    """Row ``i`` of softmax or log_softmax (stable: the row max is subtracted), as rows_activate."""
    n = z.shape[1]
    row_max = z[i, 0]
    for j in range(1, n):
        row_max = max(row_max, z[i, j])
    total = like(0.0, z)
    for j in range(n):
        total += math.exp(z[i, j] - row_max)
    if code == SOFTMAX:
        inv = like(1.0, z) / total
        for j in range(n):
            y[i, j] = math.exp(z[i, j] - row_max) * inv
    else:
        log_total = math.log(total) + row_max
        for j in range(n):
            y[i, j] = z[i, j] - log_total


@cuda.jit(device=True)
def _softmax_row_grad(code, y, grad_y, grad_z, i):
    """Row ``i`` of the softmax / log_softmax Jacobian-vector product, as rows_activate_grad."""
    n = y.shape[1]
    total = like(0.0, y)
    if code == SOFTMAX:
        for j in range(n):
            total += grad_y[i, j] * y[i, j]
        for j in range(n):
            grad_z[i, j] = y[i, j] * (grad_y[i, j] - total)
    else:
        for j in range(n):
            total += grad_y[i, j]
        for j in range(n):
            grad_z[i, j] = grad_y[i, j] - math.exp(y[i, j]) * total


@cuda.jit
def _forward_rows(x, out, code):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.shape[0], stride):
        _softmax_row(code, x, out, i)


@cuda.jit
def _backward_rows(y, grad_y, grad_x, code):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, y.shape[0], stride):
        _softmax_row_grad(code, y, grad_y, grad_x, i)


def activation_forward(x, out, code, alpha):
    """out = f(x) on the device; x, out (batch, features) device arrays; ``out`` may be ``x``."""
    a = typed(alpha, x)
    if code >= ROWWISE_CODES:
        _forward_rows[blocks_for(x.shape[0]), BLOCK](x, out, code)
    else:
        _forward_elementwise[blocks_for(x.size), BLOCK](x, out, code, a)


def activation_backward(x, y, grad_y, grad_x, code, alpha):
    """grad_x = grad_y * f'(x) given ``y = f(x)``; all (batch, features) device arrays."""
    a = typed(alpha, x)
    if code >= ROWWISE_CODES:
        _backward_rows[blocks_for(x.shape[0]), BLOCK](y, grad_y, grad_x, code)
    else:
        _backward_elementwise[blocks_for(x.size), BLOCK](x, y, grad_y, grad_x, code, a)


__all__ = ["activation_backward", "activation_forward"]
