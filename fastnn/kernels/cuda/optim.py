"""CUDA twins of kernels/optim.py: each optimizer is one fused grid-stride kernel over the flat buffers.

Every element calls the CPU module's scalar rule (``sgd_rule``, ``adam_rule`` ...), so the two
backends share the update formulas. Weight decay applies to indices ``[0, n_decay)`` only;
``grad_scale`` multiplies every gradient (global-norm clipping). Hyper-parameters are turned
into the parameters' dtype on the host exactly as the CPU kernels do. Buffers a configuration
does not use may be empty device arrays; they are never touched.

Global-norm clipping is a two-stage reduction: each block sums its squares in float64 into
``partials[block]``, then one block sums the partials in a fixed order (no atomics).
"""

from __future__ import annotations

import math

import numba
from numba import cuda

from ..optim import adagrad_rule, adam_rule, lion_rule, rmsprop_rule, sgd_rule
from ._common import BLOCK, block_sum, blocks_for, reduce_partials, typed


def norm_partials_size(n: int) -> int:
    """Length of the float64 ``partials`` scratch :func:`grad_global_norm` needs for ``n`` elements."""
    return blocks_for(n)


@cuda.jit
def _sgd(params, grads, buf, n_decay, lr, momentum, omd, wd, zero, nesterov, first_step, gs):
    use_buf = momentum != 0
    for i in range(cuda.grid(1), params.shape[0], cuda.gridsize(1)):
        b = buf[i] if use_buf else lr
        p, b = sgd_rule(
            params[i], grads[i] * gs, b, lr, momentum, omd, wd if i < n_decay else zero, nesterov, first_step
        )
        params[i] = p
        if use_buf:
            buf[i] = b


def sgd_update(
    params, grads, velocity, lr, momentum, dampening, weight_decay, n_decay, nesterov, grad_scale, first_step
):
    """One SGD step in place (torch.optim.SGD); velocity (n,) or empty without momentum."""
    _sgd[blocks_for(params.size), BLOCK](
        params,
        grads,
        velocity,
        n_decay,
        typed(lr, params),
        typed(momentum, params),
        typed(1.0 - dampening, params),
        typed(weight_decay, params),
        typed(0.0, params),
        nesterov,
        first_step,
        typed(grad_scale, params),
    )


@cuda.jit
def _rmsprop(params, grads, sq, ga, buf, n_decay, lr, alpha, oma, eps, momentum, wd, zero, centered, gs):
    use_buf = momentum > 0
    for i in range(cuda.grid(1), params.shape[0], cuda.gridsize(1)):
        p, s, a, b = rmsprop_rule(
            params[i],
            grads[i] * gs,
            sq[i],
            ga[i] if centered else zero,
            buf[i] if use_buf else zero,
            lr,
            alpha,
            oma,
            eps,
            momentum,
            wd if i < n_decay else zero,
            centered,
        )
        params[i] = p
        sq[i] = s
        if centered:
            ga[i] = a
        if use_buf:
            buf[i] = b


def rmsprop_update(
    params,
    grads,
    square_avg,
    grad_avg,
    momentum_buffer,
    lr,
    alpha,
    eps,
    weight_decay,
    n_decay,
    momentum,
    centered,
    grad_scale,
):
    """One RMSprop step in place (torch.optim.RMSprop); grad_avg used if ``centered``, the buffer if momentum."""
    _rmsprop[blocks_for(params.size), BLOCK](
        params,
        grads,
        square_avg,
        grad_avg,
        momentum_buffer,
        n_decay,
        typed(lr, params),
        typed(alpha, params),
        typed(1.0 - alpha, params),
        typed(eps, params),
        typed(momentum, params),
        typed(weight_decay, params),
        typed(0.0, params),
        centered,
        typed(grad_scale, params),
    )


@cuda.jit
def _adagrad(params, grads, state_sum, n_decay, clr, eps, wd, zero, gs):
    for i in range(cuda.grid(1), params.shape[0], cuda.gridsize(1)):
        params[i], state_sum[i] = adagrad_rule(
            params[i], grads[i] * gs, state_sum[i], clr, eps, wd if i < n_decay else zero
        )


def adagrad_update(params, grads, state_sum, lr, lr_decay, eps, weight_decay, n_decay, step, grad_scale):
    """One Adagrad step in place (torch.optim.Adagrad); ``step`` is this update's 1-based number."""
    _adagrad[blocks_for(params.size), BLOCK](
        params,
        grads,
        state_sum,
        n_decay,
        typed(lr / (1.0 + (step - 1) * lr_decay), params),
        typed(eps, params),
        typed(weight_decay, params),
        typed(0.0, params),
        typed(grad_scale, params),
    )


@cuda.jit
def _adam(
    params,
    grads,
    m,
    v,
    vmax,
    n_decay,
    step_size,
    omb1,
    beta2,
    omb2,
    bc2_sqrt,
    eps,
    coupled_wd,
    decay,
    zero,
    one,
    amsgrad,
    gs,
):
    for i in range(cuda.grid(1), params.shape[0], cuda.gridsize(1)):
        decayed = i < n_decay
        p, mi, vi, vm = adam_rule(
            params[i],
            grads[i] * gs,
            m[i],
            v[i],
            vmax[i] if amsgrad else zero,
            step_size,
            omb1,
            beta2,
            omb2,
            bc2_sqrt,
            eps,
            coupled_wd if decayed else zero,
            decay if decayed else one,
            amsgrad,
        )
        params[i] = p
        m[i] = mi
        v[i] = vi
        if amsgrad:
            vmax[i] = vm


def adam_update(
    params, grads, m, v, vmax, lr, beta1, beta2, eps, weight_decay, n_decay, decoupled, amsgrad, step, grad_scale
):
    """One Adam (``decoupled=False``) or AdamW step in place, as torch.optim; vmax used if ``amsgrad``."""
    _adam[blocks_for(params.size), BLOCK](
        params,
        grads,
        m,
        v,
        vmax,
        n_decay,
        typed(lr / (1.0 - beta1**step), params),
        typed(1.0 - beta1, params),
        typed(beta2, params),
        typed(1.0 - beta2, params),
        typed(math.sqrt(1.0 - beta2**step), params),
        typed(eps, params),
        typed(0.0 if decoupled else weight_decay, params),
        typed(1.0 - lr * weight_decay if decoupled else 1.0, params),
        typed(0.0, params),
        typed(1.0, params),
        amsgrad,
        typed(grad_scale, params),
    )


@cuda.jit
def _lion(params, grads, m, n_decay, lr, beta1, omb1, beta2, omb2, decay, one, gs):
    for i in range(cuda.grid(1), params.shape[0], cuda.gridsize(1)):
        params[i], m[i] = lion_rule(
            params[i], grads[i] * gs, m[i], lr, beta1, omb1, beta2, omb2, decay if i < n_decay else one
        )


def lion_update(params, grads, m, lr, beta1, beta2, weight_decay, n_decay, grad_scale):
    """One Lion step in place (decoupled weight decay); params, grads, m (n,)."""
    _lion[blocks_for(params.size), BLOCK](
        params,
        grads,
        m,
        n_decay,
        typed(lr, params),
        typed(beta1, params),
        typed(1.0 - beta1, params),
        typed(beta2, params),
        typed(1.0 - beta2, params),
        typed(1.0 - lr * weight_decay, params),
        typed(1.0, params),
        typed(grad_scale, params),
    )


@cuda.jit
def _sum_squares(grads, partials):
    buf = cuda.shared.array(BLOCK, numba.float64)
    tid = cuda.threadIdx.x
    acc = 0.0
    for i in range(cuda.grid(1), grads.shape[0], cuda.gridsize(1)):
        g = numba.float64(grads[i])
        acc += g * g
    buf[tid] = acc
    total = block_sum(buf, tid)
    if tid == 0:
        partials[cuda.blockIdx.x] = total


def grad_global_norm(grads, partials, *, sync=True, into=None):
    """Euclidean norm of ``grads`` (n,) as a float (float64 accumulation, two-stage reduction).

    ``partials``: float64 device scratch of at least norm_partials_size(n). With ``sync=False``
    returns None and leaves the norm in ``partials[0]`` on the device; with ``into=(scalars,
    slot)`` returns None and the second stage is finished later with a step's other scalars
    (:class:`~fastnn.kernels.cuda._common.StepScalars`).
    """
    blocks = blocks_for(grads.size)
    _sum_squares[blocks, BLOCK](grads, partials)
    return reduce_partials(partials, blocks, root=True, sync=sync, into=into)


@cuda.jit
def _clip(grads, low, high):
    for i in range(cuda.grid(1), grads.shape[0], cuda.gridsize(1)):
        grads[i] = min(max(grads[i], low), high)


def clip_by_value(grads, clip_value):
    """grads = clip(grads, -clip_value, clip_value) in place."""
    high = typed(clip_value, grads)
    _clip[blocks_for(grads.size), BLOCK](grads, -high, high)


__all__ = [
    "adagrad_update",
    "adam_update",
    "clip_by_value",
    "grad_global_norm",
    "lion_update",
    "norm_partials_size",
    "rmsprop_update",
    "sgd_update",
]
