"""Sequence lengths from padding: the number of valid leading steps of each sample.

A step is padding when all its values equal ``mask_value`` (:class:`fastnn.Masking`) or its index
is ``padding_idx`` (``Embedding(..., mask_padding=True)``). A sample's length is one past its last
step that is not padding: padding is trailing, as torch's ``pack_padded_sequence`` expects (a
padding step inside a sequence counts as valid). Lengths are int64 (batch,).
"""
from __future__ import annotations

from numba import njit

from .._config import JIT


@njit(**JIT)
def lengths_from_values(x, mask_value, lengths):
    """lengths[b] = 1 + the last t with any x[b, t, :] != mask_value (0 if none); x (batch,
    time, features) float, mask_value of x's dtype."""
    for b in range(x.shape[0]):
        n = 0
        for t in range(x.shape[1] - 1, -1, -1):
            for j in range(x.shape[2]):
                if x[b, t, j] != mask_value:
                    n = t + 1
                    break
            if n:
                break
        lengths[b] = n


@njit(**JIT)
def lengths_from_indices(indices, padding_idx, lengths):
    """lengths[b] = 1 + the last t with indices[b, t] != padding_idx (0 if none); indices
    (batch, time) int64."""
    for b in range(indices.shape[0]):
        n = 0
        for t in range(indices.shape[1] - 1, -1, -1):
            if indices[b, t] != padding_idx:
                n = t + 1
                break
        lengths[b] = n


__all__ = ["lengths_from_indices", "lengths_from_values"]

#: the functions the object layer calls (fastnn.backend.kernels); the CUDA twin module has them too
DEVICE_API = ("lengths_from_values", "lengths_from_indices")
