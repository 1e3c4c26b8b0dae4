"""Batch normalisation over the batch axis of (batch, features) arrays (torch.nn.BatchNorm1d).

Training normalises with the batch mean and the biased batch variance and, if tracking,
updates ``running = (1 - momentum) * running + momentum * batch_stat`` with the *unbiased*
variance (``var * batch / (batch - 1)``), as PyTorch does. Evaluation uses the running statistics.

Statistics are reduced over fixed chunks of ``REDUCTION_CHUNK_ROWS`` rows: each chunk's mean and
sum of squared deviations go to ``partials`` (rows written by one chunk only), then the chunks
are merged serially in chunk order (Chan et al.'s pairwise update), so results are bit-identical
on any number of threads, and stable (no ``E[x^2] - E[x]^2`` cancellation).

Buffers (all one dtype, float32 or float64, C-contiguous):
  x, out, x_hat, grad_out, grad_x: (batch, features)
  gamma, beta, running_mean, running_var, mean, inv_std, grad_gamma, grad_beta: (features,)
  partials: (2, partial_rows(batch), features) scratch
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .._config import JIT, JIT_INLINE, JIT_PARALLEL, PARALLEL_MIN_ELEMENTS, REDUCTION_CHUNK_ROWS
from ._scalar import like, n_chunks, start_of


def partial_rows(batch: int) -> int:
    """Rows of each half of the ``partials`` scratch for a batch of ``batch`` rows."""
    return (batch + REDUCTION_CHUNK_ROWS - 1) // REDUCTION_CHUNK_ROWS


@njit(**JIT_INLINE)
def _chunk_rows(chunk, m):
    r0 = chunk * REDUCTION_CHUNK_ROWS
    return r0, min(r0 + REDUCTION_CHUNK_ROWS, m)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _chunk_moments(x, partials, chunk):
    """partials[0, chunk] = column means, partials[1, chunk] = sums of squared deviations."""
    r0, r1 = _chunk_rows(chunk, x.shape[0])
    n = x.shape[1]
    mean = partials[0, chunk]
    m2 = partials[1, chunk]
    for j in range(n):
        mean[j] = x[r0, j]
    for i in range(r0 + 1, r1):
        for j in range(n):
            mean[j] += x[i, j]
    inv_count = like(1.0 / (r1 - r0), x)
    for j in range(n):
        mean[j] *= inv_count
        m2[j] = 0
    for i in range(r0, r1):
        for j in range(n):
            d = x[i, j] - mean[j]
            m2[j] += d * d


@njit(**JIT_INLINE)
def _merge_moments(partials, mean, var, m, chunks):
    """Chan's merge of the chunk moments in chunk order; var = biased variance."""
    n = mean.shape[0]
    for j in range(n):
        mean[j] = partials[0, 0, j]
        var[j] = partials[1, 0, j]
    count = min(REDUCTION_CHUNK_ROWS, m)
    for c in range(1, chunks):
        nb = min(REDUCTION_CHUNK_ROWS, m - c * REDUCTION_CHUNK_ROWS)
        total = count + nb
        wb = like(nb / total, mean)
        cross = like(count * nb / total, mean)
        for j in range(n):
            delta = partials[0, c, j] - mean[j]
            mean[j] += delta * wb
            var[j] += partials[1, c, j] + delta * delta * cross
        count = total
    inv_m = like(1.0 / m, mean)
    for j in range(n):
        var[j] *= inv_m


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _normalize_rows(x, mean, inv_std, gamma, beta, out, x_hat, affine, r0, r1):
    """x_hat = (x - mean) * inv_std and out = gamma * x_hat + beta (out = x_hat if not affine)."""
    n = x.shape[1]
    for i in range(r0, r1):
        for j in range(n):
            h = (x[i, j] - mean[j]) * inv_std[j]
            x_hat[i, j] = h
            out[i, j] = gamma[j] * h + beta[j] if affine else h


@njit(**JIT_PARALLEL)
def batchnorm_forward_train(x, gamma, beta, running_mean, running_var, out, x_hat, mean, inv_std, partials,
                            eps, momentum, affine, track):
    """Training-mode batch norm of ``x`` (batch >= 2, features); shapes in the module note.

    Writes out, x_hat (kept for the backward; may be ``out`` when not ``affine``), mean and
    inv_std = 1 / sqrt(var + eps) (features,); ``gamma``/``beta`` are read only if ``affine``.
    If ``track``: running_mean/running_var updated in place with ``momentum`` (for PyTorch's
    ``momentum=None``, pass 1 / batches_seen), the variance unbiased.
    """
    m, n = x.shape
    chunks = n_chunks(m, REDUCTION_CHUNK_ROWS)
    parallel = m * n >= PARALLEL_MIN_ELEMENTS
    if parallel:
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            _chunk_moments(x, partials, c)
    else:
        for c in range(chunks):
            _chunk_moments(x, partials, c)
    var = inv_std  # the biased variance passes through inv_std's buffer
    _merge_moments(partials, mean, var, m, chunks)
    e = like(eps, x)
    one = like(1.0, x)
    if track:
        mom = like(momentum, x)
        keep = one - mom
        unbias = like(m / max(m - 1, 1), x)
        for j in range(n):
            running_mean[j] = keep * running_mean[j] + mom * mean[j]
            running_var[j] = keep * running_var[j] + mom * (var[j] * unbias)
    for j in range(n):
        inv_std[j] = one / math.sqrt(var[j] + e)
    if parallel:
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            r0, r1 = _chunk_rows(c, m)
            _normalize_rows(x, mean, inv_std, gamma, beta, out, x_hat, affine, r0, r1)
    else:
        _normalize_rows(x, mean, inv_std, gamma, beta, out, x_hat, affine, start_of(m), m)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _eval_rows(x, gamma, beta, running_mean, running_var, out, eps, affine, r0, r1):
    n = x.shape[1]
    one = like(1.0, x)
    for i in range(r0, r1):
        for j in range(n):
            h = (x[i, j] - running_mean[j]) * (one / math.sqrt(running_var[j] + eps))
            out[i, j] = gamma[j] * h + beta[j] if affine else h


@njit(**JIT_PARALLEL)
def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, out, eps, affine):
    """Evaluation-mode batch norm: out = (x - running_mean) / sqrt(running_var + eps) (* gamma + beta).

    ``out`` may be ``x``; any batch size (1 included).
    """
    m, n = x.shape
    e = like(eps, x)
    if m * n < PARALLEL_MIN_ELEMENTS:
        _eval_rows(x, gamma, beta, running_mean, running_var, out, e, affine, start_of(m), m)
    else:
        for c_u in prange(n_chunks(m, REDUCTION_CHUNK_ROWS)):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            r0, r1 = _chunk_rows(c, m)
            _eval_rows(x, gamma, beta, running_mean, running_var, out, e, affine, r0, r1)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _grad_sums_chunk(grad_out, x_hat, partials, chunk):
    """partials[0, chunk] = column sums of grad_out, partials[1, chunk] = of grad_out * x_hat."""
    r0, r1 = _chunk_rows(chunk, grad_out.shape[0])
    n = grad_out.shape[1]
    s = partials[0, chunk]
    sx = partials[1, chunk]
    for j in range(n):
        s[j] = 0
        sx[j] = 0
    for i in range(r0, r1):
        for j in range(n):
            g = grad_out[i, j]
            s[j] += g
            sx[j] += g * x_hat[i, j]


@njit(**JIT_INLINE)
def sum_partials(partials, which, total, chunks):
    """total = partials[which, 0] + partials[which, 1] + ... (chunk order)."""
    n = total.shape[0]
    for j in range(n):
        total[j] = partials[which, 0, j]
    for c in range(1, chunks):
        for j in range(n):
            total[j] += partials[which, c, j]


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _grad_x_rows(grad_out, x_hat, inv_std, gamma, grad_beta, grad_gamma, grad_x, affine, r0, r1):
    """grad_x = gamma * inv_std / m * (m * dy - sum(dy) - x_hat * sum(dy * x_hat))."""
    m, n = grad_out.shape
    inv_m = like(1.0 / m, grad_out)
    for i in range(r0, r1):
        for j in range(n):
            scale = inv_std[j] * gamma[j] if affine else inv_std[j]
            g = grad_out[i, j] - (grad_beta[j] + x_hat[i, j] * grad_gamma[j]) * inv_m
            grad_x[i, j] = scale * g


@njit(**JIT_PARALLEL)
def batchnorm_backward(grad_out, x_hat, inv_std, gamma, grad_x, grad_gamma, grad_beta, partials, affine):
    """Gradients of training-mode batch norm from the upstream ``grad_out`` (batch, features).

    Closed form: with g = grad_out * gamma, grad_x = inv_std / N * (N * g - sum(g) - x_hat *
    sum(g * x_hat)) (sums over the batch). Writes grad_x (may be ``grad_out``), grad_beta =
    sum(grad_out) and grad_gamma = sum(grad_out * x_hat) (features,); when not ``affine`` the
    last two still receive those sums (use them as scratch) and ``gamma`` is not read.
    """
    m, n = grad_out.shape
    chunks = n_chunks(m, REDUCTION_CHUNK_ROWS)
    parallel = m * n >= PARALLEL_MIN_ELEMENTS
    if parallel:
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            _grad_sums_chunk(grad_out, x_hat, partials, c)
    else:
        for c in range(chunks):
            _grad_sums_chunk(grad_out, x_hat, partials, c)
    sum_partials(partials, 0, grad_beta, chunks)
    sum_partials(partials, 1, grad_gamma, chunks)
    if parallel:
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            r0, r1 = _chunk_rows(c, m)
            _grad_x_rows(grad_out, x_hat, inv_std, gamma, grad_beta, grad_gamma, grad_x, affine, r0, r1)
    else:
        _grad_x_rows(grad_out, x_hat, inv_std, gamma, grad_beta, grad_gamma, grad_x, affine, start_of(m), m)


__all__ = [
    "batchnorm_backward",
    "batchnorm_forward_eval",
    "batchnorm_forward_train",
    "partial_rows",
    "sum_partials",
]


@njit(**JIT)
def batchnorm_forward_train_counted(x, gamma, beta, running_mean, running_var, out, x_hat, mean, inv_std,
                                    partials, eps, momentum, affine, track, batches):
    """:func:`batchnorm_forward_train` that also counts batches in ``batches`` (int64 (1,)) when
    tracking; ``momentum < 0`` means a cumulative average (PyTorch's ``momentum=None``)."""
    if track:
        batches[0] += 1
    mom = momentum if momentum >= 0 else 1.0 / max(1, batches[0])
    batchnorm_forward_train(x, gamma, beta, running_mean, running_var, out, x_hat, mean, inv_std, partials,
                            eps, mom, affine, track)
