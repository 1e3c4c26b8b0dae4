"""CUDA twins of kernels/masking.py: one thread per sample, the CPU's per-sample rules compiled as
device functions. Arguments as on the CPU."""

from __future__ import annotations

from numba import cuda

from ..masking import length_from_indices, length_from_values, row_is_valid, valid_rows
from ._common import BLOCK, blocks_for

_from_values_rule = cuda.jit(device=True)(length_from_values.py_func)
_from_indices_rule = cuda.jit(device=True)(length_from_indices.py_func)


@cuda.jit
def _from_values(x, mask_value, lengths):
    for b in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        lengths[b] = _from_values_rule(x, b, mask_value)


@cuda.jit
def _from_indices(indices, padding_idx, lengths):
    for b in range(cuda.grid(1), indices.shape[0], cuda.gridsize(1)):
        lengths[b] = _from_indices_rule(indices, b, padding_idx)


def lengths_from_values(x, mask_value, lengths):
    """lengths (batch,) int64 from x (batch, time, features): one past the last non-padding step."""
    _from_values[blocks_for(x.shape[0]), BLOCK](x, mask_value, lengths)


def lengths_from_indices(indices, padding_idx, lengths):
    """lengths (batch,) int64 from indices (batch, time): one past the last index != padding_idx."""
    _from_indices[blocks_for(indices.shape[0]), BLOCK](indices, padding_idx, lengths)


__all__ = [
    "lengths_from_indices",
    "lengths_from_values",
    "row_is_valid",  # the losses' rule over loss rows, shared as is (cuda/losses.py compiles it)
    "valid_rows",
]
