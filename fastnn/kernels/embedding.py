"""Embedding lookup (torch.nn.Embedding): rows of a (vocabulary, dim) table picked by integer indices.

Indices of any shape are passed flattened: ``indices`` (M,) int64 in [0, vocabulary) (checked at
the public boundary, not here), ``weight`` (V, D), ``out``/``grad_out`` (M, D), one float dtype.
``padding_idx`` is a row in [0, V) whose gradient stays zero, or -1 for none.

The backward is a scatter-add. It is deterministic without sorting: the vocabulary is split into
row ranges, each range owned by one task that scans all indices in order and adds only those in
its range, so every row sums its gradients in index order whatever the number of threads (and
the partition; on one thread the whole vocabulary is one range, with no parallel region).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._config import JIT, JIT_EXACT, JIT_INLINE, JIT_PARALLEL, PARALLEL_MIN_ELEMENTS
from ._scalar import like, n_chunks
from .tiling import gemm_tiles, numba_threads

#: index rows per task of the parallel lookup
_GATHER_ROWS = 256


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _gather_rows(indices, weight, out, m0, m1):
    """out[m] = weight[indices[m]] for m in [m0, m1), element by element (a row slice assignment
    per index costs about 3x more: measured in benchmarks/embed_step.py)."""
    for m in range(m0, m1):
        v = indices[m]
        for j in range(out.shape[1]):
            out[m, j] = weight[v, j]


@njit(**JIT_PARALLEL)
def embedding_forward(indices, weight, out):
    """out[m] = weight[indices[m]]; indices (M,) int64, weight (V, D), out (M, D)."""
    rows = indices.shape[0]
    if out.size < PARALLEL_MIN_ELEMENTS or numba_threads() == 1:
        _gather_rows(indices, weight, out, 0, rows)
    else:
        per = n_chunks(rows, _GATHER_ROWS)
        for c_u in prange(per):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            _gather_rows(indices, weight, out, c * _GATHER_ROWS, min((c + 1) * _GATHER_ROWS, rows))


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _add_rows(indices, grad_out, grad_weight, padding_idx, v0, v1):
    """grad_weight[v] += grad_out[m] for each m whose index v is in [v0, v1) (not padding_idx), in index order."""
    dim = grad_weight.shape[1]
    for m in range(indices.shape[0]):
        v = indices[m]
        if v0 <= v < v1 and v != padding_idx:
            for j in range(dim):
                grad_weight[v, j] += grad_out[m, j]


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _grad_rows(indices, grad_out, grad_weight, padding_idx, v0, v1):
    """grad_weight[v0:v1] = sum of grad_out rows whose index is in [v0, v1), in index order."""
    zero = like(0.0, grad_weight)
    block = grad_weight[v0:v1].reshape(-1)  # contiguous rows: one flat loop
    for i in range(block.size):
        block[i] = zero
    _add_rows(indices, grad_out, grad_weight, padding_idx, v0, v1)


@njit(**JIT_PARALLEL)
def embedding_backward(indices, grad_out, grad_weight, padding_idx):
    """grad_weight (V, D) = scatter-add of grad_out (M, D) rows at ``indices`` (M,); the
    ``padding_idx`` row (-1: none) and rows never indexed are zero. Bit-identical on any thread count."""
    vocabulary = grad_weight.shape[0]
    if grad_out.size + grad_weight.size < PARALLEL_MIN_ELEMENTS or numba_threads() == 1:
        _grad_rows(indices, grad_out, grad_weight, padding_idx, 0, vocabulary)
    else:
        # vocabulary ranges: GEMM_TILES, read at run time (the result does not depend on it,
        # each row's sum is in index order whatever the partition)
        ranges = gemm_tiles()
        per = n_chunks(vocabulary, ranges)
        for r_u in prange(ranges):
            r = np.int64(r_u)  # prange indices are uint64; int64 like the serial twin
            _grad_rows(
                indices, grad_out, grad_weight, padding_idx, min(r * per, vocabulary), min((r + 1) * per, vocabulary)
            )


@njit(**JIT)
def embedding_rows(indices, padding_idx, seen, rows):
    """The table rows that ``indices`` (M,) int64 look up, ``padding_idx`` (-1: none) left out,
    sorted and without repeats: ``rows[0]`` = their count k, ``rows[1:k + 1]`` the rows (rows:
    (V + 1,) int64). ``seen`` (V,) uint8 is the marks' scratch, all zero before and after. Few
    indices in a large vocabulary are sorted; otherwise marked, then the marks read in order."""
    if indices.shape[0] * 16 < seen.shape[0]:
        count = 0
        for m in range(indices.shape[0]):
            if indices[m] != padding_idx:
                count += 1
                rows[count] = indices[m]
        rows[1 : count + 1].sort()
        unique = 0
        for k in range(1, count + 1):
            if unique == 0 or rows[k] != rows[unique]:
                unique += 1
                rows[unique] = rows[k]
        rows[0] = unique
    else:
        for m in range(indices.shape[0]):
            if indices[m] != padding_idx:
                seen[indices[m]] = 1
        read_marks(seen, rows)


@njit(**JIT_INLINE)
def read_marks(seen, rows):
    """rows[0] = the count of marked rows of ``seen`` (V,) uint8, rows[1:] those rows in order; the
    marks cleared (also the CUDA twin's last step, on one thread)."""
    count = 0
    for v in range(seen.shape[0]):
        if seen[v] != 0:
            seen[v] = 0
            count += 1
            rows[count] = v
    rows[0] = count


@njit(**JIT_EXACT)  # no fastmath: 0 + g keeps the bits of zeroing then adding (nsz would fold it to g)
def _regrad_rows(indices, grad_out, grad_weight, padding_idx, seen, rows, v0, v1):
    """The gradient rows of [v0, v1) in one pass over the indices, in index order: a row's first
    index assigns ``0 + grad_out[m]`` (the bits of zeroing the row, then adding) and marks it in
    ``seen``, the next ones add; then the rows of [v0, v1) listed in ``rows`` (all of [v0, v1)
    when the count is -1) that no index marked are zeroed. Touches ``seen`` inside [v0, v1) only."""
    zero = like(0.0, grad_weight)
    dim = grad_weight.shape[1]
    for m in range(indices.shape[0]):
        v = indices[m]
        if v0 <= v < v1 and v != padding_idx:
            if seen[v] == 0:
                seen[v] = 1
                for j in range(dim):
                    grad_weight[v, j] = zero + grad_out[m, j]
            else:
                for j in range(dim):
                    grad_weight[v, j] += grad_out[m, j]
    if rows[0] < 0:
        for v in range(v0, v1):
            if seen[v] == 0:
                for j in range(dim):
                    grad_weight[v, j] = zero
    else:
        for k in range(rows[0]):
            v = rows[1 + k]
            if v0 <= v < v1 and seen[v] == 0:
                for j in range(dim):
                    grad_weight[v, j] = zero


@njit(**JIT)
def _list_marked(indices, padding_idx, seen, rows):
    """:func:`embedding_rows` from the marks :func:`_regrad_rows` left in ``seen`` (cleared here):
    few indices in a large vocabulary unmark their own rows and are sorted (no sweep of ``seen``)."""
    if indices.shape[0] * 16 < seen.shape[0]:
        for m in range(indices.shape[0]):
            if indices[m] != padding_idx:
                seen[indices[m]] = 0
        embedding_rows(indices, padding_idx, seen, rows)
    else:
        read_marks(seen, rows)


@njit(**JIT_PARALLEL)
def embedding_backward_rows(indices, grad_out, grad_weight, padding_idx, seen, rows):
    """:func:`embedding_backward` for ``Embedding(sparse=True)``, whose gradient is zero outside
    the rows the previous call listed in ``rows`` (count -1: not known, e.g. a new buffer): one
    pass over the indices per vocabulary range (as :func:`embedding_backward`) sums the rows they
    look up (a row's first index assigns, marking it), then the listed rows not looked up again
    are zeroed, then ``rows`` lists the rows looked up (as :func:`embedding_rows`). The same bits
    as :func:`embedding_backward` on any thread count; a step's cost follows the rows looked up,
    not the vocabulary.

    indices (M,) int64, grad_out (M, D), grad_weight (V, D), seen (V,) uint8 (zero), rows (V + 1,) int64."""
    vocabulary = grad_weight.shape[0]
    if grad_out.size < PARALLEL_MIN_ELEMENTS or numba_threads() == 1:
        _regrad_rows(indices, grad_out, grad_weight, padding_idx, seen, rows, 0, vocabulary)
    else:
        ranges = gemm_tiles()  # vocabulary ranges, as embedding_backward
        per = n_chunks(vocabulary, ranges)
        for r_u in prange(ranges):
            r = np.int64(r_u)  # prange indices are uint64; int64 like the serial twin
            v0, v1 = min(r * per, vocabulary), min((r + 1) * per, vocabulary)
            _regrad_rows(indices, grad_out, grad_weight, padding_idx, seen, rows, v0, v1)
    _list_marked(indices, padding_idx, seen, rows)


__all__ = ["embedding_backward", "embedding_backward_rows", "embedding_forward", "embedding_rows"]

#: the functions the object layer calls (fastnn.backend.kernels); the CUDA twin module has them too
DEVICE_API = ("embedding_forward", "embedding_backward", "embedding_backward_rows", "embedding_rows")
