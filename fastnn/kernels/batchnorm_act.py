"""BatchNorm1d -> elementwise activation -> inverted dropout, fused: training mode, and the
evaluation mode a frozen batch norm trains in.

The three layers' kernels (kernels.batchnorm, kernels.activations, kernels.dropout) run one after
the other write batch norm's output, read it and write the activation's, read that and write
dropout's. Here, after batch norm's statistics pass, one sweep per row draws the dropout flags
and mask (dropout's own row code, into a row of uint8 flags) and writes x_hat and the output: two sweeps fewer. Backward:
one sweep of row chunks applies dropout's mask (each row's bits spread to a flag byte a column,
dropout_backward's select into a row of scratch) and the activation's derivative (at z = gamma *
x_hat + beta recomputed, so the activation's output is never stored) into grad_x, with batch
norm's two column sums, then batch norm's grad_x pass over grad_x in place: two sweeps fewer and
no (batch, features) scratch written (grad_z is left alone; mlp-bn-do's fused step 34 us less at
1 thread, the same bits). The results
are the unfused kernels' (the same formulas, statistics chunks, sum orders and dropout hashes),
within float rounding.

A frozen batch norm (evaluation mode in training steps) has the pair
:func:`batchnorm_act_forward_eval` (the running statistics' affine map, activation and dropout in
one sweep, nothing kept but the mask) and :func:`batchnorm_act_backward_eval` (one sweep of row
chunks: x_hat recomputed, dropout mask, activation derivative, the frozen gamma/beta's column sums
and grad_x = grad_z * gamma / sqrt(running_var + eps)): the same row functions as the training
pair and as ``batchnorm.batchnorm_backward_eval``.

Buffers (all one dtype, float32 or float64, C-contiguous, except as noted):
  x, out, x_hat, grad_out, grad_z, grad_x: (batch, features)
  gamma, beta, running_mean, running_var, mean, inv_std, grad_gamma, grad_beta: (features,)
  partials: (2, batchnorm.partial_rows(batch), features) scratch
  mask: uint8 (batch, dropout.mask_bytes(features)); batches, counter, first_row: int64 (1,)
"""

from __future__ import annotations

import numpy as np
from numba import literal_unroll, njit, prange

from .._config import JIT, JIT_INLINE, JIT_PARALLEL, PARALLEL_MIN_ELEMENTS, REDUCTION_CHUNK_ROWS
from ._scalar import like, n_chunks
from .activations import VECTORISED_CODES, activate, activate_grad
from .batchnorm import (
    _chunk_rows,
    _eval_rows,
    _scale_rows,
    batch_statistics,
    batchnorm_grad_x,
    counted_momentum,
    normalize_value,
    running_grad_scale,
    running_inv_std,
    sum_partials,
)
from .dropout import draw_row_mask, keep_threshold, row_flags, row_key, row_spread, spread_row
from .rng import key64


@njit(**JIT_INLINE)
def _pre_activation(h, gamma, beta, j, affine):
    """Batch norm's output z of the normalised value ``h`` in column ``j``."""
    return gamma[j] * h + beta[j] if affine else h


@njit(**JIT_INLINE)
def _keep(x_hat, i, j, h):
    """x_hat[i, j] = h, unless ``x_hat`` is None (a frozen layer's forward keeps no x_hat: the
    test is pruned at compile time)."""
    if x_hat is not None:
        x_hat[i, j] = h


@njit(**JIT_INLINE)
def _forward_rows_of(
    code, x, mean, inv_std, gamma, beta, out, x_hat, mask, key, threshold, scale, alpha, affine, dropout, r0, r1
):
    n = x.shape[1]
    zero = like(0.0, x)
    flags = row_flags(n if dropout else 0)
    for i in range(r0, r1):
        if dropout:  # the row's flags and mask, then the kept units
            draw_row_mask(flags, mask, key, threshold, i * n, i)
            for j in range(n):
                h = normalize_value(x[i, j], mean[j], inv_std[j])
                _keep(x_hat, i, j, h)
                y = activate(code, _pre_activation(h, gamma, beta, j, affine), alpha)
                out[i, j] = y * scale if flags[j] else zero
        else:
            for j in range(n):
                h = normalize_value(x[i, j], mean[j], inv_std[j])
                _keep(x_hat, i, j, h)
                out[i, j] = activate(code, _pre_activation(h, gamma, beta, j, affine), alpha)


@njit(**JIT)  # not inlined: literal_unroll inside a prange body would serialise it
def _forward_rows(
    code, x, mean, inv_std, gamma, beta, out, x_hat, mask, key, threshold, scale, alpha, affine, dropout, r0, r1
):
    """Rows r0:r1: x_hat (unless None), and out = dropout(activation(gamma * x_hat + beta)), x_hat
    = (x - mean) * inv_std."""
    vectorised = False
    for c in literal_unroll(VECTORISED_CODES):  # the code a constant in each copy: it vectorises
        if code == c:
            vectorised = True
            _forward_rows_of(
                c,
                x,
                mean,
                inv_std,
                gamma,
                beta,
                out,
                x_hat,
                mask,
                key,
                threshold,
                scale,
                alpha,
                affine,
                dropout,
                r0,
                r1,
            )
    if not vectorised:
        _forward_rows_of(
            code, x, mean, inv_std, gamma, beta, out, x_hat, mask, key, threshold, scale, alpha, affine, dropout, r0, r1
        )


@njit(**JIT_PARALLEL)
def _forward_sweep(
    code, x, mean, inv_std, gamma, beta, out, x_hat, mask, key, threshold, scale, alpha, affine, dropout
):
    m, n = x.shape
    if m * n >= PARALLEL_MIN_ELEMENTS:
        for c_u in prange(n_chunks(m, REDUCTION_CHUNK_ROWS)):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            r0 = c * REDUCTION_CHUNK_ROWS
            r1 = min(m, r0 + REDUCTION_CHUNK_ROWS)
            _forward_rows(
                code,
                x,
                mean,
                inv_std,
                gamma,
                beta,
                out,
                x_hat,
                mask,
                key,
                threshold,
                scale,
                alpha,
                affine,
                dropout,
                r0,
                r1,
            )
    else:
        _forward_rows(
            code, x, mean, inv_std, gamma, beta, out, x_hat, mask, key, threshold, scale, alpha, affine, dropout, 0, m
        )


@njit(**JIT)
def batchnorm_act_forward_train(
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
    mask,
    batches,
    counter,
    first_row,
    eps,
    momentum,
    affine,
    track,
    code,
    alpha,
    p,
    seed,
    stream,
    dropout,
    lengths=None,
    per_sample=1,
    per_step=1,
):
    """out = dropout(f(batchnorm(x))) in training mode; shapes in the module note (batch >= 2).

    Batch norm as ``batchnorm.batchnorm_forward_train_counted`` (eps, momentum < 0 for a
    cumulative average, affine, track; counts batches; writes x_hat, mean, inv_std, updates the
    running statistics); ``code``/``alpha``: an elementwise activation of kernels.activations;
    if ``dropout``: the mask of ``dropout.dropout_forward_counted_from`` with probability ``p``
    at step ``counter[0]`` for rows numbered from ``first_row[0]``, then ``counter[0] += 1``
    (else ``mask``, ``counter``, ``first_row``, ``p``, ``seed`` and ``stream`` are not used).
    ``lengths``, ``per_sample``, ``per_step``: statistics over the rows of valid sequence steps
    (``batchnorm.batch_statistics``).
    """
    mom = counted_momentum(momentum, track, batches)
    batch_statistics(
        x, running_mean, running_var, mean, inv_std, partials, eps, mom, track, lengths, per_sample, per_step
    )
    _act_dropout_sweep(
        x,
        gamma,
        beta,
        mean,
        inv_std,
        out,
        x_hat,
        mask,
        counter,
        first_row,
        affine,
        code,
        alpha,
        p,
        seed,
        stream,
        dropout,
    )


@njit(**JIT)
def batchnorm_act_forward_eval(
    x,
    gamma,
    beta,
    running_mean,
    running_var,
    out,
    inv_std,
    mask,
    counter,
    first_row,
    eps,
    affine,
    code,
    alpha,
    p,
    seed,
    stream,
    dropout,
):
    """out = dropout(f(batchnorm(x))) with batch norm in evaluation mode: a frozen layer's training
    step (``BatchNorm1d.frozen``), the layers' ``batchnorm.batchnorm_forward_eval`` ->
    activation -> dropout in one sweep. The running statistics normalise and stay; ``inv_std``
    (features,) scratch gets 1 / sqrt(running_var + eps); no x_hat is kept (the backward,
    :func:`batchnorm_act_backward_eval`, recomputes it from ``x``). Other arguments as
    :func:`batchnorm_act_forward_train`'s.
    """
    e = like(eps, x)
    for j in range(x.shape[1]):
        inv_std[j] = running_inv_std(running_var[j], e)
    _act_dropout_sweep(
        x,
        gamma,
        beta,
        running_mean,
        inv_std,
        out,
        None,
        mask,
        counter,
        first_row,
        affine,
        code,
        alpha,
        p,
        seed,
        stream,
        dropout,
    )


@njit(**JIT_INLINE)
def _act_dropout_sweep(
    x, gamma, beta, mean, inv_std, out, x_hat, mask, counter, first_row, affine, code, alpha, p, seed, stream, dropout
):
    """The forward's sweep once the statistics are known: the dropout key of step ``counter[0]``,
    x_hat (unless None) and out per row, then ``counter[0] += 1`` if ``dropout``."""
    key = row_key(key64(seed, stream, counter[0]), first_row[0], x.shape[1]) if dropout else np.uint64(0)
    scale = like(1.0 / (1.0 - p), x)
    _forward_sweep(
        code,
        x,
        mean,
        inv_std,
        gamma,
        beta,
        out,
        x_hat,
        mask,
        key,
        keep_threshold(p),
        scale,
        like(alpha, x),
        affine,
        dropout,
    )
    if dropout:
        counter[0] += 1


@njit(**JIT_INLINE)
def _act_grad_row(code, gy, hi, gamma, beta, gz, alpha, affine):
    """One row: gz = gy * f'(z), z = gamma * hi + beta (hi if not ``affine``)."""
    n = gz.shape[0]
    if affine:  # the branch outside the loops: each loop vectorises
        for j in range(n):
            z = gamma[j] * hi[j] + beta[j]
            gz[j] = gy[j] * activate_grad(code, z, activate(code, z, alpha), alpha)
    else:
        for j in range(n):
            gz[j] = gy[j] * activate_grad(code, hi[j], activate(code, hi[j], alpha), alpha)


@njit(**JIT_INLINE)
def _grad_sums_of(
    code, grad_out, mask, drop_scale, dropout, x_hat, gamma, beta, grad_z, partials, chunk, alpha, affine
):
    """Per row: grad_y = dropout's gradient of ``grad_out`` (the row's mask spread to a flag byte a
    column, ``grad_out[i] * drop_scale`` where kept, else 0: dropout_backward's select, into a row
    of scratch) if ``dropout``, else ``grad_out[i]``; grad_z[i] = grad_y * f'(z); then the column
    sums of grad_z and grad_z * x_hat into partials[:, chunk] (batch norm's own sum order). Three
    loops over a row in L1, each vectorised (grad_y in a scratch row of its own: written into
    grad_z in place, the loop after would not vectorise)."""
    r0 = chunk * REDUCTION_CHUNK_ROWS
    r1 = min(grad_out.shape[0], r0 + REDUCTION_CHUNK_ROWS)
    n = grad_out.shape[1]
    zero = like(0.0, grad_out)
    s = partials[0, chunk]
    sx = partials[1, chunk]
    for j in range(n):
        s[j] = 0
        sx[j] = 0
    spread = row_spread(n if dropout else 0)
    flags = spread.view(np.uint8)
    gy_row = np.empty(n if dropout else 0, grad_out.dtype)
    for i in range(r0, r1):
        gz, hi, go = grad_z[i], x_hat[i], grad_out[i]
        if dropout:
            spread_row(mask, i, spread)
            for j in range(n):
                gy_row[j] = go[j] * drop_scale if flags[j] else zero
            _act_grad_row(code, gy_row, hi, gamma, beta, gz, alpha, affine)
        else:
            _act_grad_row(code, go, hi, gamma, beta, gz, alpha, affine)
        for j in range(n):
            s[j] += gz[j]
            sx[j] += gz[j] * hi[j]


@njit(**JIT)  # not inlined: literal_unroll inside a prange body would serialise it
def _grad_sums(code, grad_out, mask, drop_scale, dropout, x_hat, gamma, beta, grad_z, partials, chunk, alpha, affine):
    """Chunk ``chunk``'s rows of :func:`_grad_sums_of`, with a vectorised copy per common code."""
    vectorised = False
    for c in literal_unroll(VECTORISED_CODES):
        if code == c:
            vectorised = True
            _grad_sums_of(
                c, grad_out, mask, drop_scale, dropout, x_hat, gamma, beta, grad_z, partials, chunk, alpha, affine
            )
    if not vectorised:
        _grad_sums_of(
            code, grad_out, mask, drop_scale, dropout, x_hat, gamma, beta, grad_z, partials, chunk, alpha, affine
        )


@njit(**JIT_PARALLEL)
def batchnorm_act_backward(
    grad_out,
    mask,
    x_hat,
    inv_std,
    gamma,
    beta,
    grad_z,
    grad_x,
    grad_gamma,
    grad_beta,
    partials,
    affine,
    code,
    alpha,
    p,
    dropout,
    lengths=None,
    per_sample=1,
    per_step=1,
):
    """Gradients of :func:`batchnorm_act_forward_train` from the upstream ``grad_out``.

    Writes grad_x, grad_beta = sum(grad_z) and grad_gamma = sum(grad_z * x_hat) (features,), as
    ``batchnorm.batchnorm_backward`` does given grad_z, the gradient at batch norm's output (held
    in grad_x until the last pass overwrites it in place; the ``grad_z`` buffer is not used); ``mask`` and ``p`` are the forward's
    (read only if ``dropout``); ``lengths``, ``per_sample``, ``per_step`` too. ``grad_out`` is
    only read.
    """
    m, n = grad_out.shape
    chunks = n_chunks(m, REDUCTION_CHUNK_ROWS)
    a = like(alpha, grad_out)
    ds = like(1.0 / (1.0 - p), grad_out)  # dropout_backward's scale
    if m * n >= PARALLEL_MIN_ELEMENTS:
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            _grad_sums(code, grad_out, mask, ds, dropout, x_hat, gamma, beta, grad_x, partials, c, a, affine)
    else:
        for c in range(chunks):
            _grad_sums(code, grad_out, mask, ds, dropout, x_hat, gamma, beta, grad_x, partials, c, a, affine)
    sum_partials(partials, 0, grad_beta, chunks)
    sum_partials(partials, 1, grad_gamma, chunks)
    batchnorm_grad_x(  # in place: grad_x holds grad_z
        None, x_hat, inv_std, gamma, grad_x, grad_gamma, grad_beta, affine, lengths, per_sample, per_step
    )


@njit(**JIT)  # not inlined: literal_unroll inside a prange body would serialise it
def _eval_grad_chunk(
    code,
    grad_out,
    mask,
    drop_scale,
    dropout,
    x,
    gamma,
    beta,
    running_mean,
    running_var,
    x_hat,
    scale,
    grad_z,
    grad_x,
    partials,
    chunk,
    eps,
    alpha,
    affine,
):
    """Chunk ``chunk`` of :func:`batchnorm_act_backward_eval`: x_hat rows (as the evaluation-mode
    backward writes them), grad_z and its column sums (:func:`_grad_sums`), grad_x = grad_z * scale."""
    r0, r1 = _chunk_rows(chunk, x.shape[0])
    _eval_rows(x, gamma, beta, running_mean, running_var, x_hat, eps, False, r0, r1)
    _grad_sums(code, grad_out, mask, drop_scale, dropout, x_hat, gamma, beta, grad_z, partials, chunk, alpha, affine)
    _scale_rows(grad_z, scale, grad_x, r0, r1)


@njit(**JIT_PARALLEL)
def batchnorm_act_backward_eval(
    grad_out,
    mask,
    x,
    gamma,
    beta,
    running_mean,
    running_var,
    x_hat,
    scale,
    grad_z,
    grad_x,
    grad_gamma,
    grad_beta,
    partials,
    eps,
    affine,
    code,
    alpha,
    p,
    dropout,
):
    """Gradients of :func:`batchnorm_act_forward_eval` from the upstream ``grad_out``, as the
    layers' dropout and activation backward followed by ``batchnorm.batchnorm_backward_eval``.

    One sweep of row chunks: x_hat = (x - running_mean) / sqrt(running_var + eps) ((batch,
    features) scratch), grad_z (the gradient at batch norm's output, scratch) through the dropout
    mask and the activation's derivative at z = gamma * x_hat + beta, its column sums, and grad_x
    = grad_z * gamma / sqrt(running_var + eps) (without gamma unless ``affine``; ``scale``
    (features,) scratch gets that factor). If ``affine``: grad_beta = sum(grad_z) and grad_gamma
    = sum(grad_z * x_hat), the frozen parameters' gradients the unfused backward writes too.
    """
    m, n = grad_out.shape
    chunks = n_chunks(m, REDUCTION_CHUNK_ROWS)
    a = like(alpha, grad_out)
    e = like(eps, grad_out)
    for j in range(n):
        scale[j] = running_grad_scale(gamma[j], running_var[j], e, affine)
    ds = like(1.0 / (1.0 - p), grad_out)  # dropout_backward's scale
    if m * n >= PARALLEL_MIN_ELEMENTS:
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            _eval_grad_chunk(
                code,
                grad_out,
                mask,
                ds,
                dropout,
                x,
                gamma,
                beta,
                running_mean,
                running_var,
                x_hat,
                scale,
                grad_z,
                grad_x,
                partials,
                c,
                e,
                a,
                affine,
            )
    else:
        for c in range(chunks):
            _eval_grad_chunk(
                code,
                grad_out,
                mask,
                ds,
                dropout,
                x,
                gamma,
                beta,
                running_mean,
                running_var,
                x_hat,
                scale,
                grad_z,
                grad_x,
                partials,
                c,
                e,
                a,
                affine,
            )
    if affine:
        sum_partials(partials, 0, grad_beta, chunks)
        sum_partials(partials, 1, grad_gamma, chunks)


__all__ = [
    "batchnorm_act_backward",
    "batchnorm_act_backward_eval",
    "batchnorm_act_forward_eval",
    "batchnorm_act_forward_train",
]
