"""Inverted dropout, fused: the mask is drawn, applied and scaled in one pass.

Element ``(i, j)`` of a (batch, features) input is kept when the top 32 bits of
``hash64(seed, stream, step, i * features + j)`` (kernels/rng.py), read as a fraction of 2**32,
are ``>= p``: an integer comparison with ``ceil(p * 2**32)``, so the mask does not depend on the
dtype, the thread count or the device. Kept units are scaled by ``1 / (1 - p)``, so the expected
activation is unchanged; ``p = 0`` keeps every unit and multiplies by exactly 1.

The mask is stored as bits: ``mask`` is uint8 of shape ``(batch, mask_bytes(features))``, bit
``k`` of ``mask[i, b]`` belonging to column ``8 * b + k`` (padding bits are 0). The backward
reuses it and draws nothing.
"""

from __future__ import annotations

import sys

import numpy as np
from numba import njit, prange

from .._config import JIT, JIT_INLINE, JIT_PARALLEL, PARALLEL_MIN_ELEMENTS
from ._scalar import like, n_chunks, start_of
from .rng import GOLDEN, hash_at, key64

#: rows per chunk of the parallel loops (elementwise: only spreads the work)
CHUNK_ROWS = 64
_S32 = np.uint64(32)
_S56 = np.uint64(56)
#: times a uint64 of 8 flag bytes (each 0 or 1, little-endian) puts flag k at bit 56 + k, no carries
_PACK_BITS = np.uint64(0x0102040810204080)
_LITTLE_ENDIAN = sys.byteorder == "little"


def mask_bytes(features: int) -> int:
    """Bytes per row of a dropout mask for ``features`` columns."""
    return (features + 7) // 8


@njit(**JIT_INLINE)
def keep_threshold(p):
    """uint64 threshold t: a unit is kept when ``hash >> 32 >= t`` (probability 1 - p)."""
    return np.uint64(np.ceil(np.float64(p) * 4294967296.0))


@njit(**JIT_INLINE)
def keep_unit(bits, threshold):
    """True when the unit with hash ``bits`` is kept (see :func:`keep_threshold`)."""
    return (bits >> _S32) >= threshold


@njit(**JIT_INLINE)
def row_flags(features):
    """Scratch for :func:`draw_row_mask`: uint8 (features,), one row's keep flags."""
    return np.empty(features, np.uint8)


@njit(**JIT_INLINE)
def draw_row_mask(flags, mask, key, threshold, base, i):
    """Row ``i``'s keep flags (1/0, drawn from hashes ``base + j``) into ``flags`` (uint8, one per
    column of the row: :func:`row_flags`), then packed into ``mask[i]``. Two vectorised sweeps: the
    hash over the row, then 8 flags (one little-endian uint64) to a byte by one multiply (4x
    faster than packing the bits one by one; the same bits). The caller then writes ``out[i, j]``
    where ``flags[j]`` is 1; shared with kernels.batchnorm_act."""
    n = flags.shape[0]
    for j in range(n):
        flags[j] = np.uint8(keep_unit(hash_at(key, base + j), threshold))
    full = n >> 3
    if _LITTLE_ENDIAN:
        words = flags[: 8 * full].view(np.uint64)
        for b in range(full):
            mask[i, b] = np.uint8((words[b] * _PACK_BITS) >> _S56)
    else:
        for b in range(full):
            mask[i, b] = _pack_bits(flags, 8 * b, 8 * b + 8)
    if full < mask.shape[1]:
        mask[i, full] = _pack_bits(flags, 8 * full, n)


@njit(**JIT_INLINE)
def _pack_bits(flags, j0, j1):
    """flags[j0:j1] (1/0, at most 8) as the bits of one byte, flags[j0] the lowest."""
    byte = np.uint8(0)
    for j in range(j0, j1):
        byte |= flags[j] << np.uint8(j - j0)
    return byte


@njit(**JIT_INLINE)
def _forward_rows(x, out, mask, key, threshold, scale, batch, r0, r1):
    """Per row: :func:`draw_row_mask`, then out = x * scale where kept.

    Row ``i`` of ``x`` is sample ``i % batch`` at step ``i // batch`` (time-major storage; one
    step when ``batch`` is the row count) and draws the hashes of that sample's row in the
    batch-major order, so the masks do not depend on the storage order."""
    n = x.shape[1]
    steps = x.shape[0] // batch
    zero = like(0.0, x)
    flags = row_flags(n)
    for i in range(r0, r1):
        draw_row_mask(flags, mask, key, threshold, ((i % batch) * steps + i // batch) * n, i)
        for j in range(n):
            out[i, j] = x[i, j] * scale if flags[j] else zero


@njit(**JIT)
def dropout_forward(x, out, mask, p, seed, stream, step):
    """out = x * keep / (1 - p), keep drawn from (seed, stream, step); writes the bit mask.

    x, out (batch, features) float32/float64 (``out`` may not be ``x``); mask uint8
    (batch, mask_bytes(features)); 0 <= p < 1 (unchecked).
    """
    _forward_keyed(x, out, mask, p, key64(seed, stream, step), x.shape[0])


@njit(**JIT_INLINE)
def row_key(key, first_row, features):
    """The key under which row 0 draws what row ``first_row`` draws under ``key``: element
    ``i`` hashes ``key + (i + 1) * GOLDEN`` (kernels/rng.py), so shifting the key by
    ``first_row * features * GOLDEN`` numbers the rows from ``first_row``."""
    return key + np.uint64(first_row) * np.uint64(features) * GOLDEN


@njit(**JIT_PARALLEL)
def _forward_keyed(x, out, mask, p, key, batch):
    m = x.shape[0]
    threshold = keep_threshold(p)
    scale = like(1.0 / (1.0 - p), x)
    if x.size < PARALLEL_MIN_ELEMENTS:
        _forward_rows(x, out, mask, key, threshold, scale, batch, start_of(m), m)
    else:
        for c_u in prange(n_chunks(m, CHUNK_ROWS)):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            _forward_rows(x, out, mask, key, threshold, scale, batch, c * CHUNK_ROWS, min(m, (c + 1) * CHUNK_ROWS))


@njit(**JIT_INLINE)
def _backward_rows(grad_out, mask, grad_in, scale, r0, r1):
    n = grad_out.shape[1]
    zero = like(0.0, grad_out)
    one = np.uint8(1)
    for i in range(r0, r1):
        for j in range(n):
            kept = (mask[i, j >> 3] >> np.uint8(j & 7)) & one
            grad_in[i, j] = grad_out[i, j] * scale if kept else zero


#: ``_SPREAD[b]``: the 8 keep flags of mask byte ``b`` (bit k -> byte k, each 0 or 1), as the uint64
#: whose bytes in memory they are (either byte order)
_SPREAD = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").view(np.uint64).reshape(256)


@njit(**JIT_INLINE)
def row_spread(features):
    """Scratch for :func:`spread_row`: uint64 (mask_bytes(features),); its uint8 view holds one
    keep flag (1/0) per column (and up to 7 padding flags)."""
    return np.empty((features + 7) >> 3, np.uint64)


@njit(**JIT_INLINE)
def spread_row(mask, i, spread):
    """Row ``i`` of the bit ``mask`` spread to one flag byte per column: ``spread`` (from
    :func:`row_spread`) viewed as uint8 has at ``j`` the keep flag of column ``j`` (a table look-up
    per 8 columns). A loop then reads its flag at ``j``, not a bit of byte ``j >> 3``, and
    vectorises; shared with kernels.batchnorm_act."""
    for b in range(spread.shape[0]):
        spread[b] = _SPREAD[mask[i, b]]


@njit(**JIT_INLINE)
def _backward_serial(grad_out, mask, grad_in, scale):
    """The serial twin of the chunked rows (same bits): each row's mask bytes are first spread to one
    flag byte per column (a table look-up per 8 columns), so the select reads its flag at ``j``, not
    a bit of byte ``j >> 3``: that index is not affine, LLVM cannot bound the mask's accesses against
    the stores to ``grad_in`` (which may be ``grad_out``), and the loop stayed scalar (0.62 ->
    0.15 ns an element, float32; the parallel path's loop vectorises: its arrays are marked
    noalias)."""
    m, n = grad_out.shape
    zero = like(0.0, grad_out)
    spread = row_spread(n)
    flags = spread.view(np.uint8)
    for i in range(m):
        spread_row(mask, i, spread)
        go = grad_out[i]
        gi = grad_in[i]
        for j in range(n):
            gi[j] = go[j] * scale if flags[j] else zero


@njit(**JIT_PARALLEL)
def dropout_backward(grad_out, mask, grad_in, p):
    """grad_in = grad_out * keep / (1 - p) with the mask of the forward; (batch, features).

    ``grad_in`` may be ``grad_out``; ``p`` must be the forward's.
    """
    m = grad_out.shape[0]
    scale = like(1.0 / (1.0 - p), grad_out)
    if grad_out.size < PARALLEL_MIN_ELEMENTS:
        _backward_serial(grad_out, mask, grad_in, scale)
    else:
        for c_u in prange(n_chunks(m, CHUNK_ROWS)):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            _backward_rows(grad_out, mask, grad_in, scale, c * CHUNK_ROWS, min(m, (c + 1) * CHUNK_ROWS))


__all__ = [
    "CHUNK_ROWS",
    "draw_row_mask",
    "dropout_backward",
    "dropout_forward",
    "dropout_forward_counted",
    "dropout_forward_counted_from",
    "dropout_forward_steps_from",
    "keep_threshold",
    "keep_unit",
    "mask_bytes",
    "row_flags",
    "row_key",
    "row_spread",
    "spread_row",
]


@njit(**JIT)
def dropout_forward_counted(x, out, mask, p, seed, stream, counter):
    """:func:`dropout_forward` at step ``counter[0]``, then ``counter[0] += 1`` (int64 (1,))."""
    dropout_forward(x, out, mask, p, seed, stream, counter[0])
    counter[0] += 1


@njit(**JIT)
def dropout_forward_counted_from(x, out, mask, p, seed, stream, counter, first_row):
    """:func:`dropout_forward_counted` with the rows numbered from ``first_row[0]`` (int64 (1,)):
    a shard of a data-parallel batch (fastnn.distributed) draws the masks its rows get in the
    whole batch; ``first_row[0] = 0`` gives :func:`dropout_forward_counted`'s masks."""
    key = row_key(key64(seed, stream, counter[0]), first_row[0], x.shape[1])
    _forward_keyed(x, out, mask, p, key, x.shape[0])
    counter[0] += 1


@njit(**JIT)
def dropout_forward_steps_from(x, out, mask, p, seed, stream, counter, first_row):
    """:func:`dropout_forward_counted_from` of time-major sequences: x, out (steps, batch,
    features) contiguous, mask uint8 (steps * batch, mask_bytes(features)). Element (t, i, j)
    draws what element (i, t, j) of the batch-major (batch, steps, features) input draws under
    :func:`dropout_forward_counted_from`, so the masks of a shard of the batch (rows numbered
    from ``first_row[0]``) are those its samples get in the whole batch."""
    steps, batch, n = x.shape
    key = row_key(key64(seed, stream, counter[0]), first_row[0], steps * n)
    _forward_keyed(x.reshape((steps * batch, n)), out.reshape((steps * batch, n)), mask, p, key, batch)
    counter[0] += 1


#: the functions the object layer calls (fastnn.backend.kernels); the CUDA twin module has them too
DEVICE_API = (
    "dropout_forward_counted",
    "dropout_forward_counted_from",
    "dropout_forward_steps_from",
    "dropout_backward",
    "mask_bytes",
)
