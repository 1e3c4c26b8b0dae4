"""CUDA twins of kernels/activations.py: the same launchers, the same scalar functions.

Elementwise activations run one thread per element (grid-stride) and call the CPU module's
scalar :func:`activate` / :func:`activate_grad`, so both backends share one source of every
formula. Softmax and log_softmax run one thread per row and compile the CPU's row functions
:func:`softmax_row` / :func:`softmax_row_grad` (their ``py_func``: the simulator cannot pass
arrays to ``@njit`` code) as device functions. Arrays are device arrays (batch, features),
float32 or float64.
"""

from __future__ import annotations

from numba import cuda

from ..activations import ROWWISE_CODES, activate, activate_grad, softmax_row, softmax_row_grad
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


# The CPU's row rules compiled as device functions: one source, so both backends compute
# softmax / log_softmax rows in the same order of operations.
_softmax_row = cuda.jit(device=True)(softmax_row.py_func)
_softmax_row_grad = cuda.jit(device=True)(softmax_row_grad.py_func)


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
