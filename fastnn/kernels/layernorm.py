"""Layer normalisation over the features of each row (torch.nn.LayerNorm on the last axis).

Each row is normalised with its own mean and biased variance (two passes); a row whose sums
overflow the dtype (|x| from ~1e19 in float32) is recomputed on x / max|x|
(:func:`~fastnn.kernels.batchnorm.scaled_moments`), so outputs stay finite for finite inputs.
``gamma``/``beta`` are per feature. Rows are independent, so the row loops run in parallel above the size threshold; the
parameter gradients (column sums over rows) use fixed ``REDUCTION_CHUNK_ROWS`` row chunks
combined in chunk order, so results are bit-identical on any number of threads.

Buffers (one dtype, float32 or float64, C-contiguous):
  x, out, x_hat, grad_out, grad_x: (batch, features); inv_std: (batch,)
  gamma, beta, grad_gamma, grad_beta: (features,); partials: (2, partial_rows(batch), features)
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .._config import JIT, JIT_PARALLEL, PARALLEL_MIN_ELEMENTS, REDUCTION_CHUNK_ROWS
from ._scalar import is_finite, like, n_chunks, start_of
from .batchnorm import normalize_value, partial_rows, scaled_moments, sum_partials


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _forward_rows(x, gamma, beta, out, x_hat, inv_std, eps, affine, r0, r1):
    n = x.shape[1]
    inv_n = like(1.0 / n, x)
    one = like(1.0, x)
    for i in range(r0, r1):
        mean = like(0.0, x)
        for j in range(n):
            mean += x[i, j]
        mean *= inv_n
        var = like(0.0, x)
        for j in range(n):
            d = x[i, j] - mean
            var += d * d
        if is_finite(mean) and is_finite(var):
            s = one / math.sqrt(var * inv_n + eps)
        else:  # the row's sums overflowed: redo it on scaled values
            mean, _, s = scaled_moments(x[i], eps)
        inv_std[i] = s
        for j in range(n):
            h = normalize_value(x[i, j], mean, s)
            x_hat[i, j] = h
            out[i, j] = gamma[j] * h + beta[j] if affine else h


@njit(**JIT_PARALLEL)
def layernorm_forward(x, gamma, beta, out, x_hat, inv_std, eps, affine):
    """out = (x - row mean) / sqrt(row var + eps) (* gamma + beta if ``affine``), rows of (batch, features).

    Writes out, x_hat (may be ``out`` when not ``affine``; may not be ``x``) and inv_std
    (batch,). ``gamma``/``beta`` (features,) are read only if ``affine``.
    """
    m = x.shape[0]
    e = like(eps, x)
    if x.size < PARALLEL_MIN_ELEMENTS:
        _forward_rows(x, gamma, beta, out, x_hat, inv_std, e, affine, start_of(m), m)
    else:
        for c_u in prange(n_chunks(m, REDUCTION_CHUNK_ROWS)):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            r0 = c * REDUCTION_CHUNK_ROWS
            _forward_rows(x, gamma, beta, out, x_hat, inv_std, e, affine, r0, min(m, r0 + REDUCTION_CHUNK_ROWS))


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _backward_chunk(grad_out, x_hat, inv_std, gamma, grad_x, partials, affine, chunk):
    """grad_x on one row chunk and, if ``affine``, that chunk's partial sums for grad_beta/grad_gamma."""
    m, n = grad_out.shape
    r0 = chunk * REDUCTION_CHUNK_ROWS
    r1 = min(m, r0 + REDUCTION_CHUNK_ROWS)
    inv_n = like(1.0 / n, grad_out)
    if affine:
        s = partials[0, chunk]
        sx = partials[1, chunk]
        for j in range(n):
            s[j] = 0
            sx[j] = 0
        for i in range(r0, r1):
            for j in range(n):
                s[j] += grad_out[i, j]
                sx[j] += grad_out[i, j] * x_hat[i, j]
    for i in range(r0, r1):
        sum_g = like(0.0, grad_out)
        sum_gx = like(0.0, grad_out)
        for j in range(n):
            g = grad_out[i, j] * gamma[j] if affine else grad_out[i, j]
            sum_g += g
            sum_gx += g * x_hat[i, j]
        sum_g *= inv_n
        sum_gx *= inv_n
        s_i = inv_std[i]
        for j in range(n):
            g = grad_out[i, j] * gamma[j] if affine else grad_out[i, j]
            grad_x[i, j] = s_i * (g - sum_g - x_hat[i, j] * sum_gx)


@njit(**JIT_PARALLEL)
def layernorm_backward(grad_out, x_hat, inv_std, gamma, grad_x, grad_gamma, grad_beta, partials, affine):
    """Gradients of layer norm from the upstream ``grad_out`` (batch, features).

    Per row, with g = grad_out * gamma: grad_x = inv_std / n * (n * g - sum(g) - x_hat * sum(g * x_hat))
    (sums over the row's features); grad_x may be ``grad_out``. If ``affine``: grad_beta =
    sum over rows of grad_out, grad_gamma = of grad_out * x_hat; otherwise gamma, grad_gamma,
    grad_beta and partials are not touched.
    """
    m = grad_out.shape[0]
    chunks = n_chunks(m, REDUCTION_CHUNK_ROWS)
    if grad_out.size < PARALLEL_MIN_ELEMENTS:
        for c in range(chunks):
            _backward_chunk(grad_out, x_hat, inv_std, gamma, grad_x, partials, affine, c)
    else:
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            _backward_chunk(grad_out, x_hat, inv_std, gamma, grad_x, partials, affine, c)
    if affine:
        sum_partials(partials, 0, grad_beta, chunks)
        sum_partials(partials, 1, grad_gamma, chunks)


__all__ = ["layernorm_backward", "layernorm_forward", "partial_rows"]

#: the functions the object layer calls (fastnn.backend.kernels); the CUDA twin module has them too
DEVICE_API = ("layernorm_forward", "layernorm_backward")
