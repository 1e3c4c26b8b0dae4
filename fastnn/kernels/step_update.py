"""The optimizer's update at the end of a training step, run inside the step's compiled call.

A step plan (``fastnn.model``) ends with the loss kernel, the backward kernels and the gradient
norm. The kernels here take that loss and norm and, when the step is armed (below) and both
are finite, clip the gradients and run the optimizer's update kernel (:mod:`fastnn.kernels.optim`) as
:meth:`fastnn.optim.Optimizer.step` does from Python: the same kernels on the same scalars, so
the same result bit for bit. A non-finite step updates nothing (the model then restores its
state and raises); neither does an unarmed one (a step that only computes gradients, or whose
update runs from Python). Each returns True when it updated.

The scalars that change from step to step come in ``scalars``, a float64 array of
:data:`N_SCALARS` that ``Optimizer.begin_fused_step`` writes before each step: 1.0 to arm the
update (the kernel disarms it: each arming serves one step), the learning rate, the 1-based
number of this update, the clip norm and the clip value (NaN: no such clipping). ``by_value`` follows
them: None for an optimizer without ``clip_value``, whose kernel then has no value clipping compiled
in (Numba prunes the branch on a None argument: the parallel clip kernel is ~4% of a cold first
step's compile), True for one with it. The hyper-parameters follow, as the update kernels take them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .._config import JIT_EXACT
from .optim import adagrad_update, adam_update, clip_by_value, lion_update, rmsprop_update, sgd_update

#: positions in ``scalars``
ARMED, LR, STEP, CLIP_NORM, CLIP_VALUE = range(5)
N_SCALARS = 5


@njit(**JIT_EXACT)
def step_gate(loss, norm, scalars, by_value, grads):
    """(update?, grad_scale) of a step (and disarms ``scalars``): no update when the step is not
    armed or the loss or the norm is not finite; else the global-norm clipping scale (1.0 when not clipping by
    norm), the gradients ``grads`` (n,) clipped by value first when asked (``by_value`` True; None:
    never, not compiled)."""
    armed = scalars[ARMED] != 0.0
    scalars[ARMED] = 0.0
    if not (armed and math.isfinite(loss) and math.isfinite(norm)):
        return False, 1.0
    scale = 1.0
    if not math.isnan(scalars[CLIP_NORM]):
        scale = min(1.0, scalars[CLIP_NORM] / (norm + 1e-6))
    elif by_value is not None:  # pruned before typing when None
        if not math.isnan(scalars[CLIP_VALUE]):
            clip_by_value(grads, scalars[CLIP_VALUE])
    return True, scale


@njit(**JIT_EXACT)
def sgd_step(
    loss, norm, scalars, by_value, params, grads, velocity, momentum, dampening, weight_decay, n_decay, nesterov
):
    """:func:`~fastnn.kernels.optim.sgd_update` after :func:`step_gate`; arrays (n,)."""
    go, scale = step_gate(loss, norm, scalars, by_value, grads)
    if go:
        first = scalars[STEP] == 1.0
        sgd_update(
            params, grads, velocity, scalars[LR], momentum, dampening, weight_decay, n_decay, nesterov, scale, first
        )
    return go


@njit(**JIT_EXACT)
def rmsprop_step(
    loss,
    norm,
    scalars,
    by_value,
    params,
    grads,
    square_avg,
    grad_avg,
    buf,
    alpha,
    eps,
    weight_decay,
    n_decay,
    momentum,
    centered,
):
    """:func:`~fastnn.kernels.optim.rmsprop_update` after :func:`step_gate`; arrays (n,) or empty."""
    go, scale = step_gate(loss, norm, scalars, by_value, grads)
    if go:
        rmsprop_update(
            params,
            grads,
            square_avg,
            grad_avg,
            buf,
            scalars[LR],
            alpha,
            eps,
            weight_decay,
            n_decay,
            momentum,
            centered,
            scale,
        )
    return go


@njit(**JIT_EXACT)
def adagrad_step(loss, norm, scalars, by_value, params, grads, state_sum, lr_decay, eps, weight_decay, n_decay):
    """:func:`~fastnn.kernels.optim.adagrad_update` after :func:`step_gate`; arrays (n,)."""
    go, scale = step_gate(loss, norm, scalars, by_value, grads)
    if go:
        step = np.int64(scalars[STEP])
        adagrad_update(params, grads, state_sum, scalars[LR], lr_decay, eps, weight_decay, n_decay, step, scale)
    return go


@njit(**JIT_EXACT)
def adam_step(
    loss,
    norm,
    scalars,
    by_value,
    params,
    grads,
    m,
    v,
    vmax,
    beta1,
    beta2,
    eps,
    weight_decay,
    n_decay,
    decoupled,
    amsgrad,
):
    """:func:`~fastnn.kernels.optim.adam_update` after :func:`step_gate`; vmax (n,) or empty."""
    go, scale = step_gate(loss, norm, scalars, by_value, grads)
    if go:
        step = np.int64(scalars[STEP])
        adam_update(
            params,
            grads,
            m,
            v,
            vmax,
            scalars[LR],
            beta1,
            beta2,
            eps,
            weight_decay,
            n_decay,
            decoupled,
            amsgrad,
            step,
            scale,
        )
    return go


@njit(**JIT_EXACT)
def lion_step(loss, norm, scalars, by_value, params, grads, m, beta1, beta2, weight_decay, n_decay):
    """:func:`~fastnn.kernels.optim.lion_update` after :func:`step_gate`; arrays (n,)."""
    go, scale = step_gate(loss, norm, scalars, by_value, grads)
    if go:
        lion_update(params, grads, m, scalars[LR], beta1, beta2, weight_decay, n_decay, scale)
    return go


__all__ = [
    "ARMED",
    "CLIP_NORM",
    "CLIP_VALUE",
    "LR",
    "N_SCALARS",
    "STEP",
    "adagrad_step",
    "adam_step",
    "lion_step",
    "rmsprop_step",
    "sgd_step",
    "step_gate",
]
