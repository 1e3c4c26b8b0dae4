"""CUDA twins of kernels/masking.py: one thread per sample. Arguments as on the CPU."""
from __future__ import annotations

from numba import cuda

from ._common import BLOCK, blocks_for


@cuda.jit
def _from_values(x, mask_value, lengths):
    for b in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        n = 0
        for t in range(x.shape[1] - 1, -1, -1):
            for j in range(x.shape[2]):
                if x[b, t, j] != mask_value:
                    n = t + 1
                    break
            if n:
                break
        lengths[b] = n


@cuda.jit
def _from_indices(indices, padding_idx, lengths):
    for b in range(cuda.grid(1), indices.shape[0], cuda.gridsize(1)):
        n = 0
        for t in range(indices.shape[1] - 1, -1, -1):
            if indices[b, t] != padding_idx:
                n = t + 1
                break
        lengths[b] = n


def lengths_from_values(x, mask_value, lengths):
    """lengths (batch,) int64 from x (batch, time, features): one past the last non-padding step."""
    _from_values[blocks_for(x.shape[0]), BLOCK](x, mask_value, lengths)


def lengths_from_indices(indices, padding_idx, lengths):
    """lengths (batch,) int64 from indices (batch, time): one past the last index != padding_idx."""
    _from_indices[blocks_for(indices.shape[0]), BLOCK](indices, padding_idx, lengths)


__all__ = ["lengths_from_indices", "lengths_from_values"]
