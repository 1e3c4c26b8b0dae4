"""Sequence lengths from padding: the number of valid leading steps of each sample.

A step is padding when all its values equal ``mask_value`` (:class:`fastnn.Masking`) or its index
is ``padding_idx`` (``Embedding(..., mask_padding=True)``). A sample's length is one past its last
step that is not padding: padding is trailing, as torch's ``pack_padded_sequence`` expects (a
padding step inside a sequence counts as valid). Lengths are int64 (batch,). The per-sample rules
are written once; the CUDA twins compile them as device functions.
"""

from __future__ import annotations

from numba import njit

from .._config import JIT, JIT_INLINE


@njit(**JIT_INLINE)
def length_from_values(x, b, mask_value):
    """1 + the last t with any x[b, t, :] != mask_value (0 if none); x (batch, time, features)."""
    for t in range(x.shape[1] - 1, -1, -1):
        for j in range(x.shape[2]):
            if x[b, t, j] != mask_value:
                return t + 1
    return 0


@njit(**JIT_INLINE)
def length_from_indices(indices, b, padding_idx):
    """1 + the last t with indices[b, t] != padding_idx (0 if none); indices (batch, time)."""
    for t in range(indices.shape[1] - 1, -1, -1):
        if indices[b, t] != padding_idx:
            return t + 1
    return 0


@njit(**JIT)
def lengths_from_values(x, mask_value, lengths):
    """lengths[b] (int64) from x (batch, time, features) float, mask_value of x's dtype."""
    for b in range(x.shape[0]):
        lengths[b] = length_from_values(x, b, mask_value)


@njit(**JIT)
def lengths_from_indices(indices, padding_idx, lengths):
    """lengths[b] (int64) from token ids (batch, time) int64."""
    for b in range(indices.shape[0]):
        lengths[b] = length_from_indices(indices, b, padding_idx)


__all__ = ["length_from_indices", "length_from_values", "lengths_from_indices", "lengths_from_values"]

#: the functions the object layer calls (fastnn.backend.kernels); the CUDA twin module has them too
DEVICE_API = ("lengths_from_values", "lengths_from_indices")
