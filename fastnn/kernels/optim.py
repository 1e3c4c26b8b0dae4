"""Optimizer updates over flat parameter buffers: one fused pass per step.

All parameters of a model live in one contiguous 1-D buffer ``params`` (float32 or float64),
their gradients in ``grads`` and every optimizer state (momentum, second moment ...) in more
buffers of the same size and dtype. Indices ``[0, n_decay)`` get weight decay, the tail
``[n_decay, size)`` (biases, norm parameters) does not.

Each optimizer's per-element rule is written once as a small scalar function (``*_rule``, reused
by the CUDA twins). The kernel sweeps fixed chunks of :data:`OPTIM_CHUNK` elements, serially
below ``PARALLEL_MIN_ELEMENTS`` and with ``prange`` above; each chunk is split at ``n_decay`` so
the inner loops carry no per-element weight-decay test. ``grad_scale`` multiplies every gradient
element (the global-norm clipping scale; 1 when not clipping), and weight decay (coupled L2 or
decoupled) is applied in the same pass. The semantics are those of ``torch.optim`` (SGD, RMSprop,
Adagrad, Adam/AdamW) and of the Lion paper (Chen et al. 2023).

Buffers a configuration does not use (SGD without momentum, RMSprop's ``grad_avg`` when not
centered ...) may be empty arrays of the parameters' dtype: they are never touched.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .._config import JIT_UPDATE, JIT_UPDATE_INLINE, JIT_UPDATE_PARALLEL, PARALLEL_MIN_ELEMENTS
from ._scalar import like, n_chunks

#: Elements per fixed chunk of every sweep (updates and the gradient-norm partials).
OPTIM_CHUNK = 1 << 14


def norm_partials_size(n: int) -> int:
    """Length of the float64 ``partials`` scratch that :func:`grad_global_norm` needs for ``n`` elements."""
    return max(1, (n + OPTIM_CHUNK - 1) // OPTIM_CHUNK)


@njit(**JIT_UPDATE_INLINE)
def _chunk_bounds(c, n, n_decay):
    """Chunk ``c`` as ``[i0, i1)`` decayed and ``[i1, i2)`` not decayed."""
    i0 = c * OPTIM_CHUNK
    i2 = min(i0 + OPTIM_CHUNK, n)
    i1 = min(max(n_decay, i0), i2)
    return i0, i1, i2


@njit(**JIT_UPDATE_INLINE)
def sign(u):
    """np.sign for one scalar of u's dtype (NaN stays NaN); usable on CUDA, which lacks the np.sign ufunc."""
    zero = like(0.0, u)
    if u > zero:
        return like(1.0, u)
    if u < zero:
        return like(-1.0, u)
    return u


# ---------------------------------------------------------------------------------------------
# Scalar rules: new parameter (and new states) from one element. All scalars have the dtype of p.
# ---------------------------------------------------------------------------------------------


@njit(**JIT_UPDATE_INLINE)
def sgd_rule(p, g, buf, lr, momentum, one_minus_dampening, wd, nesterov, first_step):
    """SGD with L2 weight decay and (Nesterov) momentum; returns (p, buf)."""
    g = g + wd * p
    if momentum != 0:
        buf = g if first_step else momentum * buf + one_minus_dampening * g
        g = g + momentum * buf if nesterov else buf
    return p - lr * g, buf


@njit(**JIT_UPDATE_INLINE)
def rmsprop_rule(p, g, sq, ga, buf, lr, alpha, one_minus_alpha, eps, momentum, wd, centered):
    """RMSprop (optionally centered, with momentum); returns (p, square_avg, grad_avg, buf)."""
    g = g + wd * p
    sq = alpha * sq + one_minus_alpha * g * g
    if centered:
        ga = ga + one_minus_alpha * (g - ga)
        avg = math.sqrt(sq - ga * ga) + eps
    else:
        avg = math.sqrt(sq) + eps
    if momentum > 0:
        buf = momentum * buf + g / avg
        return p - lr * buf, sq, ga, buf
    return p - lr * g / avg, sq, ga, buf


@njit(**JIT_UPDATE_INLINE)
def adagrad_rule(p, g, s, clr, eps, wd):
    """Adagrad with the decayed step ``clr``; returns (p, state_sum)."""
    g = g + wd * p
    s = s + g * g
    return p - clr * g / (math.sqrt(s) + eps), s


@njit(**JIT_UPDATE_INLINE)
def adam_rule(
    p, g, m, v, vmax, step_size, one_minus_beta1, beta2, one_minus_beta2, bc2_sqrt, eps, coupled_wd, decay, amsgrad
):
    """Adam/AdamW: ``coupled_wd`` adds L2 to the gradient, ``decay`` (1 - lr * wd) shrinks p first.

    Returns (p, m, v, vmax); ``step_size`` is lr / (1 - beta1**t), ``bc2_sqrt`` sqrt(1 - beta2**t),
    or None where that is exactly 1 in the working dtype: the division by it is then left out
    (``x / 1`` is ``x``, bit for bit; Numba prunes the branch on a None argument).
    """
    g = g + coupled_wd * p
    p = p * decay
    m = m + one_minus_beta1 * (g - m)
    v = beta2 * v + one_minus_beta2 * g * g
    if amsgrad:
        vmax = max(vmax, v)
        root = math.sqrt(vmax)
    else:
        root = math.sqrt(v)
    if bc2_sqrt is not None:
        root = root / bc2_sqrt
    denom = root + eps
    return p - step_size * m / denom, m, v, vmax


@njit(**JIT_UPDATE_INLINE)
def lion_rule(p, g, m, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, decay):
    """Lion: p -= lr * sign(beta1 m + (1 - beta1) g) after decoupled decay; returns (p, m)."""
    u = beta1 * m + one_minus_beta1 * g
    p = p * decay - lr * sign(u)
    return p, beta2 * m + one_minus_beta2 * g


# ---------------------------------------------------------------------------------------------
# Loops over one slice of the buffers with a fixed weight decay (slices start at index 0, so
# no negative-index wraparound blocks vectorisation: range(i0, i1) loops stayed scalar).
# ---------------------------------------------------------------------------------------------


@njit(**JIT_UPDATE)  # not inlined: one compiled body for the serial and parallel paths
def _sgd_range(params, grads, buf, lr, momentum, omd, wd, nesterov, first_step, gs):
    if momentum != 0:
        for i in range(params.size):
            params[i], buf[i] = sgd_rule(params[i], grads[i] * gs, buf[i], lr, momentum, omd, wd, nesterov, first_step)
    else:
        for i in range(params.size):
            params[i] = sgd_rule(params[i], grads[i] * gs, lr, lr, momentum, omd, wd, nesterov, first_step)[0]


@njit(**JIT_UPDATE_INLINE)
def _rmsprop_loop(params, grads, sq, ga, buf, lr, alpha, oma, eps, momentum, wd, centered, use_buf, gs):
    zero = like(0.0, params)
    for i in range(params.size):
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
            wd,
            centered,
        )
        params[i] = p
        sq[i] = s
        if centered:
            ga[i] = a
        if use_buf:
            buf[i] = b


@njit(**JIT_UPDATE)  # not inlined: one compiled body for the serial and parallel paths
def _rmsprop_range(params, grads, sq, ga, buf, lr, alpha, oma, eps, momentum, wd, centered, gs):
    # constant flags per call: after inlining each loop carries no branch (and vectorises)
    if centered:
        if momentum > 0:
            _rmsprop_loop(params, grads, sq, ga, buf, lr, alpha, oma, eps, momentum, wd, True, True, gs)
        else:
            _rmsprop_loop(params, grads, sq, ga, buf, lr, alpha, oma, eps, momentum, wd, True, False, gs)
    elif momentum > 0:
        _rmsprop_loop(params, grads, sq, ga, buf, lr, alpha, oma, eps, momentum, wd, False, True, gs)
    else:
        _rmsprop_loop(params, grads, sq, ga, buf, lr, alpha, oma, eps, momentum, wd, False, False, gs)


@njit(**JIT_UPDATE)  # not inlined: one compiled body for the serial and parallel paths
def _adagrad_range(params, grads, state_sum, clr, eps, wd, gs):
    for i in range(params.size):
        params[i], state_sum[i] = adagrad_rule(params[i], grads[i] * gs, state_sum[i], clr, eps, wd)


@njit(**JIT_UPDATE)  # not inlined: one compiled body for the serial and parallel paths
def _adam_range(params, grads, m, v, vmax, step_size, omb1, beta2, omb2, bc2_sqrt, eps, coupled_wd, decay, amsgrad, gs):
    if amsgrad:
        for i in range(params.size):
            params[i], m[i], v[i], vmax[i] = adam_rule(
                params[i],
                grads[i] * gs,
                m[i],
                v[i],
                vmax[i],
                step_size,
                omb1,
                beta2,
                omb2,
                bc2_sqrt,
                eps,
                coupled_wd,
                decay,
                amsgrad,
            )
    else:
        for i in range(params.size):
            params[i], m[i], v[i], _ = adam_rule(
                params[i],
                grads[i] * gs,
                m[i],
                v[i],
                v[i],
                step_size,
                omb1,
                beta2,
                omb2,
                bc2_sqrt,
                eps,
                coupled_wd,
                decay,
                amsgrad,
            )


@njit(**JIT_UPDATE)  # not inlined: one compiled body for the serial and parallel paths
def _lion_range(params, grads, m, lr, beta1, omb1, beta2, omb2, decay, gs):
    for i in range(params.size):
        params[i], m[i] = lion_rule(params[i], grads[i] * gs, m[i], lr, beta1, omb1, beta2, omb2, decay)


# ---------------------------------------------------------------------------------------------
# Chunk bodies (decayed part, then the rest) and the kernels.
# ---------------------------------------------------------------------------------------------


@njit(**JIT_UPDATE)  # not inlined: one compiled body for the serial and parallel paths
def _sgd_chunk(params, grads, buf, c, n_decay, lr, momentum, omd, wd, nesterov, first_step, gs):
    i0, i1, i2 = _chunk_bounds(c, params.size, n_decay)
    _sgd_range(params[i0:i1], grads[i0:i1], buf[i0:i1], lr, momentum, omd, wd, nesterov, first_step, gs)
    _sgd_range(params[i1:i2], grads[i1:i2], buf[i1:i2], lr, momentum, omd, like(0.0, wd), nesterov, first_step, gs)


@njit(**JIT_UPDATE_PARALLEL)
def sgd_update(
    params, grads, velocity, lr, momentum, dampening, weight_decay, n_decay, nesterov, grad_scale, first_step
):
    """One SGD step in place (torch.optim.SGD): params (n,), grads (n,), velocity (n,) or empty.

    ``first_step`` initialises the momentum buffer to the (decayed) gradient, as torch does.
    """
    lr_, mom = like(lr, params), like(momentum, params)
    omd, wd, gs = like(1.0 - dampening, params), like(weight_decay, params), like(grad_scale, params)
    chunks = n_chunks(params.size, OPTIM_CHUNK)
    if params.size < PARALLEL_MIN_ELEMENTS:
        for c in range(chunks):
            _sgd_chunk(params, grads, velocity, c, n_decay, lr_, mom, omd, wd, nesterov, first_step, gs)
    else:
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            _sgd_chunk(params, grads, velocity, c, n_decay, lr_, mom, omd, wd, nesterov, first_step, gs)


@njit(**JIT_UPDATE)  # not inlined: one compiled body for the serial and parallel paths
def _rmsprop_chunk(params, grads, sq, ga, buf, c, n_decay, lr, alpha, oma, eps, momentum, wd, centered, gs):
    i0, i1, i2 = _chunk_bounds(c, params.size, n_decay)
    _rmsprop_range(
        params[i0:i1], grads[i0:i1], sq[i0:i1], ga[i0:i1], buf[i0:i1], lr, alpha, oma, eps, momentum, wd, centered, gs
    )
    _rmsprop_range(
        params[i1:i2],
        grads[i1:i2],
        sq[i1:i2],
        ga[i1:i2],
        buf[i1:i2],
        lr,
        alpha,
        oma,
        eps,
        momentum,
        like(0.0, wd),
        centered,
        gs,
    )


@njit(**JIT_UPDATE_PARALLEL)
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
    """One RMSprop step in place (torch.optim.RMSprop); all buffers (n,).

    ``grad_avg`` is used only if ``centered``, ``momentum_buffer`` only if ``momentum > 0``.
    """
    lr_, a, oma = like(lr, params), like(alpha, params), like(1.0 - alpha, params)
    eps_, mom = like(eps, params), like(momentum, params)
    wd, gs = like(weight_decay, params), like(grad_scale, params)
    chunks = n_chunks(params.size, OPTIM_CHUNK)
    if params.size < PARALLEL_MIN_ELEMENTS:
        for c in range(chunks):
            _rmsprop_chunk(
                params,
                grads,
                square_avg,
                grad_avg,
                momentum_buffer,
                c,
                n_decay,
                lr_,
                a,
                oma,
                eps_,
                mom,
                wd,
                centered,
                gs,
            )
    else:
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            _rmsprop_chunk(
                params,
                grads,
                square_avg,
                grad_avg,
                momentum_buffer,
                c,
                n_decay,
                lr_,
                a,
                oma,
                eps_,
                mom,
                wd,
                centered,
                gs,
            )


@njit(**JIT_UPDATE)  # not inlined: one compiled body for the serial and parallel paths
def _adagrad_chunk(params, grads, state_sum, c, n_decay, clr, eps, wd, gs):
    i0, i1, i2 = _chunk_bounds(c, params.size, n_decay)
    _adagrad_range(params[i0:i1], grads[i0:i1], state_sum[i0:i1], clr, eps, wd, gs)
    _adagrad_range(params[i1:i2], grads[i1:i2], state_sum[i1:i2], clr, eps, like(0.0, wd), gs)


@njit(**JIT_UPDATE_PARALLEL)
def adagrad_update(params, grads, state_sum, lr, lr_decay, eps, weight_decay, n_decay, step, grad_scale):
    """One Adagrad step in place (torch.optim.Adagrad); ``step`` is this update's 1-based number."""
    clr = like(lr / (1.0 + (step - 1) * lr_decay), params)
    eps_, wd, gs = like(eps, params), like(weight_decay, params), like(grad_scale, params)
    chunks = n_chunks(params.size, OPTIM_CHUNK)
    if params.size < PARALLEL_MIN_ELEMENTS:
        for c in range(chunks):
            _adagrad_chunk(params, grads, state_sum, c, n_decay, clr, eps_, wd, gs)
    else:
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            _adagrad_chunk(params, grads, state_sum, c, n_decay, clr, eps_, wd, gs)


@njit(**JIT_UPDATE)  # not inlined: one compiled body for the serial and parallel paths
def _adam_chunk(
    params, grads, m, v, vmax, c, n_decay, step_size, omb1, beta2, omb2, bc2_sqrt, eps, coupled_wd, decay, amsgrad, gs
):
    i0, i1, i2 = _chunk_bounds(c, params.size, n_decay)
    # sqrt(1 - beta2**t) rounded to 1 (float32: t >= 16,628 at beta2 0.999): the division left out
    # (same bits) in a specialisation of its own (a None argument: Numba prunes the branch)
    if bc2_sqrt == like(1.0, params):
        _adam_pieces(params, grads, m, v, vmax, i0, i1, i2,
                     step_size, omb1, beta2, omb2, None, eps, coupled_wd, decay, amsgrad, gs)  # fmt: skip
    else:
        _adam_pieces(params, grads, m, v, vmax, i0, i1, i2,
                     step_size, omb1, beta2, omb2, bc2_sqrt, eps, coupled_wd, decay, amsgrad, gs)  # fmt: skip


@njit(**JIT_UPDATE_INLINE)
def _adam_pieces(
    params, grads, m, v, vmax, i0, i1, i2, step_size, omb1, beta2, omb2, bc2_sqrt, eps, coupled_wd, decay, amsgrad, gs
):
    """Adam over ``[i0, i1)`` with weight decay and ``[i1, i2)`` without; ``bc2_sqrt`` None: no division."""
    one, zero = like(1.0, params), like(0.0, params)
    _adam_range(
        params[i0:i1], grads[i0:i1], m[i0:i1], v[i0:i1], vmax[i0:i1],
        step_size, omb1, beta2, omb2, bc2_sqrt, eps, coupled_wd, decay, amsgrad, gs,
    )  # fmt: skip
    _adam_range(
        params[i1:i2], grads[i1:i2], m[i1:i2], v[i1:i2], vmax[i1:i2],
        step_size, omb1, beta2, omb2, bc2_sqrt, eps, zero, one, amsgrad, gs,
    )  # fmt: skip


@njit(**JIT_UPDATE_PARALLEL)
def adam_update(
    params, grads, m, v, vmax, lr, beta1, beta2, eps, weight_decay, n_decay, decoupled, amsgrad, step, grad_scale
):
    """One Adam (``decoupled=False``) or AdamW (``decoupled=True``) step in place, as torch.optim.

    params, grads, m, v (n,); vmax (n,) used only if ``amsgrad``. ``step`` is this update's
    1-based number (bias correction 1 - beta**step).
    """
    step_size = like(lr / (1.0 - beta1**step), params)
    bc2_sqrt = like(math.sqrt(1.0 - beta2**step), params)
    coupled_wd = like(0.0 if decoupled else weight_decay, params)
    decay = like(1.0 - lr * weight_decay if decoupled else 1.0, params)
    omb1, b2, omb2 = like(1.0 - beta1, params), like(beta2, params), like(1.0 - beta2, params)
    eps_, gs = like(eps, params), like(grad_scale, params)
    chunks = n_chunks(params.size, OPTIM_CHUNK)
    if params.size < PARALLEL_MIN_ELEMENTS:
        for c in range(chunks):
            _adam_chunk(
                params,
                grads,
                m,
                v,
                vmax,
                c,
                n_decay,
                step_size,
                omb1,
                b2,
                omb2,
                bc2_sqrt,
                eps_,
                coupled_wd,
                decay,
                amsgrad,
                gs,
            )
    else:
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            _adam_chunk(
                params,
                grads,
                m,
                v,
                vmax,
                c,
                n_decay,
                step_size,
                omb1,
                b2,
                omb2,
                bc2_sqrt,
                eps_,
                coupled_wd,
                decay,
                amsgrad,
                gs,
            )


@njit(**JIT_UPDATE)  # not inlined: one compiled body for the serial and parallel paths
def _lion_chunk(params, grads, m, c, n_decay, lr, beta1, omb1, beta2, omb2, decay, gs):
    i0, i1, i2 = _chunk_bounds(c, params.size, n_decay)
    _lion_range(params[i0:i1], grads[i0:i1], m[i0:i1], lr, beta1, omb1, beta2, omb2, decay, gs)
    _lion_range(params[i1:i2], grads[i1:i2], m[i1:i2], lr, beta1, omb1, beta2, omb2, like(1.0, decay), gs)


@njit(**JIT_UPDATE_PARALLEL)
def lion_update(params, grads, m, lr, beta1, beta2, weight_decay, n_decay, grad_scale):
    """One Lion step in place (decoupled weight decay, as in the paper); params, grads, m (n,)."""
    lr_, decay = like(lr, params), like(1.0 - lr * weight_decay, params)
    b1, omb1 = like(beta1, params), like(1.0 - beta1, params)
    b2, omb2 = like(beta2, params), like(1.0 - beta2, params)
    gs = like(grad_scale, params)
    chunks = n_chunks(params.size, OPTIM_CHUNK)
    if params.size < PARALLEL_MIN_ELEMENTS:
        for c in range(chunks):
            _lion_chunk(params, grads, m, c, n_decay, lr_, b1, omb1, b2, omb2, decay, gs)
    else:
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            _lion_chunk(params, grads, m, c, n_decay, lr_, b1, omb1, b2, omb2, decay, gs)


# ---------------------------------------------------------------------------------------------
# Gradient clipping.
# ---------------------------------------------------------------------------------------------


@njit(**JIT_UPDATE)  # not inlined: one compiled body for the serial and parallel paths
def _sum_squares_chunk(grads, partials, c):
    g = grads[c * OPTIM_CHUNK : min((c + 1) * OPTIM_CHUNK, grads.size)]
    total = 0.0
    for i in range(g.size):
        total += np.float64(g[i]) * np.float64(g[i])
    partials[c] = total


@njit(**JIT_UPDATE_PARALLEL)
def grad_global_norm(grads, partials):
    """Euclidean norm of ``grads`` (n,) as float64, in one pass.

    ``partials`` is float64 scratch of at least ``norm_partials_size(n)``: each fixed chunk's sum
    of squares, combined in chunk order, so the result is the same on any number of threads.
    """
    chunks = n_chunks(grads.size, OPTIM_CHUNK)
    if grads.size < PARALLEL_MIN_ELEMENTS:
        for c in range(chunks):
            _sum_squares_chunk(grads, partials, c)
    else:
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            _sum_squares_chunk(grads, partials, c)
    total = 0.0
    for c in range(chunks):
        total += partials[c]
    return math.sqrt(total)


@njit(**JIT_UPDATE)  # not inlined: one compiled body for the serial and parallel paths
def _clip_chunk(grads, c, low, high):
    g = grads[c * OPTIM_CHUNK : min((c + 1) * OPTIM_CHUNK, grads.size)]
    for i in range(g.size):
        g[i] = min(max(g[i], low), high)


@njit(**JIT_UPDATE_PARALLEL)
def clip_by_value(grads, clip_value):
    """grads = clip(grads, -clip_value, clip_value) in place (torch.nn.utils.clip_grad_value_)."""
    high = like(clip_value, grads)
    low = -high
    chunks = n_chunks(grads.size, OPTIM_CHUNK)
    if grads.size < PARALLEL_MIN_ELEMENTS:
        for c in range(chunks):
            _clip_chunk(grads, c, low, high)
    else:
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            _clip_chunk(grads, c, low, high)


__all__ = [
    "OPTIM_CHUNK",
    "adagrad_rule",
    "adagrad_update",
    "adam_rule",
    "adam_update",
    "clip_by_value",
    "grad_global_norm",
    "lion_rule",
    "lion_update",
    "norm_partials_size",
    "rmsprop_rule",
    "rmsprop_update",
    "sgd_rule",
    "sgd_update",
]

#: the functions the object layer calls (fastnn.backend.kernels); the CUDA twin module has them too
DEVICE_API = (
    "sgd_update",
    "rmsprop_update",
    "adagrad_update",
    "adam_update",
    "lion_update",
    "grad_global_norm",
    "clip_by_value",
    "norm_partials_size",
)
