"""CUDA twins of kernels/losses.py: loss value and gradient in one pass, block reductions.

Stage 1 runs one thread per row (cross-entropy, softmax fused: the CPU's
:func:`cross_entropy_row` compiled as a device function) or per element (the elementwise losses,
which call the CPU module's scalar :func:`loss_term` / :func:`loss_grad_term`); each thread
accumulates its loss terms in float64, each block sums its threads in shared memory and writes
``partials[block]``. Stage 2 is one block that sums the block partials in a fixed order into
``partials[0]`` (divided for ``mean``). No atomics: the value is reproducible run to run.

``partials`` is float64 device scratch of at least :func:`n_partials` ``(batch)`` entries (the
same size as on the CPU: the grid is bounded by it). Launchers return the loss as a float (one 8-byte copy
to the host), or, with ``sync=False``, return None and leave it in ``partials[0]`` on the device.
"""

from __future__ import annotations

import threading

import numba
from numba import cuda

from .._scalar import like
from ..losses import (
    BCE_LOGITS,
    CLASSES,
    CROSS_ENTROPY,
    ELEMENTWISE,
    HUBER,
    LOSSES,
    MAE,
    MSE,
    cross_entropy_row,
    loss_grad_term,
    loss_term,
)
from ..losses import n_partials as _cpu_n_partials
from ._common import BLOCK, block_sum, blocks_for, reduce_partials, typed


def n_partials(batch: int) -> int:
    """Length of the float64 ``partials`` scratch for ``batch`` rows (the CPU's size, which bounds the grid)."""
    return _cpu_n_partials(batch)


def _blocks(batch: int, count: int) -> int:
    """Blocks of a loss launch over ``count`` items of ``batch`` rows: never more than n_partials(batch)."""
    return min(blocks_for(count), _cpu_n_partials(batch))


# The CPU's row rule compiled as a device function: one source for both backends.
_cross_entropy_row = cuda.jit(device=True)(cross_entropy_row.py_func)


@cuda.jit
def _cross_entropy_rows(logits, labels, grad, partials, scale, compute_grad):
    buf = cuda.shared.array(BLOCK, numba.float64)
    tid = cuda.threadIdx.x
    acc = 0.0
    for i in range(cuda.grid(1), logits.shape[0], cuda.gridsize(1)):
        acc += _cross_entropy_row(logits, labels, grad, scale, compute_grad, i)
    buf[tid] = acc
    total = block_sum(buf, tid)
    if tid == 0:
        partials[cuda.blockIdx.x] = total


@cuda.jit
def _elementwise_rows(pred, target, grad, partials, code, delta, scale, compute_grad):
    buf = cuda.shared.array(BLOCK, numba.float64)
    tid = cuda.threadIdx.x
    k = pred.shape[1]
    acc = 0.0
    for e in range(cuda.grid(1), pred.shape[0] * k, cuda.gridsize(1)):
        i = e // k
        j = e - i * k
        p = pred[i, j]
        t = target[i, j]
        acc += loss_term(code, p, t, delta)
        if compute_grad:
            grad[i, j] = loss_grad_term(code, p, t, delta, scale)
    buf[tid] = acc
    total = block_sum(buf, tid)
    if tid == 0:
        partials[cuda.blockIdx.x] = total


def cross_entropy_forward_backward(logits, labels, grad, partials, mean, compute_grad, *, sync=True):
    """Softmax cross-entropy from logits (m, c) and int64 labels (m,); returns the loss (float64).

    Writes grad = (softmax - onehot) / m (or / 1 for sum) when ``compute_grad``.
    """
    m = logits.shape[0]
    blocks = _blocks(m, m)
    scale = typed(1.0 / m if mean else 1.0, logits)
    _cross_entropy_rows[blocks, BLOCK](logits, labels, grad, partials, scale, compute_grad)
    return reduce_partials(partials, blocks, 1.0 / m if mean else 1.0, sync=sync)


def elementwise_loss(pred, target, grad, partials, code, delta, mean, compute_grad, *, sync=True):
    """Elementwise loss ``code`` (MSE, MAE, HUBER, BCE_LOGITS) of pred/target (m, k); returns it.

    Mean divides by m * k (torch's convention); grad receives d(loss)/d(pred) when ``compute_grad``.
    """
    count = pred.shape[0] * pred.shape[1]
    blocks = _blocks(pred.shape[0], count)
    scale = 1.0 / count if mean else 1.0  # float64, as on the CPU
    _elementwise_rows[blocks, BLOCK](pred, target, grad, partials, code, typed(delta, pred), scale, compute_grad)
    return reduce_partials(partials, blocks, 1.0 / count if mean else 1.0, sync=sync)


@cuda.jit
def _accuracy_rows(logits, labels, targets, partials, binary):
    """Per-block counts (as float64, exact below 2**53) of rows whose argmax == label, or (binary)
    whose every element has (logit > 0) == (target > 0.5)."""
    buf = cuda.shared.array(BLOCK, numba.float64)
    tid = cuda.threadIdx.x
    m = logits.shape[0]
    c = logits.shape[1]
    acc = 0.0
    if binary:
        zero = like(0.0, logits)
        half = like(0.5, targets)
        for i in range(cuda.grid(1), m, cuda.gridsize(1)):
            j = 0
            while j < c and (logits[i, j] > zero) == (targets[i, j] > half):
                j += 1
            if j == c:
                acc += 1.0
    else:
        for i in range(cuda.grid(1), m, cuda.gridsize(1)):
            best = 0
            for j in range(1, c):
                if logits[i, j] > logits[i, best]:
                    best = j
            if best == labels[i]:
                acc += 1.0
    buf[tid] = acc
    total = block_sum(buf, tid)
    if tid == 0:
        partials[cuda.blockIdx.x] = total


_SCRATCH = threading.local()


def _scratch(name: str, size: int, dtype: str):
    """Device scratch of at least ``size`` elements, kept per thread and device: the counts
    below sync before they return, so one buffer serves every call (a fit counted its accuracy
    with an allocation per step)."""
    key = (name, getattr(cuda.get_current_device(), "id", 0))  # the simulator's device has no id
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    buf = buffers.get(key)
    if buf is None or buf.shape[0] < size:
        buf = buffers[key] = cuda.device_array(max(size, 1), dtype=dtype)
    return buf


def accuracy_count(logits, labels, *, partials=None):
    """Rows of logits (m, c) whose argmax (first maximum) equals labels[i]; an int (syncs).

    ``partials``: float64 device scratch of at least blocks_for(m) elements, one per block of the
    launch (a per-thread buffer when omitted).
    """
    m = logits.shape[0]
    blocks = blocks_for(m)
    if partials is None:
        partials = _scratch("partials", blocks, "float64")
    _accuracy_rows[blocks, BLOCK](logits, labels, logits, partials, False)
    return int(reduce_partials(partials, blocks))


def binary_accuracy_count(logits, targets, *, partials=None):
    """Rows of logits, targets (m, k) whose every (logit > 0) equals (target > 0.5); an int (syncs).

    ``partials``: as :func:`accuracy_count`'s.
    """
    blocks = blocks_for(logits.shape[0])
    if partials is None:
        partials = _scratch("partials", blocks, "float64")
    _accuracy_rows[blocks, BLOCK](logits, _scratch("no_labels", 1, "int64"), targets, partials, True)
    return int(reduce_partials(partials, blocks))


__all__ = [
    "BCE_LOGITS",
    "CLASSES",
    "CROSS_ENTROPY",
    "ELEMENTWISE",
    "HUBER",
    "LOSSES",
    "MAE",
    "MSE",
    "accuracy_count",
    "binary_accuracy_count",
    "cross_entropy_forward_backward",
    "elementwise_loss",
    "n_partials",
]
