"""CUDA twin of kernels/dropout.py: fused inverted dropout with the same counter-based mask.

One thread per mask byte (8 columns of a row, grid-stride): it hashes each element with the
CPU module's :func:`~fastnn.kernels.rng.hash_at` under the key :func:`~fastnn.kernels.rng.key64`
of (seed, stream, step), keeps it by :func:`~fastnn.kernels.dropout.keep_unit`, scales it and
writes the byte, so a seed gives bit-identical masks on the CPU and the GPU. Mask layout, shapes
and arguments as on the CPU: x, out (batch, features), mask uint8 (batch, mask_bytes(features)).
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from .._scalar import like
from ..dropout import CHUNK_ROWS, keep_threshold, keep_unit, mask_bytes, row_key
from ..rng import hash_at, key64
from ._common import BLOCK, blocks_for, typed


@cuda.jit
def _forward(x, out, mask, key, threshold, scale, batch):
    n = x.shape[1]
    nb = mask.shape[1]
    zero = like(0.0, x)
    for e in range(cuda.grid(1), x.shape[0] * nb, cuda.gridsize(1)):
        i = e // nb
        b = e - i * nb
        j0 = 8 * b
        base = ((i % batch) * (x.shape[0] // batch) + i // batch) * n  # sample i % batch, step i // batch (CPU's)
        byte = np.uint8(0)
        for j in range(j0, min(n, j0 + 8)):
            # np.uint64(): the simulator returns uint64 as a Python int, which @njit would read as int64
            kept = keep_unit(np.uint64(hash_at(key, base + j)), threshold)
            out[i, j] = x[i, j] * scale if kept else zero
            if kept:
                byte |= np.uint8(1 << (j - j0))
        mask[i, b] = byte


def _forward_keyed(x, out, mask, p, key, batch):
    _forward[blocks_for(mask.size), BLOCK](
        x, out, mask, np.uint64(key), np.uint64(keep_threshold(p)), typed(1.0 / (1.0 - p), x), batch
    )


def dropout_forward(x, out, mask, p, seed, stream, step):
    """out = x * keep / (1 - p) on the device, keep drawn from (seed, stream, step); writes the mask."""
    _forward_keyed(x, out, mask, p, key64(seed, stream, step), x.shape[0])


def dropout_forward_counted(x, out, mask, p, seed, stream, counter):
    """:func:`dropout_forward` at step ``counter[0]``, then ``counter[0] += 1``.

    ``counter`` is int64 (1,); keep it a host NumPy array (a device array works, but each read
    and write is a synchronising copy).
    """
    dropout_forward(x, out, mask, p, seed, stream, int(counter[0]))
    counter[0] += 1


def dropout_forward_counted_from(x, out, mask, p, seed, stream, counter, first_row):
    """:func:`dropout_forward_counted` with the rows numbered from ``first_row[0]`` (host int64 (1,))."""
    key = np.uint64(key64(seed, stream, int(counter[0])))  # (a Python int on the simulator: typed back)
    _forward_keyed(x, out, mask, p, row_key(key, int(first_row[0]), x.shape[1]), x.shape[0])
    counter[0] += 1


def dropout_forward_steps_from(x, out, mask, p, seed, stream, counter, first_row):
    """The CPU's :func:`~fastnn.kernels.dropout.dropout_forward_steps_from` on the device: x, out
    (steps, batch, features), mask (steps * batch, mask_bytes(features)); host counters."""
    steps, batch, n = x.shape
    key = row_key(np.uint64(key64(seed, stream, int(counter[0]))), int(first_row[0]), steps * n)
    _forward_keyed(x.reshape((steps * batch, n)), out.reshape((steps * batch, n)), mask, p, key, batch)
    counter[0] += 1


@cuda.jit
def _backward(grad_out, mask, grad_in, scale):
    n = grad_out.shape[1]
    zero = like(0.0, grad_out)
    for e in range(cuda.grid(1), grad_out.shape[0] * n, cuda.gridsize(1)):
        i = e // n
        j = e - i * n
        kept = (mask[i, j >> 3] >> (j & 7)) & 1
        grad_in[i, j] = grad_out[i, j] * scale if kept else zero


def dropout_backward(grad_out, mask, grad_in, p):
    """grad_in = grad_out * keep / (1 - p) with the forward's mask; ``grad_in`` may be ``grad_out``."""
    _backward[blocks_for(grad_out.size), BLOCK](grad_out, mask, grad_in, typed(1.0 / (1.0 - p), grad_out))


__all__ = [
    "CHUNK_ROWS",
    "dropout_backward",
    "dropout_forward",
    "dropout_forward_counted",
    "dropout_forward_counted_from",
    "dropout_forward_steps_from",
    "mask_bytes",
]
