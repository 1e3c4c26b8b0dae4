"""CUDA twins of kernels/embedding.py: a lookup per element, and a scatter-add without atomics.

The backward gives each thread one (vocabulary range, column) pair: it zeroes that slice and
scans all indices in order, adding those in its range, so every row sums its gradients in index
order (as on the CPU: the same bits whatever the launch). Shapes and arguments as on the CPU;
device arrays, indices int64.
"""

from __future__ import annotations

from numba import cuda

from .._scalar import like
from ..embedding import read_marks
from ._common import BLOCK, blocks_for

#: vocabulary ranges of the backward (threads = ranges x embedding columns)
RANGES = 128

# the CPU kernels' loop as a device function (its py_func: the simulator cannot pass device arrays
# to a CPU-compiled function)
_read_marks = cuda.jit(device=True)(read_marks.py_func)


@cuda.jit
def _forward(indices, weight, out):
    d = out.shape[1]
    for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        m = e // d
        j = e - m * d
        out[m, j] = weight[indices[m], j]


@cuda.jit
def _backward(indices, grad_out, grad_weight, padding_idx, ranges):
    vocabulary, d = grad_weight.shape
    per = (vocabulary + ranges - 1) // ranges
    for e in range(cuda.grid(1), ranges * d, cuda.gridsize(1)):
        r = e // d
        j = e - r * d
        v0 = min(r * per, vocabulary)
        v1 = min(v0 + per, vocabulary)
        for v in range(v0, v1):
            grad_weight[v, j] = like(0.0, grad_weight)
        for m in range(indices.shape[0]):
            v = indices[m]
            if v0 <= v < v1 and v != padding_idx:
                grad_weight[v, j] += grad_out[m, j]


def embedding_forward(indices, weight, out):
    """out[m] = weight[indices[m]] (device arrays)."""
    _forward[blocks_for(out.size), BLOCK](indices, weight, out)


def embedding_backward(indices, grad_out, grad_weight, padding_idx):
    """grad_weight = scatter-add of grad_out rows at indices; padding_idx (-1: none) row zero."""
    ranges = max(1, min(RANGES, grad_weight.shape[0]))
    _backward[blocks_for(ranges * grad_weight.shape[1]), BLOCK](indices, grad_out, grad_weight, padding_idx, ranges)


@cuda.jit
def _mark(indices, padding_idx, seen):
    for m in range(cuda.grid(1), indices.shape[0], cuda.gridsize(1)):
        if indices[m] != padding_idx:
            seen[indices[m]] = 1  # every writer writes 1: no race on the value


@cuda.jit
def _collect(seen, rows):
    if cuda.grid(1) == 0:  # one thread reads the marks in order: the rows come out sorted
        _read_marks(seen, rows)


def embedding_rows(indices, padding_idx, seen, rows):
    """rows[0] = the count of distinct rows looked up (padding_idx left out), rows[1:] those rows
    sorted; ``seen`` (V,) uint8 all zero before and after (device arrays)."""
    _mark[blocks_for(indices.shape[0]), BLOCK](indices, padding_idx, seen)
    _collect[1, 1](seen, rows)


def embedding_backward_rows(indices, grad_out, grad_weight, padding_idx, seen, rows):
    """The CPU kernel's result on the device: the whole gradient (embedding_backward, which zeroes
    every row itself, so the previous rows are not needed) and the rows looked up (embedding_rows)."""
    embedding_backward(indices, grad_out, grad_weight, padding_idx)
    embedding_rows(indices, padding_idx, seen, rows)


__all__ = ["embedding_backward", "embedding_backward_rows", "embedding_forward", "embedding_rows"]
