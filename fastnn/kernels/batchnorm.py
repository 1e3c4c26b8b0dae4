"""Batch normalisation over the batch axis of (batch, features) arrays (torch.nn.BatchNorm1d).

Training normalises with the batch mean and the biased batch variance and, if tracking,
updates ``running = (1 - momentum) * running + momentum * batch_stat`` with the *unbiased*
variance (``var * batch / (batch - 1)``), as PyTorch does. Evaluation uses the running statistics
(:func:`batchnorm_forward_eval`, backward :func:`batchnorm_backward_eval`), and so does the training
step of a frozen layer. Over rows of padded sequence steps (``TimeDistributed(BatchNorm1d)`` after
masking) the training kernels take ``lengths, per_sample, per_step`` as trailing arguments and
count only the valid steps' rows (``masking.row_counts``; None, the default: every row, the test
pruned at compile time), as Keras 3's masked BatchNormalization.

Statistics are reduced over fixed chunks of ``REDUCTION_CHUNK_ROWS`` rows: each chunk's mean and
sum of squared deviations go to ``partials`` (rows written by one chunk only), then the chunks
are merged serially in chunk order (Chan et al.'s pairwise update), so results are bit-identical
on any number of threads, and stable (no ``E[x^2] - E[x]^2`` cancellation). A column whose sums
overflow the dtype (|x| from ~1e19 in float32) is recomputed on x / max|x| (:func:`scaled_moments`),
so mean, inv_std and the output stay finite; running statistics are clamped to the dtype's finite
range (a variance beyond it, e.g. of values ~1e30 in float32, is kept as the dtype max).

Buffers (all one dtype, float32 or float64, C-contiguous):
  x, out, x_hat, grad_out, grad_x: (batch, features)
  gamma, beta, running_mean, running_var, mean, inv_std, grad_gamma, grad_beta: (features,)
  partials: (2, partial_rows(batch), features) scratch
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .._config import JIT, JIT_INLINE, JIT_ORDERED, JIT_PARALLEL, PARALLEL_MIN_ELEMENTS, REDUCTION_CHUNK_ROWS
from ._scalar import big, clamp_finite, is_finite, like, n_chunks, start_of
from .masking import counted_rows, row_counts, row_is_valid


def partial_rows(batch: int) -> int:
    """Rows of each half of the ``partials`` scratch for a batch of ``batch`` rows."""
    return (batch + REDUCTION_CHUNK_ROWS - 1) // REDUCTION_CHUNK_ROWS


@njit(**JIT_INLINE)
def _chunk_rows(chunk, m):
    r0 = chunk * REDUCTION_CHUNK_ROWS
    return r0, min(r0 + REDUCTION_CHUNK_ROWS, m)


@njit(**JIT_INLINE)
def _chunk_count(lengths, chunk, m, per_sample, per_step):
    """The rows of chunk ``chunk`` that enter the statistics (all of them without ``lengths``)."""
    r0, r1 = _chunk_rows(chunk, m)
    if lengths is None:
        return r1 - r0
    count = 0
    for i in range(r0, r1):
        if row_is_valid(lengths, i, per_sample, per_step):
            count += 1
    return count


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _chunk_moments(x, partials, chunk, lengths, per_sample, per_step):
    """partials[0, chunk] = column means, partials[1, chunk] = sums of squared deviations, over the
    chunk's rows that :func:`~fastnn.kernels.masking.row_counts` admits (zeros if none)."""
    r0, r1 = _chunk_rows(chunk, x.shape[0])
    n = x.shape[1]
    mean = partials[0, chunk]
    m2 = partials[1, chunk]
    count = 0
    for i in range(r0, r1):
        if row_counts(lengths, i, per_sample, per_step):
            if count == 0:
                for j in range(n):
                    mean[j] = x[i, j]
            else:
                for j in range(n):
                    mean[j] += x[i, j]
            count += 1
    inv_count = like(1.0 / max(count, 1), x)
    for j in range(n):
        mean[j] = mean[j] * inv_count if count else 0
        m2[j] = 0
    for i in range(r0, r1):
        if row_counts(lengths, i, per_sample, per_step):
            for j in range(n):
                d = x[i, j] - mean[j]
                m2[j] += d * d


# ---------------------------------------------------------------------------- shared rules
# Scalar and row rules of batch norm and layer norm, called by the CPU loops and the CUDA kernels
# (the array-taking ones through their ``py_func`` compiled as device functions).


@njit(**JIT_INLINE)
def chan_weights(count, nb, ref):
    """(nb / total, count * nb / total) in ``ref``'s dtype: Chan's weights for merging a chunk of
    ``nb`` rows into ``count`` rows (total = count + nb)."""
    total = count + nb
    return like(nb / total, ref), like(count * nb / total, ref)


@njit(**JIT_INLINE)
def chan_step(mean, m2, chunk_mean, chunk_m2, wb, cross):
    """(mean, sum of squared deviations) after merging a chunk's (mean, m2) with weights ``chan_weights``."""
    delta = chunk_mean - mean
    return mean + delta * wb, m2 + (chunk_m2 + delta * delta * cross)


@njit(**JIT_ORDERED)  # not inlined, without 'reassoc': it folded 2 * (x/2 - mean/2) back into x - mean
def _normalize_halved(x, mean, inv_std):
    """2 * ((x/2 - mean/2) * inv_std): (x - mean) * inv_std where x - mean overflows."""
    half = like(0.5, x)
    h = (half * x - half * mean) * inv_std
    return h + h


@njit(**JIT_INLINE)
def normalize_value(x, mean, inv_std):
    """(x - mean) * inv_std, finite also where x - mean overflows (x and mean near +-dtype max)."""
    d = x - mean
    if is_finite(d):
        return d * inv_std
    return _normalize_halved(x, mean, inv_std)


@njit(**JIT_INLINE)
def running_inv_std(running_var, eps):
    """1 / sqrt(running_var + eps): the scale of evaluation mode (and of a frozen layer's training
    step), by which its backward multiplies the gradient too."""
    return like(1.0, running_var) / math.sqrt(running_var + eps)


@njit(**JIT_INLINE)
def running_grad_scale(gamma, running_var, eps, affine):
    """d out / d x of evaluation-mode batch norm in one column: gamma / sqrt(running_var + eps)
    (without gamma unless ``affine``)."""
    inv_std = running_inv_std(running_var, eps)
    return gamma * inv_std if affine else inv_std


@njit(**JIT_ORDERED)  # not inlined: 'reassoc' turned var * (m / (m - 1)) into (var * m) / (m - 1), measured
def running_update(running, stat, factor, keep, momentum):
    """keep * running + momentum * (stat * factor), clamped to the dtype's finite range (a running
    variance of inputs whose variance overflows the dtype stays at the dtype max, not inf)."""
    return clamp_finite(keep * running + momentum * clamp_finite(stat * factor, running), running)


@njit(**JIT_INLINE)
def scaled_moments(v, eps, lengths=None, per_sample=1, per_step=1):
    """(mean, biased variance, 1 / sqrt(variance + eps)) of the 1-D ``v``, computed on v * 2**-e
    with 2**e just above max|v| (exact scaling, so x - mean agrees with the scaled variance). With
    ``lengths``, of the entries ``k`` that ``masking.row_counts(lengths, k, per_sample, per_step)``
    admits (a batch norm column over the valid steps' rows; at least one).

    For the rows or columns whose plain sums overflowed (values from ~1e19 in float32): mean and
    inv_std are finite for finite ``v``; a variance beyond the dtype's range is returned as the
    dtype max (inv_std is then 1 / std, eps being negligible). Serial and in index order, so
    deterministic; only ever run on such rows or columns.
    """
    n = v.shape[0]
    one = like(1.0, v)
    top = like(0.0, v)
    counted = 0
    for k in range(n):
        if row_counts(lengths, k, per_sample, per_step):
            top = max(top, abs(v[k]))
            counted += 1
    _, e = math.frexp(top)
    count = like(counted, v)
    mean = like(0.0, v)
    for k in range(n):
        if row_counts(lengths, k, per_sample, per_step):
            mean += like(math.ldexp(v[k], -e), v)
    mean /= count
    var = like(0.0, v)
    for k in range(n):
        if row_counts(lengths, k, per_sample, per_step):
            d = like(math.ldexp(v[k], -e), v) - mean
            var += d * d
    var /= count
    # No ldexp may overflow (Python's, run by the CUDA simulator, raises): |mean| is kept within
    # top * 2**-e, and the variance is scaled back only when its exponent fits the dtype's.
    limit = like(math.ldexp(top, -e), v)
    mean_full = like(math.ldexp(min(max(mean, -limit), limit), e), v)
    _, e_var = math.frexp(var)
    _, e_max = math.frexp(big(one))
    if var == 0 or e_var + e + e <= e_max:
        var_full = like(math.ldexp(var, e + e), v)
        return mean_full, var_full, one / math.sqrt(var_full + eps)
    return mean_full, big(one), like(math.ldexp(one / math.sqrt(var), -e), v)


# ---------------------------------------------------------------------------- CPU kernels


@njit(**JIT_INLINE)
def _merge_moments(partials, mean, var, m, chunks, lengths, per_sample, per_step):
    """Chan's merge of the chunk moments in chunk order (chunks without a counted row skipped);
    var = biased variance. Returns the rows counted (mean and var are 0 when there are none)."""
    n = mean.shape[0]
    count = 0
    for c in range(chunks):
        nb = _chunk_count(lengths, c, m, per_sample, per_step)
        if nb == 0:
            continue
        if count == 0:
            for j in range(n):
                mean[j] = partials[0, c, j]
                var[j] = partials[1, c, j]
        else:
            wb, cross = chan_weights(count, nb, mean)
            for j in range(n):
                mean[j], var[j] = chan_step(mean[j], var[j], partials[0, c, j], partials[1, c, j], wb, cross)
        count += nb
    inv_m = like(1.0 / max(count, 1), mean)
    for j in range(n):
        if count == 0:
            mean[j] = 0
            var[j] = 0
        var[j] *= inv_m
    return count


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _normalize_rows(x, mean, inv_std, gamma, beta, out, x_hat, affine, r0, r1):
    """x_hat = (x - mean) * inv_std and out = gamma * x_hat + beta (out = x_hat if not affine)."""
    n = x.shape[1]
    for i in range(r0, r1):
        for j in range(n):
            h = normalize_value(x[i, j], mean[j], inv_std[j])
            x_hat[i, j] = h
            out[i, j] = gamma[j] * h + beta[j] if affine else h


@njit(**JIT_PARALLEL)
def batch_statistics(
    x, running_mean, running_var, mean, inv_std, partials, eps, momentum, track, lengths=None, per_sample=1, per_step=1
):
    """The statistics pass of training-mode batch norm of ``x`` (batch >= 2, features): writes
    mean and inv_std = 1 / sqrt(var + eps) (features,) and, if ``track``, updates the running
    statistics with ``momentum`` (the variance unbiased). Shared with kernels.batchnorm_act.

    With ``lengths`` (int64 (samples,)): the rows are ``per_sample`` rows per sample,
    ``per_step`` per step, and only those of valid steps (``masking.row_counts``) enter the
    statistics (Keras 3's masked BatchNormalization), the running variance unbiased over their
    count; a batch without such a row writes mean 0 and var 0 and leaves the running statistics.
    """
    m, n = x.shape
    chunks = n_chunks(m, REDUCTION_CHUNK_ROWS)
    parallel = m * n >= PARALLEL_MIN_ELEMENTS
    if parallel:
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            _chunk_moments(x, partials, c, lengths, per_sample, per_step)
    else:
        for c in range(chunks):
            _chunk_moments(x, partials, c, lengths, per_sample, per_step)
    var = inv_std  # the biased variance passes through inv_std's buffer
    count = _merge_moments(partials, mean, var, m, chunks, lengths, per_sample, per_step)
    e = like(eps, x)
    one = like(1.0, x)
    mom = like(momentum, x)
    keep = one - mom
    unbias = like(count / max(count - 1, 1), x)
    track = track and count > 0
    for j in range(n):
        mu = mean[j]
        v = var[j]
        if is_finite(mu) and is_finite(v):
            inv = one / math.sqrt(v + e)
        else:  # the column's sums overflowed: redo it on scaled values
            mu, v, inv = scaled_moments(x[:, j], e, lengths, per_sample, per_step)
            mean[j] = mu
        if track:
            running_mean[j] = running_update(running_mean[j], mu, one, keep, mom)
            running_var[j] = running_update(running_var[j], v, unbias, keep, mom)
        inv_std[j] = inv


@njit(**JIT_PARALLEL)
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
    """Training-mode batch norm of ``x`` (batch >= 2, features); shapes in the module note.

    Writes out, x_hat (kept for the backward; may be ``out`` when not ``affine``), mean and
    inv_std = 1 / sqrt(var + eps) (features,); ``gamma``/``beta`` are read only if ``affine``.
    If ``track``: running_mean/running_var updated in place with ``momentum`` (for PyTorch's
    ``momentum=None``, pass 1 / batches_seen), the variance unbiased. With ``lengths``,
    ``per_sample`` and ``per_step`` (rows of padded sequence steps, :func:`batch_statistics`):
    the statistics over the valid steps' rows; every row is normalised with them.
    """
    batch_statistics(
        x, running_mean, running_var, mean, inv_std, partials, eps, momentum, track, lengths, per_sample, per_step
    )
    m, n = x.shape
    if m * n >= PARALLEL_MIN_ELEMENTS:
        for c_u in prange(n_chunks(m, REDUCTION_CHUNK_ROWS)):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            r0, r1 = _chunk_rows(c, m)
            _normalize_rows(x, mean, inv_std, gamma, beta, out, x_hat, affine, r0, r1)
    else:
        _normalize_rows(x, mean, inv_std, gamma, beta, out, x_hat, affine, start_of(m), m)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _eval_rows(x, gamma, beta, running_mean, running_var, out, eps, affine, r0, r1):
    """Rows r0:r1 of out = x_hat (* gamma + beta if ``affine``), x_hat = (x - running_mean) /
    sqrt(running_var + eps): the evaluation-mode output, or (not ``affine``) x_hat alone."""
    n = x.shape[1]
    for i in range(r0, r1):
        for j in range(n):
            h = normalize_value(x[i, j], running_mean[j], running_inv_std(running_var[j], eps))
            out[i, j] = gamma[j] * h + beta[j] if affine else h


@njit(**JIT_PARALLEL)
def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, out, eps, affine):
    """Evaluation-mode batch norm: out = (x - running_mean) / sqrt(running_var + eps) (* gamma + beta).

    ``out`` may be ``x``; any batch size (1 included). Also the forward of a frozen layer's
    training step (``BatchNorm1d.frozen``), whose backward is :func:`batchnorm_backward_eval`.
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
def _grad_x_rows(
    grad_out, x_hat, inv_std, gamma, grad_beta, grad_gamma, grad_x, affine, r0, r1, inv_m, lengths, per_sample, per_step
):
    """grad_x = gamma * inv_std / m * (m * dy - sum(dy) - x_hat * sum(dy * x_hat)) (inv_m = 1 / m,
    m the rows counted); a row left out of the statistics (``masking.row_counts``) takes only the
    affine map's part, gamma * inv_std * dy."""
    n = grad_out.shape[1]
    for i in range(r0, r1):
        if row_counts(lengths, i, per_sample, per_step):
            for j in range(n):
                scale = inv_std[j] * gamma[j] if affine else inv_std[j]
                g = grad_out[i, j] - (grad_beta[j] + x_hat[i, j] * grad_gamma[j]) * inv_m
                grad_x[i, j] = scale * g
        else:
            for j in range(n):
                scale = inv_std[j] * gamma[j] if affine else inv_std[j]
                grad_x[i, j] = scale * grad_out[i, j]


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _grad_x_rows_in_place(
    g, x_hat, inv_std, gamma, grad_beta, grad_gamma, affine, r0, r1, inv_m, lengths, per_sample, per_step
):
    """:func:`_grad_x_rows` with grad_out and grad_x one array ``g`` (rows r0:r1 of g = gamma
    * inv_std * (g - (grad_beta + x_hat * grad_gamma) / m), the affine part alone on rows left out
    of the statistics): the same formulas, so the same bits. One array, not two that alias: LLVM
    sees the in-place update and vectorises it (with two arguments that alias, its overlap check
    failed and the scalar loop ran, 2x slower)."""
    n = g.shape[1]
    for i in range(r0, r1):
        gi, hi = g[i], x_hat[i]
        if row_counts(lengths, i, per_sample, per_step):
            for j in range(n):
                scale = inv_std[j] * gamma[j] if affine else inv_std[j]
                gi[j] = scale * (gi[j] - (grad_beta[j] + hi[j] * grad_gamma[j]) * inv_m)
        else:
            for j in range(n):
                scale = inv_std[j] * gamma[j] if affine else inv_std[j]
                gi[j] = scale * gi[j]


@njit(**JIT_INLINE)
def _grad_x_chunk(
    grad_out, x_hat, inv_std, gamma, grad_beta, grad_gamma, grad_x, affine, r0, r1, inv_m, lengths, per_sample, per_step
):
    """:func:`_grad_x_rows`, or :func:`_grad_x_rows_in_place` when ``grad_out`` is None."""
    if grad_out is None:
        _grad_x_rows_in_place(
            grad_x, x_hat, inv_std, gamma, grad_beta, grad_gamma, affine, r0, r1, inv_m, lengths, per_sample, per_step
        )
    else:
        _grad_x_rows(
            grad_out,
            x_hat,
            inv_std,
            gamma,
            grad_beta,
            grad_gamma,
            grad_x,
            affine,
            r0,
            r1,
            inv_m,
            lengths,
            per_sample,
            per_step,
        )


@njit(**JIT_PARALLEL)
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
    """Gradients of training-mode batch norm from the upstream ``grad_out`` (batch, features).

    Closed form: with g = grad_out * gamma, grad_x = inv_std / N * (N * g - sum(g) - x_hat *
    sum(g * x_hat)) (sums over the batch). Writes grad_x (may be ``grad_out``), grad_beta =
    sum(grad_out) and grad_gamma = sum(grad_out * x_hat) (features,); when not ``affine`` the
    last two still receive those sums (use them as scratch) and ``gamma`` is not read.

    With ``lengths`` (the forward's, :func:`batch_statistics`): the exact gradient of the masked
    forward. N is the valid rows' count and only they get the statistics' terms; the sums stay
    over every row (every output depends on the statistics, gamma and beta), and a padded row's
    grad_x is the affine part alone, gamma * inv_std * grad_out.
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
    batchnorm_grad_x(
        grad_out, x_hat, inv_std, gamma, grad_x, grad_gamma, grad_beta, affine, lengths, per_sample, per_step
    )


@njit(**JIT_PARALLEL)
def batchnorm_grad_x(
    grad_out, x_hat, inv_std, gamma, grad_x, grad_gamma, grad_beta, affine, lengths=None, per_sample=1, per_step=1
):
    """The last pass of :func:`batchnorm_backward`, once grad_beta = sum(grad_out) and grad_gamma =
    sum(grad_out * x_hat) are known: writes grad_x; ``grad_out`` None: grad_x holds it and is
    updated in place (:func:`_grad_x_rows_in_place`). Shared with kernels.batchnorm_act."""
    m, n = grad_x.shape
    chunks = n_chunks(m, REDUCTION_CHUNK_ROWS)
    inv_m = like(1.0 / max(counted_rows(lengths, m, per_sample, per_step), 1), grad_x)
    if m * n >= PARALLEL_MIN_ELEMENTS:
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            r0, r1 = _chunk_rows(c, m)
            _grad_x_chunk(
                grad_out,
                x_hat,
                inv_std,
                gamma,
                grad_beta,
                grad_gamma,
                grad_x,
                affine,
                r0,
                r1,
                inv_m,
                lengths,
                per_sample,
                per_step,
            )
    else:
        _grad_x_chunk(
            grad_out,
            x_hat,
            inv_std,
            gamma,
            grad_beta,
            grad_gamma,
            grad_x,
            affine,
            start_of(m),
            m,
            inv_m,
            lengths,
            per_sample,
            per_step,
        )


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _scale_rows(grad_out, scale, grad_x, r0, r1):
    """grad_x = grad_out * scale (per column) on rows r0:r1."""
    n = grad_out.shape[1]
    for i in range(r0, r1):
        for j in range(n):
            grad_x[i, j] = grad_out[i, j] * scale[j]


@njit(**JIT_PARALLEL)
def batchnorm_backward_eval(
    grad_out, x, gamma, running_mean, running_var, x_hat, grad_x, grad_gamma, grad_beta, partials, eps, affine
):
    """Gradients of evaluation-mode batch norm (:func:`batchnorm_forward_eval`): backward through
    a frozen layer's training step (``BatchNorm1d.frozen``) or an evaluation-mode forward.

    The forward is an affine map per feature, so grad_x = grad_out * gamma / sqrt(running_var +
    eps) (without gamma unless ``affine``; may be ``grad_out``); if ``affine``, x_hat (batch,
    features) scratch gets (x - running_mean) / sqrt(running_var + eps) and grad_beta =
    sum(grad_out), grad_gamma = sum(grad_out * x_hat) over the batch (fixed row chunks combined
    in chunk order, as :func:`batchnorm_backward`); else those three are not written. ``partials``
    is scratch (it ends with the scale of each column in ``partials[0, 0]``).
    """
    m, n = grad_out.shape
    e = like(eps, grad_out)
    chunks = n_chunks(m, REDUCTION_CHUNK_ROWS)
    parallel = m * n >= PARALLEL_MIN_ELEMENTS
    if affine:
        if parallel:
            for c_u in prange(chunks):
                c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
                r0, r1 = _chunk_rows(c, m)
                _eval_rows(x, gamma, gamma, running_mean, running_var, x_hat, e, False, r0, r1)
                _grad_sums_chunk(grad_out, x_hat, partials, c)
        else:
            for c in range(chunks):
                r0, r1 = _chunk_rows(c, m)
                _eval_rows(x, gamma, gamma, running_mean, running_var, x_hat, e, False, r0, r1)
                _grad_sums_chunk(grad_out, x_hat, partials, c)
        sum_partials(partials, 0, grad_beta, chunks)
        sum_partials(partials, 1, grad_gamma, chunks)
    scale = partials[0, 0]  # free once the sums are taken
    for j in range(n):
        scale[j] = running_grad_scale(gamma[j], running_var[j], e, affine)
    if parallel:
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            r0, r1 = _chunk_rows(c, m)
            _scale_rows(grad_out, scale, grad_x, r0, r1)
    else:
        _scale_rows(grad_out, scale, grad_x, start_of(m), m)


__all__ = [
    "batch_statistics",
    "batchnorm_backward",
    "batchnorm_backward_eval",
    "batchnorm_forward_eval",
    "batchnorm_forward_train",
    "batchnorm_forward_train_counted",
    "chan_step",
    "chan_weights",
    "counted_momentum",
    "batchnorm_grad_x",
    "normalize_value",
    "partial_rows",
    "running_grad_scale",
    "running_inv_std",
    "running_update",
    "scaled_moments",
    "sum_partials",
]


@njit(**JIT_INLINE)
def counted_momentum(momentum, track, batches):
    """Counts a batch in ``batches`` (int64 (1,)) when ``track``; returns the momentum to use:
    ``momentum``, or for ``momentum < 0`` (PyTorch's ``None``) 1 / batches counted."""
    if track:
        batches[0] += 1
    return momentum if momentum >= 0 else 1.0 / max(1, batches[0])


@njit(**JIT)
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
    """:func:`batchnorm_forward_train` that also counts batches in ``batches`` (int64 (1,)) when
    tracking; ``momentum < 0`` means a cumulative average (PyTorch's ``momentum=None``).
    ``lengths``, ``per_sample``, ``per_step``: statistics over valid steps' rows, as there."""
    mom = counted_momentum(momentum, track, batches)
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


#: the functions the object layer calls (fastnn.backend.kernels); the CUDA twin module has them too
DEVICE_API = (
    "batchnorm_forward_train_counted",
    "batchnorm_forward_eval",
    "batchnorm_backward",
    "batchnorm_backward_eval",
    "partial_rows",
)
