"""CUDA twins of kernels/batchnorm.py: batch statistics by block reductions over fixed row chunks.

The forward's statistics follow the CPU exactly in structure: a kernel of (COLS x LANES) blocks
computes each fixed ``REDUCTION_CHUNK_ROWS`` row chunk's column mean and sum of squared
deviations (two passes over the chunk, block reductions across the row lanes) into ``partials``;
one thread per column then merges the chunks in chunk order (Chan et al.), updates the running
statistics and writes inv_std; an elementwise kernel normalises. The merge, the rescue of columns
whose sums overflowed, the running update and the normalisation are the CPU module's rules. The backward reduces sum(dy) and
sum(dy * x_hat) the same way, combines them in chunk order, then computes grad_x elementwise.

Buffers, shapes and arguments as on the CPU (device arrays): partials (2, partial_rows(batch), features).
Masked statistics (``lengths`` (samples,) int64 on the device, ``per_sample``, ``per_step``: rows of
padded sequence steps, the CPU's rule): the kernels take the lengths array, or a one-element
placeholder with ``per_step`` 0 (every row counts: one uniform test per row); the backward's
launcher reads the lengths back once to count the valid rows, as the masked losses do.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ..._config import REDUCTION_CHUNK_ROWS
from .._scalar import is_finite, like
from ..batchnorm import (
    chan_step,
    chan_weights,
    normalize_value,
    partial_rows,
    running_grad_scale,
    running_inv_std,
    running_update,
    scaled_moments,
)
from ..masking import row_is_valid
from ._common import (
    BLOCK,
    COLS,
    LANES,
    blocks_for,
    combine_rows,
    lanes_sum,
    no_lengths,
    numba_type,
    per_dtype,
    typed,
)


@per_dtype
def column_kernels(dtype):
    """(chunk_moments, chunk_sums2) for one dtype: per-chunk column reductions into ``partials``."""
    nb_type = numba_type(dtype)
    zero = np.dtype(dtype).type(0)

    @cuda.jit
    def chunk_moments(x, partials, lengths, per_sample, per_step):
        """partials[0, chunk, j] = chunk mean of column j, partials[1, chunk, j] = its sum of squared
        deviations, over the rows that count (``_counts``; zeros for a chunk without one)."""
        buf = cuda.shared.array((LANES, COLS), nb_type)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        m = x.shape[0]
        n = x.shape[1]
        for chunk in range(cuda.blockIdx.y, (m + REDUCTION_CHUNK_ROWS - 1) // REDUCTION_CHUNK_ROWS, cuda.gridDim.y):
            r0 = chunk * REDUCTION_CHUNK_ROWS
            r1 = min(m, r0 + REDUCTION_CHUNK_ROWS)
            count = _chunk_count(lengths, r0, r1, per_sample, per_step)
            inv_count = like(1.0, x) / like(max(count, 1), x)
            for tile in range(cuda.blockIdx.x, (n + COLS - 1) // COLS, cuda.gridDim.x):
                j = tile * COLS + tx
                acc = zero
                if j < n:
                    for i in range(r0 + ty, r1, LANES):
                        if _counts(lengths, i, per_sample, per_step):
                            acc += x[i, j]
                buf[ty, tx] = acc
                mean = lanes_sum(buf, tx, ty) * inv_count
                acc = zero
                if j < n:
                    for i in range(r0 + ty, r1, LANES):
                        if _counts(lengths, i, per_sample, per_step):
                            d = x[i, j] - mean
                            acc += d * d
                buf[ty, tx] = acc
                m2 = lanes_sum(buf, tx, ty)
                if ty == 0 and j < n:
                    partials[0, chunk, j] = mean
                    partials[1, chunk, j] = m2

    @cuda.jit
    def chunk_sums2(a, b, partials):
        """partials[0, chunk, j] = sum of a[:, j] over the chunk's rows, partials[1, chunk, j] = of a * b."""
        buf = cuda.shared.array((LANES, COLS), nb_type)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        m = a.shape[0]
        n = a.shape[1]
        for chunk in range(cuda.blockIdx.y, (m + REDUCTION_CHUNK_ROWS - 1) // REDUCTION_CHUNK_ROWS, cuda.gridDim.y):
            r0 = chunk * REDUCTION_CHUNK_ROWS
            r1 = min(m, r0 + REDUCTION_CHUNK_ROWS)
            for tile in range(cuda.blockIdx.x, (n + COLS - 1) // COLS, cuda.gridDim.x):
                j = tile * COLS + tx
                s = zero
                sx = zero
                if j < n:
                    for i in range(r0 + ty, r1, LANES):
                        g = a[i, j]
                        s += g
                        sx += g * b[i, j]
                buf[ty, tx] = s
                total = lanes_sum(buf, tx, ty)
                buf[ty, tx] = sx
                total_x = lanes_sum(buf, tx, ty)
                if ty == 0 and j < n:
                    partials[0, chunk, j] = total
                    partials[1, chunk, j] = total_x

    return chunk_moments, chunk_sums2


def column_grid(m: int, n: int):
    """(grid, block) of the per-chunk column reductions over an (m, n) array."""
    grid = (blocks_for(-(-n // COLS), 1), blocks_for(-(-m // REDUCTION_CHUNK_ROWS), 1))
    return grid, (COLS, LANES)


# The CPU's rules compiled as device functions: the rescue of a column whose sums overflowed, the
# valid-step test of a row.
_scaled_moments = cuda.jit(device=True)(scaled_moments.py_func)
_row_is_valid = cuda.jit(device=True)(row_is_valid.py_func)


@cuda.jit(device=True)
def _counts(lengths, i, per_sample, per_step):
    """Whether row ``i`` enters the statistics: every row for ``per_step`` 0, else the CPU's rule."""
    return per_step == 0 or _row_is_valid(lengths, i, per_sample, per_step)


@cuda.jit(device=True)
def _chunk_count(lengths, r0, r1, per_sample, per_step):
    """The rows r0:r1 that count (``_counts``)."""
    if per_step == 0:
        return r1 - r0
    count = 0
    for i in range(r0, r1):
        if _row_is_valid(lengths, i, per_sample, per_step):
            count += 1
    return count


@cuda.jit
def _merge_moments(
    x,
    partials,
    mean,
    inv_std,
    running_mean,
    running_var,
    m,
    chunks,
    eps,
    momentum,
    track,
    lengths,
    per_sample,
    per_step,
):
    """Per column: Chan's merge of the chunk moments in chunk order (chunks without a counted row
    skipped), running stats, inv_std (as the CPU)."""
    for j in range(cuda.grid(1), mean.shape[0], cuda.gridsize(1)):
        mu = like(0.0, eps)
        var = like(0.0, eps)
        count = 0
        for c in range(chunks):
            r0 = c * REDUCTION_CHUNK_ROWS
            nb = _chunk_count(lengths, r0, min(m, r0 + REDUCTION_CHUNK_ROWS), per_sample, per_step)
            if nb == 0:
                continue
            if count == 0:
                mu = partials[0, c, j]
                var = partials[1, c, j]
            else:
                wb, cross = chan_weights(count, nb, mu)
                mu, var = chan_step(mu, var, partials[0, c, j], partials[1, c, j], wb, cross)
            count += nb
        var *= like(1.0 / max(count, 1), mu)
        one = like(1.0, mu)
        if is_finite(mu) and is_finite(var):
            inv = one / math.sqrt(var + eps)
        elif per_step == 0:  # the column's sums overflowed: redo it on scaled values
            mu, var, inv = _scaled_moments(x[:, j], eps)
        else:
            mu, var, inv = _scaled_moments(x[:, j], eps, lengths, per_sample, per_step)
        mean[j] = mu
        if track and count > 0:
            keep = one - momentum
            running_mean[j] = running_update(running_mean[j], mu, one, keep, momentum)
            running_var[j] = running_update(running_var[j], var, like(count / max(count - 1, 1), mu), keep, momentum)
        inv_std[j] = inv


@cuda.jit
def _normalize(x, mean, inv_std, gamma, beta, out, x_hat, affine):
    n = x.shape[1]
    for e in range(cuda.grid(1), x.shape[0] * n, cuda.gridsize(1)):
        i = e // n
        j = e - i * n
        h = normalize_value(x[i, j], mean[j], inv_std[j])
        x_hat[i, j] = h
        out[i, j] = gamma[j] * h + beta[j] if affine else h


def _mask_args(lengths, per_sample: int, per_step: int) -> tuple:
    """(lengths or a placeholder, per_sample, per_step or 0 for "every row") for the kernels."""
    if lengths is None:
        return no_lengths(), 1, 0
    return lengths, per_sample, per_step


def batchnorm_forward_train(
    x,
    gamma,
    beta,
    running_mean,
    running_var,
    out,
    x_hat,
    mean,
    inv_std,
    partials,
    eps,
    momentum,
    affine,
    track,
    lengths=None,
    per_sample=1,
    per_step=1,
):
    """Training-mode batch norm of ``x`` (batch >= 2, features) on the device; as the CPU kernel
    (``lengths``: statistics over the valid sequence steps' rows)."""
    m, n = x.shape
    chunks = -(-m // REDUCTION_CHUNK_ROWS)
    grid, block = column_grid(m, n)
    masked = _mask_args(lengths, per_sample, per_step)
    column_kernels(x.dtype)[0][grid, block](x, partials, *masked)
    _merge_moments[blocks_for(n), BLOCK](
        x,
        partials,
        mean,
        inv_std,
        running_mean,
        running_var,
        m,
        chunks,
        typed(eps, x),
        typed(momentum, x),
        track,
        *masked,
    )
    _normalize[blocks_for(x.size), BLOCK](x, mean, inv_std, gamma, beta, out, x_hat, affine)


def batchnorm_forward_train_counted(
    x,
    gamma,
    beta,
    running_mean,
    running_var,
    out,
    x_hat,
    mean,
    inv_std,
    partials,
    eps,
    momentum,
    affine,
    track,
    batches,
    lengths=None,
    per_sample=1,
    per_step=1,
):
    """:func:`batchnorm_forward_train` that counts batches in ``batches`` (int64 (1,)) when tracking.

    ``momentum < 0`` means a cumulative average (PyTorch's ``momentum=None``). Keep ``batches`` a
    host NumPy array (a device array works, but each access is a synchronising copy).
    """
    if track:
        batches[0] += 1
    mom = momentum if momentum >= 0 else 1.0 / max(1, int(batches[0]))
    batchnorm_forward_train(
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        out,
        x_hat,
        mean,
        inv_std,
        partials,
        eps,
        mom,
        affine,
        track,
        lengths,
        per_sample,
        per_step,
    )


@cuda.jit
def _eval(x, gamma, beta, running_mean, running_var, out, eps, affine):
    n = x.shape[1]
    for e in range(cuda.grid(1), x.shape[0] * n, cuda.gridsize(1)):
        i = e // n
        j = e - i * n
        h = normalize_value(x[i, j], running_mean[j], running_inv_std(running_var[j], eps))
        out[i, j] = gamma[j] * h + beta[j] if affine else h


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, out, eps, affine):
    """Evaluation-mode batch norm with the running statistics; ``out`` may be ``x``."""
    _eval[blocks_for(x.size), BLOCK](x, gamma, beta, running_mean, running_var, out, typed(eps, x), affine)


def sum_partials(partials, which, total, chunks):
    """total = partials[which, 0] + partials[which, 1] + ... (chunk order), one thread per column."""
    combine_rows[blocks_for(total.size), BLOCK](partials[which], chunks, total)


@cuda.jit
def _grad_x(
    grad_out, x_hat, inv_std, gamma, grad_beta, grad_gamma, grad_x, affine, inv_m, lengths, per_sample, per_step
):
    """grad_x as the CPU's rows (a row that does not count gets the affine part alone)."""
    n = grad_out.shape[1]
    for e in range(cuda.grid(1), grad_out.shape[0] * n, cuda.gridsize(1)):
        i = e // n
        j = e - i * n
        scale = inv_std[j] * gamma[j] if affine else inv_std[j]
        if _counts(lengths, i, per_sample, per_step):
            g = grad_out[i, j] - (grad_beta[j] + x_hat[i, j] * grad_gamma[j]) * inv_m
            grad_x[i, j] = scale * g
        else:
            grad_x[i, j] = scale * grad_out[i, j]


def _counted_rows(m: int, lengths, per_sample: int, per_step: int) -> int:
    """The rows of ``m`` the statistics count: ``m``, or the valid steps' rows of ``lengths`` (read
    back from the device once)."""
    if lengths is None:
        return m
    host = lengths.copy_to_host() if hasattr(lengths, "copy_to_host") else np.asarray(lengths)
    steps = per_sample // per_step
    return int(np.minimum(host, steps).sum()) * per_step


def batchnorm_backward(
    grad_out,
    x_hat,
    inv_std,
    gamma,
    grad_x,
    grad_gamma,
    grad_beta,
    partials,
    affine,
    lengths=None,
    per_sample=1,
    per_step=1,
):
    """Gradients of training-mode batch norm on the device; as the CPU kernel (grad_x may be
    grad_out; ``lengths``: of the masked forward)."""
    m, n = grad_out.shape
    chunks = -(-m // REDUCTION_CHUNK_ROWS)
    grid, block = column_grid(m, n)
    column_kernels(grad_out.dtype)[1][grid, block](grad_out, x_hat, partials)
    sum_partials(partials, 0, grad_beta, chunks)
    sum_partials(partials, 1, grad_gamma, chunks)
    inv_m = typed(1.0 / max(_counted_rows(m, lengths, per_sample, per_step), 1), grad_out)
    _grad_x[blocks_for(grad_out.size), BLOCK](
        grad_out,
        x_hat,
        inv_std,
        gamma,
        grad_beta,
        grad_gamma,
        grad_x,
        affine,
        inv_m,
        *_mask_args(lengths, per_sample, per_step),
    )


@cuda.jit
def _eval_hat(x, running_mean, running_var, x_hat, eps):
    """x_hat = (x - running_mean) / sqrt(running_var + eps), elementwise."""
    n = x.shape[1]
    for e in range(cuda.grid(1), x.shape[0] * n, cuda.gridsize(1)):
        i = e // n
        j = e - i * n
        x_hat[i, j] = normalize_value(x[i, j], running_mean[j], running_inv_std(running_var[j], eps))


@cuda.jit
def _eval_grad_x(grad_out, gamma, running_var, grad_x, eps, affine):
    """grad_x = grad_out * gamma / sqrt(running_var + eps) (without gamma unless ``affine``)."""
    n = grad_out.shape[1]
    for e in range(cuda.grid(1), grad_out.shape[0] * n, cuda.gridsize(1)):
        i = e // n
        j = e - i * n
        grad_x[i, j] = grad_out[i, j] * running_grad_scale(gamma[j], running_var[j], eps, affine)


def batchnorm_backward_eval(
    grad_out, x, gamma, running_mean, running_var, x_hat, grad_x, grad_gamma, grad_beta, partials, eps, affine
):
    """Gradients of evaluation-mode batch norm (a frozen layer's training step, or an evaluation-mode
    forward) on the device; as the CPU kernel.

    A per-feature affine map: grad_x = grad_out * gamma / sqrt(running_var + eps); if ``affine``,
    grad_beta = sum(grad_out) and grad_gamma = sum(grad_out * x_hat) over the batch (fixed row
    chunks, combined in chunk order), with x_hat (batch, features) scratch written first.
    ``grad_x`` may be ``grad_out``.
    """
    m, n = grad_out.shape
    e = typed(eps, grad_out)
    if affine:
        _eval_hat[blocks_for(x.size), BLOCK](x, running_mean, running_var, x_hat, e)
        grid, block = column_grid(m, n)
        column_kernels(grad_out.dtype)[1][grid, block](grad_out, x_hat, partials)
        chunks = -(-m // REDUCTION_CHUNK_ROWS)
        sum_partials(partials, 0, grad_beta, chunks)
        sum_partials(partials, 1, grad_gamma, chunks)
    _eval_grad_x[blocks_for(grad_out.size), BLOCK](grad_out, gamma, running_var, grad_x, e, affine)


__all__ = [
    "batchnorm_backward",
    "batchnorm_backward_eval",
    "batchnorm_forward_eval",
    "batchnorm_forward_train",
    "batchnorm_forward_train_counted",
    "partial_rows",
    "sum_partials",
]
