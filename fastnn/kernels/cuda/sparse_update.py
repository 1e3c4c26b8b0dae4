"""CUDA twins of kernels/sparse_update.py: lazy updates of a table's touched rows.

One thread per (row slot, column) of the table: slot k < rows[0] updates row rows[1 + k] with the
CPU module's scalar rules (``sgd_rule``, ``adam_rule``), so both backends share the formulas. The
grid covers every slot the ``rows`` buffer can hold, so the count stays on the device (no copy to
the host). Arguments as on the CPU; device arrays.
"""

from __future__ import annotations

import math

from numba import cuda

from ..optim import adam_rule, sgd_rule
from ._common import BLOCK, blocks_for, typed
from .optim import grad_global_norm


@cuda.jit
def _sgd_rows(params, grads, rows, lo, width, lr, zero, one):
    count = rows[0]
    for e in range(cuda.grid(1), (rows.shape[0] - 1) * width, cuda.gridsize(1)):
        k = e // width
        if k < count:
            i = lo + rows[1 + k] * width + (e - k * width)
            params[i] = sgd_rule(params[i], grads[i], lr, lr, zero, one, zero, False, False)[0]


def sgd_rows_update(params, grads, rows, lo, width, lr):
    """Plain SGD on the touched rows (device arrays; see the CPU kernel)."""
    slots = (rows.shape[0] - 1) * width
    _sgd_rows[blocks_for(slots), BLOCK](
        params, grads, rows, lo, width, typed(lr, params), typed(0.0, params), typed(1.0, params)
    )


@cuda.jit
def _adam_rows(params, grads, m, v, rows, lo, width, step_size, omb1, beta2, omb2, eps, zero, one):
    count = rows[0]
    for e in range(cuda.grid(1), (rows.shape[0] - 1) * width, cuda.gridsize(1)):
        k = e // width
        if k < count:
            i = lo + rows[1 + k] * width + (e - k * width)
            params[i], m[i], v[i], _ = adam_rule(
                params[i], grads[i], m[i], v[i], v[i], step_size, omb1, beta2, omb2, one, eps, zero, one, False
            )


def adam_rows_update(params, grads, m, v, rows, lo, width, lr, beta1, beta2, eps, step):
    """Adam on the touched rows only, as torch.optim.SparseAdam (device arrays; see the CPU kernel)."""
    slots = (rows.shape[0] - 1) * width
    _adam_rows[blocks_for(slots), BLOCK](
        params,
        grads,
        m,
        v,
        rows,
        lo,
        width,
        typed(lr * math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step), params),
        typed(1.0 - beta1, params),
        typed(beta2, params),
        typed(1.0 - beta2, params),
        typed(eps, params),
        typed(0.0, params),
        typed(1.0, params),
    )


def sparse_grad_norm(grads, partials, lo, width, rows, *, into=None):
    """The gradients' Euclidean norm: on the device, the whole buffer's (the table's untouched rows
    are zero), by ``grad_global_norm`` (``into``: as its)."""
    return grad_global_norm(grads, partials, into=into)


__all__ = ["adam_rows_update", "sgd_rows_update", "sparse_grad_norm"]
