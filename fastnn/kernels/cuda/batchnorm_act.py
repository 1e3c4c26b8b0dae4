"""CUDA twin of kernels/batchnorm_act.py: BatchNorm1d -> activation -> dropout in training mode,
and in the evaluation mode of a frozen batch norm (the evaluation-mode twins around the same two
kernels).

Forward: the batch norm twin (statistics, running update, x_hat, output into ``out``), then one
kernel, one thread per mask byte (8 columns of a row, as the dropout twin), applies the
activation and the dropout mask in place of ``out``. Backward: one elementwise kernel writes the
gradient at batch norm's output (dropout's mask, the activation's derivative at the recomputed
z = gamma * x_hat + beta), then the batch norm backward twin. Same formulas and masks as the CPU
kernels (the shared scalar rules); arguments and shapes as on the CPU (device arrays; batches,
counter and first_row host int64 (1,) arrays).
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from .._scalar import like
from ..activations import activate, activate_grad
from ..dropout import keep_threshold, keep_unit, mask_bytes, row_key
from ..rng import hash_at, key64
from ._common import BLOCK, blocks_for, typed
from .batchnorm import (
    batchnorm_backward,
    batchnorm_backward_eval,
    batchnorm_forward_eval,
    batchnorm_forward_train_counted,
)


@cuda.jit
def _act_dropout(out, mask, key, threshold, scale, code, alpha, dropout):
    """out = dropout(activation(out)) in place; one thread per (row, mask byte)."""
    m, n = out.shape
    nb = (n + 7) // 8
    zero = like(0.0, out)
    for e in range(cuda.grid(1), m * nb, cuda.gridsize(1)):
        i = e // nb
        b = e - i * nb
        byte = np.uint8(0)
        for j in range(8 * b, min(n, 8 * b + 8)):
            y = activate(code, out[i, j], alpha)
            if dropout:
                # np.uint64(): the simulator returns uint64 as a Python int, which @njit would read as int64
                kept = keep_unit(np.uint64(hash_at(key, i * n + j)), threshold)
                out[i, j] = y * scale if kept else zero
                if kept:
                    byte |= np.uint8(1 << (j - 8 * b))
            else:
                out[i, j] = y
        if dropout:
            mask[i, b] = byte


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
    """out = dropout(f(batchnorm(x))) on the device, as the CPU kernel (batch >= 2)."""
    batchnorm_forward_train_counted(
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
        lengths,
        per_sample,
        per_step,
    )
    _launch_act_dropout(out, mask, counter, first_row, code, alpha, p, seed, stream, dropout)


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
    """out = dropout(f(batchnorm(x))) with batch norm in evaluation mode on the device, as the CPU
    kernel (the evaluation-mode twin into ``out``, then the activation and dropout in place;
    ``inv_std`` is not used)."""
    batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, out, eps, affine)
    _launch_act_dropout(out, mask, counter, first_row, code, alpha, p, seed, stream, dropout)


def _launch_act_dropout(out, mask, counter, first_row, code, alpha, p, seed, stream, dropout):
    """The activation and dropout (mask of step ``counter[0]``, then counted) in place of ``out``."""
    n = out.shape[1]
    key = row_key(np.uint64(key64(seed, stream, int(counter[0]))), int(first_row[0]), n) if dropout else 0
    _act_dropout[blocks_for(out.shape[0] * mask_bytes(n)), BLOCK](
        out,
        mask,
        np.uint64(key),
        np.uint64(keep_threshold(p)),
        typed(1.0 / (1.0 - p), out),
        code,
        typed(alpha, out),
        dropout,
    )
    if dropout:
        counter[0] += 1


@cuda.jit
def _grad_z(grad_out, mask, x_hat, gamma, beta, grad_z, scale, code, alpha, affine, dropout):
    """grad_z = the gradient at batch norm's output, through dropout and the activation."""
    n = grad_out.shape[1]
    zero = like(0.0, grad_out)
    for e in range(cuda.grid(1), grad_out.shape[0] * n, cuda.gridsize(1)):
        i = e // n
        j = e - i * n
        h = x_hat[i, j]
        z = gamma[j] * h + beta[j] if affine else h
        g = grad_out[i, j]
        if dropout and not (mask[i, j >> 3] >> (j & 7)) & 1:
            g = zero
        elif dropout:
            g = g * scale
        grad_z[i, j] = g * activate_grad(code, z, activate(code, z, alpha), alpha)


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
    """Gradients of :func:`batchnorm_act_forward_train` on the device, as the CPU kernel."""
    _launch_grad_z(grad_out, mask, x_hat, gamma, beta, grad_z, affine, code, alpha, p, dropout)
    batchnorm_backward(
        grad_z, x_hat, inv_std, gamma, grad_x, grad_gamma, grad_beta, partials, affine, lengths, per_sample, per_step
    )


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
    """Gradients of :func:`batchnorm_act_forward_eval` on the device, as the CPU kernel: x_hat from
    the running statistics, grad_z through dropout and the activation, then the evaluation-mode
    backward twin (grad_gamma, grad_beta only if ``affine``; ``scale`` is not used)."""
    batchnorm_forward_eval(x, gamma, gamma, running_mean, running_var, x_hat, eps, False)  # x_hat
    _launch_grad_z(grad_out, mask, x_hat, gamma, beta, grad_z, affine, code, alpha, p, dropout)
    batchnorm_backward_eval(
        grad_z, x, gamma, running_mean, running_var, x_hat, grad_x, grad_gamma, grad_beta, partials, eps, affine
    )


def _launch_grad_z(grad_out, mask, x_hat, gamma, beta, grad_z, affine, code, alpha, p, dropout):
    """grad_z = the gradient at batch norm's output, through dropout and the activation."""
    _grad_z[blocks_for(grad_out.size), BLOCK](
        grad_out,
        mask,
        x_hat,
        gamma,
        beta,
        grad_z,
        typed(1.0 / (1.0 - p), grad_out),
        code,
        typed(alpha, grad_out),
        affine,
        dropout,
    )


__all__ = [
    "batchnorm_act_backward",
    "batchnorm_act_backward_eval",
    "batchnorm_act_forward_eval",
    "batchnorm_act_forward_train",
]
