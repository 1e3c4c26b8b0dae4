"""CUDA twins of :mod:`fastnn.kernels`: the same module and function names, on device arrays.

Each launcher takes numba device arrays (or any ``__cuda_array_interface__`` array Numba
accepts) with the CPU kernel's arguments, in the same order, and runs ``@cuda.jit`` kernels that
call the CPU modules' scalar ``@njit`` functions, so both backends share one formula per op.
Kernels compile lazily on first launch: importing this package needs numba-cuda, not a GPU.
Check :func:`fastnn.backend.require_cuda` before launching anything.
"""
from __future__ import annotations

from . import (
    activations,
    attention,
    batchnorm,
    conv,
    dense,
    dropout,
    elementwise,
    embedding,
    layernorm,
    layout,
    losses,
    masking,
    optim,
    pooling,
    recurrent,
    rng,
    sequence,
)

__all__ = [
    "activations",
    "attention",
    "batchnorm",
    "conv",
    "dense",
    "dropout",
    "elementwise",
    "embedding",
    "layernorm",
    "layout",
    "losses",
    "masking",
    "optim",
    "pooling",
    "recurrent",
    "rng",
    "sequence",
]
