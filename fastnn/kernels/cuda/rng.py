"""CUDA twins of kernels/rng.py: the same counter-based generator, filled on the device.

Each element calls the CPU module's scalar functions (:func:`uniform_at`, :func:`normal_pair_at`
under the key :func:`key64` computed on the host), so the CPU and the GPU draw the same numbers
for the same (seed, stream, step, index). All hash arithmetic stays uint64 inside those functions.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from ..rng import hash_at, key64, normal_pair_at, uniform_at
from ._common import BLOCK, blocks_for, typed


@cuda.jit
def _fill_uniform(out, key, low, span):
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = low + span * uniform_at(key, i, low)


def fill_uniform(out, seed, stream, step, low, high):
    """out[i] = low + (high - low) * uniform(seed, stream, step, i) for the 1-D device array ``out``."""
    lo = typed(low, out)
    span = typed(high, out) - lo
    _fill_uniform[blocks_for(out.size), BLOCK](out, np.uint64(key64(seed, stream, step)), lo, span)


@cuda.jit
def _fill_normal(out, key, mean, std):
    n = out.shape[0]
    for p in range(cuda.grid(1), (n + 1) // 2, cuda.gridsize(1)):
        c, s = normal_pair_at(key, p, mean)
        out[2 * p] = mean + std * c
        if 2 * p + 1 < n:
            out[2 * p + 1] = mean + std * s


def fill_normal(out, seed, stream, step, mean, std):
    """out[i] = mean + std * normal(seed, stream, step, i) for the 1-D device array ``out``."""
    _fill_normal[blocks_for((out.size + 1) // 2), BLOCK](
        out, np.uint64(key64(seed, stream, step)), typed(mean, out), typed(std, out)
    )


@cuda.jit
def _permutation(n, key, out):
    if cuda.grid(1) == 0:
        for i in range(n):
            out[i] = i
        for i in range(n - 1, 0, -1):
            j = np.int64(np.uint64(hash_at(key, i)) % np.uint64(i + 1))
            t = out[i]
            out[i] = out[j]
            out[j] = t


def permutation(n, seed, stream, step, out):
    """The CPU's seeded Fisher-Yates shuffle of 0..n-1 into the int64 device array ``out``.

    Serial by definition (one thread): use it for small index arrays, or shuffle on the host.
    """
    _permutation[1, 1](n, np.uint64(key64(seed, stream, step)), out)


__all__ = ["fill_normal", "fill_uniform", "permutation"]
