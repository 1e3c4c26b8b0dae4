"""Lazy optimizer updates of a table's touched rows (``Embedding(sparse=True)``), as PyTorch's
sparse gradients: only the rows a step looked up change, their optimizer state with them.

The table is ``params[lo:lo + rows * width]`` of the flat buffers (row r at ``lo + r * width``);
``rows`` (k + 1,) int64 holds the count k of touched rows, then the rows, sorted and without
repeats (:func:`fastnn.kernels.embedding.embedding_rows` writes it). Each row's elements get the
optimizer's own per-element rule (:mod:`.optim`), so a plain SGD step here is the dense step bit
for bit (a row not touched has a zero gradient, which plain SGD does not move), and Adam here is
``torch.optim.SparseAdam``: the touched rows' moments and parameters, bias-corrected with the
global step count. Rows are split over threads in fixed blocks (each row's update is independent:
the same bits on any number of threads).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .._config import JIT_UPDATE, JIT_UPDATE_INLINE, JIT_UPDATE_PARALLEL, PARALLEL_MIN_ELEMENTS
from ._scalar import like, n_chunks
from .optim import OPTIM_CHUNK, adam_rule, norm_partials_size, sgd_rule
from .prefetch import prefetch_span
from .tiling import numba_threads

#: touched rows per task of the parallel sweep
ROWS_PER_TASK = 64

#: rows ahead whose cache lines the row updates prefetch (the rows are scattered over the table:
#: the hardware prefetchers do not see them coming)
PREFETCH_ROWS = 4


@njit(**JIT_UPDATE)
def _sgd_rows(params, grads, rows, lo, width, lr, k0, k1):
    zero, one = like(0.0, params), like(1.0, params)
    for k in range(k0, k1):
        a = np.uint64(lo + rows[1 + k] * width)
        for j in range(np.uint64(width)):  # unsigned indices: no wraparound test, the loop vectorises
            params[a + j] = sgd_rule(params[a + j], grads[a + j], lr, lr, zero, one, zero, False, False)[0]


@njit(**JIT_UPDATE_PARALLEL)
def sgd_rows_update(params, grads, rows, lo, width, lr):
    """Plain SGD (no momentum, no weight decay) on the touched rows: ``p -= lr * g`` there.

    params, grads (n,) float; rows (k + 1,) int64 (count, then rows); lo, width: the table's
    offset in the buffers and its row width; lr: float."""
    lr_ = like(lr, params)
    count = rows[0]
    if count * width < PARALLEL_MIN_ELEMENTS or numba_threads() == 1:
        _sgd_rows(params, grads, rows, lo, width, lr_, 0, count)
    else:
        for t_u in prange(n_chunks(count, ROWS_PER_TASK)):
            t = np.int64(t_u)  # prange indices are uint64; int64 like the serial twin
            _sgd_rows(params, grads, rows, lo, width, lr_, t * ROWS_PER_TASK, min((t + 1) * ROWS_PER_TASK, count))


@njit(**JIT_UPDATE)
def _adam_rows(params, grads, m, v, rows, lo, width, step_size, omb1, beta2, omb2, eps, k0, k1):
    zero, one = like(0.0, params), like(1.0, params)
    for k in range(k0, k1):
        if k + PREFETCH_ROWS < k1:  # not the gradient rows: the backward and the norm just wrote and read them
            ahead = lo + rows[1 + k + PREFETCH_ROWS] * width
            prefetch_span(params, ahead, width)
            prefetch_span(m, ahead, width)
            prefetch_span(v, ahead, width)
        a = np.uint64(lo + rows[1 + k] * width)
        for j in range(np.uint64(width)):  # unsigned indices (see _sgd_rows)
            i = a + j
            # bc2_sqrt = 1 with step_size = lr * sqrt(bc2) / bc1: SparseAdam's p -= step_size * m / (sqrt(v) + eps)
            params[i], m[i], v[i], _ = adam_rule(
                params[i], grads[i], m[i], v[i], v[i], step_size, omb1, beta2, omb2, one, eps, zero, one, False
            )


@njit(**JIT_UPDATE_PARALLEL)
def adam_rows_update(params, grads, m, v, rows, lo, width, lr, beta1, beta2, eps, step):
    """Adam on the touched rows only, as ``torch.optim.SparseAdam``: there ``m``, ``v`` and ``p``
    move (``p -= lr * sqrt(1 - beta2**step) / (1 - beta1**step) * m / (sqrt(v) + eps)``), elsewhere
    nothing does.

    params, grads, m, v (n,) float; rows (k + 1,) int64 (count, then rows); lo, width: the
    table's offset and row width; lr, beta1, beta2, eps: floats; step: this update's 1-based number."""
    step_size = like(lr * math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step), params)
    omb1, b2, omb2, eps_ = like(1.0 - beta1, params), like(beta2, params), like(1.0 - beta2, params), like(eps, params)
    count = rows[0]
    if count * width < PARALLEL_MIN_ELEMENTS or numba_threads() == 1:
        _adam_rows(params, grads, m, v, rows, lo, width, step_size, omb1, b2, omb2, eps_, 0, count)
    else:
        for t_u in prange(n_chunks(count, ROWS_PER_TASK)):
            t = np.int64(t_u)  # prange indices are uint64; int64 like the serial twin
            k1 = min((t + 1) * ROWS_PER_TASK, count)
            _adam_rows(params, grads, m, v, rows, lo, width, step_size, omb1, b2, omb2, eps_, t * ROWS_PER_TASK, k1)


@njit(**JIT_UPDATE_INLINE)
def _sum_squares(g):
    """Sum of squares (float64) of the 1-D view ``g`` (a view from index 0: the loop vectorises)."""
    total = 0.0
    for i in range(g.size):
        total += np.float64(g[i]) * np.float64(g[i])
    return total


@njit(**JIT_UPDATE)
def _sum_squares_outside(grads, partials, c, lo, hi):
    """partials[c] = the sum of squares of chunk ``c`` of ``grads`` (OPTIM_CHUNK elements) outside [lo, hi)."""
    c0 = c * OPTIM_CHUNK
    c1 = min(c0 + OPTIM_CHUNK, grads.size)
    partials[c] = _sum_squares(grads[c0 : max(c0, min(c1, lo))]) + _sum_squares(grads[min(max(c0, hi), c1) : c1])


@njit(**JIT_UPDATE)  # not inlined: one compiled body for the serial and parallel paths
def _norm_task(grads, sums, t, chunks, lo, hi, width, rows):
    """sums[t]: task t's sum of squares: chunk t of ``grads`` outside the table (t < chunks), else
    block t - chunks of ROWS_PER_TASK touched rows."""
    if t < chunks:
        _sum_squares_outside(grads, sums, t, lo, hi)
        return
    k0 = (t - chunks) * ROWS_PER_TASK
    total = 0.0
    for k in range(k0, min(k0 + ROWS_PER_TASK, rows[0])):
        a = np.uint64(lo + rows[1 + k] * width)
        for j in range(np.uint64(width)):  # unsigned indices (see _sgd_rows)
            total += np.float64(grads[a + j]) * np.float64(grads[a + j])
    sums[t] = total


def norm_tasks(n: int, table_rows: int) -> int:
    """Length of the ``partials`` scratch :func:`sparse_grad_norm` needs for a buffer of ``n``
    elements holding a table of ``table_rows`` rows: grad_global_norm's (its chunks) plus a task per
    ROWS_PER_TASK rows."""
    return norm_partials_size(n) + -(-table_rows // ROWS_PER_TASK)


@njit(**JIT_UPDATE_PARALLEL)
def sparse_grad_norm(grads, partials, lo, width, rows):
    """Euclidean norm (float64) of ``grads`` (n,) whose table at ``lo`` (rows of ``width``) is zero
    outside the rows listed in ``rows`` (count, then rows): what ``grad_global_norm`` gives, up to
    the order of the sums, without reading the table's zero rows. Fixed tasks (the buffer's chunks
    outside the table, blocks of touched rows) summed in task order: the same bits on any number
    of threads. ``partials``: float64 scratch of :func:`norm_tasks` ``(grads.size, table rows)``
    (shorter: the call allocates its own)."""
    hi = lo + (rows.shape[0] - 1) * width
    chunks = n_chunks(grads.size, OPTIM_CHUNK)
    tasks = chunks + n_chunks(max(rows[0], 0), ROWS_PER_TASK)
    sums = partials[:tasks] if partials.shape[0] >= tasks else np.empty(tasks)
    if grads.size - (hi - lo) + max(rows[0], 0) * width < PARALLEL_MIN_ELEMENTS or numba_threads() == 1:
        for t in range(tasks):
            _norm_task(grads, sums, t, chunks, lo, hi, width, rows)
    else:
        for t_u in prange(tasks):
            _norm_task(grads, sums, np.int64(t_u), chunks, lo, hi, width, rows)
    total = 0.0
    for t in range(tasks):
        total += sums[t]
    return math.sqrt(total)


__all__ = ["ROWS_PER_TASK", "adam_rows_update", "norm_tasks", "sgd_rows_update", "sparse_grad_norm"]

#: the functions the object layer calls (fastnn.backend.kernels); the CUDA twin module has them too
DEVICE_API = ("sgd_rows_update", "adam_rows_update", "sparse_grad_norm")
