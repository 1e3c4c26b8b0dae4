"""What ``fit`` adds to a training step's compiled call on in-memory arrays (:mod:`fastnn._step_feed`):
the batch gathered from the whole data set by the epoch's shuffled order, and the running count of
correctly classified positions, so Python copies no batch and calls no metric kernel per step.

``x_all`` (n, d) and ``y_all`` (n, e) are the data set's inputs and targets with each sample
flattened to one row (any dtype; the targets' dtype int64 for labels), ``order`` (n,) int64 the
epoch's permutation of the rows, ``x`` (hi - lo, d) and ``y`` (hi - lo, e) the step plan's buffers.
"""

from __future__ import annotations

from numba import njit, prange

from .._config import JIT, JIT_INLINE, JIT_PARALLEL, PARALLEL_MIN_ELEMENTS
from .prefetch import prefetch_span

#: rows of the order prefetched ahead of the row being copied. A shuffled row of a data set larger
#: than the caches is a miss to memory; copied one by one, the out-of-order window holds about one
#: row's loads, so the copy waits a memory latency per row. 4-16 ahead measured alike (40,000 x 100
#: float32 rows, batch 200, caches flushed, 1 thread: 39-47 us a batch without, 15-19 us with).
PREFETCH_AHEAD = 8


# The row helpers below take arrays and run once per row: inlined at Numba's level (JIT_INLINE), as
# any helper with array arguments called per row or per element must be. Not inlined, each call
# level costs atomic NRT_incref/NRT_decref pairs on its arrays, which Numba's refcount pruning
# leaves in the caller's loop even where LLVM inlines the body: gather_batch of 200 rows x 64
# float32 (1 thread) took 16.9 us through these helpers as calls, 1.5 us inlined (np.take 2.4 us);
# in a digits fit the refcounts were 14% of the time. A helper called once per chunk or tile of
# many elements may stay a call (a few refcounts a chunk).


@njit(**JIT_INLINE)
def _prefetch_row(a, row):
    """Prefetch every cache line of row ``row`` of the C-contiguous 2-D array ``a``."""
    prefetch_span(a, row * a.shape[1], a.shape[1])


@njit(**JIT_PARALLEL)
def gather_batch(x_all, y_all, order, lo, hi, x, y):
    """x[i] = x_all[order[lo + i]] and y[i] = y_all[order[lo + i]] for i in [0, hi - lo): a copy
    of 2-D rows (x: (>= hi - lo, features), y: (>= hi - lo, targets)), in parallel over the rows
    only for a large batch. Each row copied has the row ``PREFETCH_AHEAD`` positions later in
    ``order`` prefetched (past ``hi`` too: the next batch's first rows load during the step).
    Element loops, not row assignments: a row assignment compiles Numba's shape-mismatch error
    with its string formatting (2.8 s of a cold ``fastnn demo``)."""
    if x.size + y.size < PARALLEL_MIN_ELEMENTS:
        gather_rows(x_all, y_all, order, lo, x, y, 0, hi - lo)
    else:
        _prefetch_first(x_all, y_all, order, lo)
        for i in prange(hi - lo):
            _copy_row(x_all, y_all, order, lo + i, x, y, i)


@njit(**JIT)
def gather_rows(x_all, y_all, order, lo, x, y, i0, i1):
    """Rows [i0, i1) of :func:`gather_batch`'s copy, on one thread: ``x[i] = x_all[order[lo + i]]``
    and ``y[i] = y_all[order[lo + i]]``, prefetched as there (a thread's share of a batch that a
    kernel splits by rows: ``fastnn.kernels.dense_chain``)."""
    _prefetch_first(x_all, y_all, order, lo + i0)
    for i in range(i0, i1):
        _copy_row(x_all, y_all, order, lo + i, x, y, i)


@njit(**JIT_INLINE)
def _prefetch_first(x_all, y_all, order, position):
    """Prefetch the rows ``order[position:position + PREFETCH_AHEAD]`` (those in ``order``)."""
    for i in range(position, min(order.shape[0], position + PREFETCH_AHEAD)):
        _prefetch_rows(x_all, y_all, order[i])


@njit(**JIT_INLINE)
def _prefetch_rows(x_all, y_all, row):
    _prefetch_row(x_all, row)
    _prefetch_row(y_all, row)


@njit(**JIT_INLINE)
def _copy_row(x_all, y_all, order, position, x, y, i):
    """Copy row ``order[position]`` into row ``i`` of (x, y), the row ``PREFETCH_AHEAD`` later prefetched."""
    ahead = position + PREFETCH_AHEAD
    if ahead < order.shape[0]:
        _prefetch_rows(x_all, y_all, order[ahead])
    source = order[position]
    for j in range(x.shape[1]):
        x[i, j] = x_all[source, j]
    for j in range(y.shape[1]):
        y[i, j] = y_all[source, j]


@njit(**JIT)
def add_to_total(value, totals):
    """totals[0] += value: a count returned by an earlier kernel of the step, kept across steps."""
    totals[0] += value


__all__ = ["add_to_total", "gather_batch"]
