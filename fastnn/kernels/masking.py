"""Sequence lengths from padding: the number of valid leading steps of each sample.

A step is padding when all its values equal ``mask_value`` (:class:`fastnn.Masking`) or its index
is ``padding_idx`` (``Embedding(..., mask_padding=True)``). A sample's length is one past its last
step that is not padding: padding is trailing, as torch's ``pack_padded_sequence`` expects (a
padding step inside a sequence counts as valid). Lengths are int64 (batch,). The per-sample rules
are written once; the CUDA twins compile them as device functions.

The losses and counts over per-step outputs leave the padded steps out with :func:`row_is_valid`
and :func:`valid_rows`: an output ``(batch, time, *inner, k)`` is ``batch * per_sample`` loss rows
of k values (``per_sample = time * per_step``, ``per_step`` the rows of one step), and row ``i``
belongs to sample ``i // per_sample`` at step ``(i % per_sample) // per_step``. Batch norm over
such rows (``TimeDistributed(BatchNorm1d)`` after masking) takes its statistics over the rows of
valid steps alone with the same test (:func:`row_counts`, :func:`counted_rows`).
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


@njit(**JIT_INLINE)
def row_is_valid(lengths, i, per_sample, per_step):
    """Whether loss row ``i`` is a valid step: its step ``(i % per_sample) // per_step`` is below
    its sample's length ``lengths[i // per_sample]`` (rows (batch * per_sample, k), see above)."""
    b = i // per_sample
    return (i - b * per_sample) // per_step < lengths[b]


@njit(**JIT_INLINE)
def valid_rows(lengths, steps, per_step):
    """The loss rows of valid steps: sum over samples of min(lengths[b], steps), times ``per_step``."""
    total = 0
    for b in range(lengths.shape[0]):
        total += min(lengths[b], steps)
    return total * per_step


@njit(**JIT_INLINE)
def row_counts(lengths, i, per_sample, per_step):
    """Whether row ``i`` enters a statistic over rows (batch norm's): every row without lengths
    (``lengths`` None, the test pruned at compile time), else :func:`row_is_valid`."""
    if lengths is None:
        return True
    return row_is_valid(lengths, i, per_sample, per_step)


@njit(**JIT_INLINE)
def counted_rows(lengths, m, per_sample, per_step):
    """The rows of ``m`` that :func:`row_counts` admits: ``m`` without lengths, else the valid
    steps' rows (``per_sample // per_step`` steps of ``per_step`` rows per sample)."""
    if lengths is None:
        return m
    return valid_rows(lengths, per_sample // per_step, per_step)


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


__all__ = [
    "counted_rows",
    "length_from_indices",
    "length_from_values",
    "lengths_from_indices",
    "lengths_from_values",
    "row_counts",
    "row_is_valid",
    "valid_rows",
]

#: the functions the object layer calls (fastnn.backend.kernels); the CUDA twin module has them too
DEVICE_API = ("lengths_from_values", "lengths_from_indices")
