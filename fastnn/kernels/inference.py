"""Evaluation-mode kernels of the inference plans (:mod:`fastnn._inference`).

A dense layer followed by evaluation-mode batch norm and an activation is one affine map per
output column before the activation: ``y = f((x @ w) * scale + shift)``. :func:`dense_infer`
runs it with the scale and shift applied in the GEMM tiles' epilogue, where the training kernel
adds the bias (a plain dense layer is scale 1, shift = bias), writing ``y`` once, in place.
:func:`batchnorm_fold` computes scale and shift from the layer's bias and the running
statistics (O(features), so a plan recomputes them at every call and can never be stale);
:func:`scale_rows` folds the scale into a convolution's weights (small next to its work).

CPU only (no DEVICE_API: the layers never call these; CUDA models keep the layer-by-layer path).
Shapes: x (batch, in), w (in, out), scale/shift/bias and the statistics (out,), y (batch, out);
one dtype, float32 or float64, C-contiguous.
"""

from __future__ import annotations

import math

import numpy as np
from numba import literal_unroll, njit, prange

from .._config import JIT, JIT_PARALLEL
from ._scalar import like
from .activations import ROWWISE_CODES, ROWWISE_REFUSED, VECTORISED_CODES, activate, activate_const
from .blas import gemm_block, small_kernel_form
from .dense import _block, _grid, _share, _shares, _threaded_product, _worth_parallel
from .gemv import gemv_wanted


@njit(**JIT)  # not inlined: literal_unroll inside a prange body would serialise it
def _affine_activate_block(y, scale, shift, code, alpha, r0, r1, c0, c1):
    """y[r0:r1, c0:c1] = f(y * scale + shift) in place (elementwise activations only)."""
    s, t = scale[c0:c1], shift[c0:c1]
    n = c1 - c0
    vectorised = False
    for c in literal_unroll(VECTORISED_CODES):  # the code is a constant inside each loop: it vectorises
        if code == c:
            vectorised = True
            for i in range(r0, r1):
                yi = y[i, c0:c1]
                for j in range(n):
                    yi[j] = activate_const(c, yi[j] * s[j] + t[j], alpha)
    if not vectorised:
        for i in range(r0, r1):
            yr = y[i, c0:c1]
            for j in range(n):
                yr[j] = activate(code, yr[j] * s[j] + t[j], alpha)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _infer_tile(x, w, scale, shift, y, code, alpha, tile, grid):
    r0, r1, c0, c1 = _block(tile, grid[0], grid[1], grid[3], y.shape[0], y.shape[1])
    gemm_block(False, False, like(1.0, y), x, w, like(0.0, y), y, r0, r1, c0, c1)
    _affine_activate_block(y, scale, shift, code, alpha, r0, r1, c0, c1)


@njit(**JIT_PARALLEL)
def dense_infer(x, w, scale, shift, y, code, alpha):
    """y = f((x @ w) * scale + shift) (elementwise activation ``code``), written once into ``y``.

    x (batch, in), w (in, out), scale/shift (out,), y (batch, out), one dtype. The tiles, the
    threshold for going parallel and the refusal of row-wise codes (the plan applies softmax
    with ``activation_forward`` after) are those of ``dense_forward``.
    """
    if code >= ROWWISE_CODES:
        raise ValueError(ROWWISE_REFUSED)
    m, n = y.shape
    a = like(alpha, y)
    k = x.shape[1]
    parallel = _worth_parallel(m, n, k)
    threaded = _threaded_product(parallel, m, w)
    # a batch-1 product of fastnn's gemv kernel run on this thread: one tile, one pass over w (two
    # tiles of 784x256: 4.6 -> 5.1 us); its columns' bits do not depend on the tiles (gemv.py)
    tiled = parallel and (threaded or not (m == 1 and gemv_wanted(k, n, y.itemsize)))
    grid = _grid(m, n, k, tiled, small_kernel_form(False, False))  # x @ w
    if threaded:
        for s_u in prange(_shares(grid[2] * grid[3])):
            lo, hi = _share(np.int64(s_u), grid[2] * grid[3])  # prange indices are uint64
            for t in range(lo, hi):
                _infer_tile(x, w, scale, shift, y, code, a, t, grid)
    else:
        for t in range(grid[2] * grid[3]):  # the same tiles (one when not parallel), in a loop
            _infer_tile(x, w, scale, shift, y, code, a, t, grid)


@njit(**JIT)
def batchnorm_fold(bias, gamma, beta, running_mean, running_var, scale, shift, eps):
    """scale = gamma / sqrt(running_var + eps), shift = (bias - running_mean) * scale + beta, so
    that evaluation-mode batch norm of ``z + bias`` is ``z * scale + shift``. All (features,);
    writes scale and shift. (A layer without affine parameters passes gamma 1 and beta 0.)"""
    one = like(1.0, scale)
    e = like(eps, scale)
    for j in range(scale.shape[0]):
        s = gamma[j] * (one / math.sqrt(running_var[j] + e))
        scale[j] = s
        shift[j] = (bias[j] - running_mean[j]) * s + beta[j]


@njit(**JIT)
def scale_rows(w, scale, out):
    """out[i, :] = w[i, :] * scale[i]: a convolution's weights (out_channels, fan_in) with the
    batch-norm scale folded in. w, out (rows, k), scale (rows,)."""
    for i in range(w.shape[0]):
        s = scale[i]
        for j in range(w.shape[1]):
            out[i, j] = w[i, j] * s
