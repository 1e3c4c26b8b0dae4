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
number of this update, the clip norm and the clip value (NaN: no such clipping); the kernel
writes back the gradient norm its clipping by norm used. ``by_value`` follows them: None for an
optimizer without ``clip_value``, whose kernel then has no value clipping compiled in (Numba prunes
the branch on a None argument: the parallel clip kernel is ~4% of a cold first step's compile),
True for one with it. The trainable ranges and the norm's scratch come next (below), then the
buffers and the hyper-parameters, as the update kernels take them.

Frozen layers (``fastnn.freezing``): ``ranges`` (k, 2) int64 holds the ``[lo, hi)`` ranges of the
flat buffers to update, sorted and disjoint (``[[0, n]]``: all). The update kernel runs on each
range's views with the weight-decay prefix ``n_decay`` cut to the range, clipping by value clips
those ranges only and clipping by norm uses their norm (``partials``: the float64 scratch of
:func:`~fastnn.kernels.optim.grad_global_norm`), as :meth:`fastnn.optim.Optimizer.step` does from
Python; the rest of the buffers, and their optimizer state, stay as they are.

A sparse table (``Embedding(sparse=True)``) is left out of those ranges and steps right after, in
its own call (:func:`sgd_rows_step`): only the rows the step looked up, when the step kernel updated.
Adam (:func:`adam_sparse_step`) steps them in the step kernel's own parallel sweep instead: one
parallel region in which each thread takes its share of the dense chunks and of the touched rows,
so that neither part waits for the other's region to end.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .._config import JIT_EXACT, JIT_UPDATE, JIT_UPDATE_PARALLEL, PARALLEL_MIN_ELEMENTS
from ._scalar import like, n_chunks
from .optim import (
    OPTIM_CHUNK,
    _adam_chunk,
    _sum_squares_chunk,
    adagrad_update,
    adam_update,
    clip_by_value,
    lion_update,
    rmsprop_update,
    sgd_update,
)
from .sparse_update import _adam_rows, sgd_rows_update
from .tiling import numba_threads

#: positions in ``scalars``
ARMED, LR, STEP, CLIP_NORM, CLIP_VALUE, USED_NORM = range(6)
N_SCALARS = 6


@njit(**JIT_EXACT)
def covers_all(ranges, n):
    """Whether ``ranges`` (k, 2) is the one range ``[0, n)``: no frozen parameters."""
    return ranges.shape[0] == 1 and ranges[0, 0] == 0 and ranges[0, 1] == n


@njit(**JIT_EXACT)
def range_of(ranges, r, n_decay):
    """(lo, hi, the weight-decay prefix of ``[lo, hi)``) of range ``r``: decay covers ``[0, n_decay)``."""
    lo, hi = ranges[r, 0], ranges[r, 1]
    return lo, hi, min(max(n_decay - lo, 0), hi - lo)


@njit(**JIT_EXACT)
def trainable_norm(norm, grads, ranges, partials):
    """The L2 norm of ``grads`` over ``ranges``: ``norm`` (the whole buffer's) when they cover it,
    else sqrt of the sum, in range order, of each range's squared norm, each summed as
    :func:`~fastnn.kernels.optim.grad_global_norm` sums (its chunk kernel, chunk sums combined in
    chunk order: the same bits; serially, so the step kernels call no parallel kernel for it:
    a cached step kernel that did segfaulted when loaded in a fresh process)."""
    if covers_all(ranges, grads.size):
        return norm
    total = 0.0
    for r in range(ranges.shape[0]):
        g = grads[ranges[r, 0] : ranges[r, 1]]
        chunks = n_chunks(g.size, OPTIM_CHUNK)
        part = 0.0
        for c in range(chunks):
            _sum_squares_chunk(g, partials, c)
        for c in range(chunks):
            part += partials[c]
        part = math.sqrt(part)
        total += part * part
    return math.sqrt(total)


@njit(**JIT_EXACT)
def step_gate(loss, norm, scalars, by_value, grads, ranges, partials):
    """(update?, grad_scale) of a step (and disarms ``scalars``): no update when the step is not
    armed or the loss or the norm is not finite; else the clipping scale by the norm over
    ``ranges`` (1.0 when not clipping by norm; that norm written to ``scalars[USED_NORM]``), the
    gradients ``grads`` (n,) in ``ranges`` clipped by value first when asked (``by_value`` True;
    None: never, not compiled)."""
    armed = scalars[ARMED] != 0.0
    scalars[ARMED] = 0.0
    if not (armed and math.isfinite(loss) and math.isfinite(norm)):
        return False, 1.0
    scale = 1.0
    if not math.isnan(scalars[CLIP_NORM]):
        used = trainable_norm(norm, grads, ranges, partials)
        scalars[USED_NORM] = used
        scale = min(1.0, scalars[CLIP_NORM] / (used + 1e-6))
    elif by_value is not None:  # pruned before typing when None
        if not math.isnan(scalars[CLIP_VALUE]):
            for r in range(ranges.shape[0]):
                clip_by_value(grads[ranges[r, 0] : ranges[r, 1]], scalars[CLIP_VALUE])
    return True, scale


@njit(**JIT_EXACT)
def sgd_step(
    loss,
    norm,
    scalars,
    by_value,
    ranges,
    partials,
    params,
    grads,
    velocity,
    momentum,
    dampening,
    weight_decay,
    n_decay,
    nesterov,
):
    """:func:`~fastnn.kernels.optim.sgd_update` on each of ``ranges`` after :func:`step_gate`;
    arrays (n,) (an empty one stays empty in every range)."""
    go, scale = step_gate(loss, norm, scalars, by_value, grads, ranges, partials)
    if go:
        first = scalars[STEP] == 1.0
        for r in range(ranges.shape[0]):
            lo, hi, nd = range_of(ranges, r, n_decay)
            sgd_update(
                params[lo:hi],
                grads[lo:hi],
                velocity[lo:hi],
                scalars[LR],
                momentum,
                dampening,
                weight_decay,
                nd,
                nesterov,
                scale,
                first,
            )
    return go


@njit(**JIT_EXACT)
def rmsprop_step(
    loss,
    norm,
    scalars,
    by_value,
    ranges,
    partials,
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
    """:func:`~fastnn.kernels.optim.rmsprop_update` on each of ``ranges`` after :func:`step_gate`; arrays (n,) or empty."""
    go, scale = step_gate(loss, norm, scalars, by_value, grads, ranges, partials)
    if go:
        for r in range(ranges.shape[0]):
            lo, hi, nd = range_of(ranges, r, n_decay)
            rmsprop_update(
                params[lo:hi],
                grads[lo:hi],
                square_avg[lo:hi],
                grad_avg[lo:hi],
                buf[lo:hi],
                scalars[LR],
                alpha,
                eps,
                weight_decay,
                nd,
                momentum,
                centered,
                scale,
            )
    return go


@njit(**JIT_EXACT)
def adagrad_step(
    loss, norm, scalars, by_value, ranges, partials, params, grads, state_sum, lr_decay, eps, weight_decay, n_decay
):
    """:func:`~fastnn.kernels.optim.adagrad_update` on each of ``ranges`` after :func:`step_gate`; arrays (n,)."""
    go, scale = step_gate(loss, norm, scalars, by_value, grads, ranges, partials)
    if go:
        step = np.int64(scalars[STEP])
        for r in range(ranges.shape[0]):
            lo, hi, nd = range_of(ranges, r, n_decay)
            adagrad_update(
                params[lo:hi], grads[lo:hi], state_sum[lo:hi], scalars[LR], lr_decay, eps, weight_decay, nd, step, scale
            )
    return go


@njit(**JIT_EXACT)
def adam_step(
    loss,
    norm,
    scalars,
    by_value,
    ranges,
    partials,
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
    """:func:`~fastnn.kernels.optim.adam_update` on each of ``ranges`` after :func:`step_gate`; vmax (n,) or empty."""
    go, scale = step_gate(loss, norm, scalars, by_value, grads, ranges, partials)
    if go:
        step = np.int64(scalars[STEP])
        for r in range(ranges.shape[0]):
            lo, hi, nd = range_of(ranges, r, n_decay)
            adam_update(
                params[lo:hi],
                grads[lo:hi],
                m[lo:hi],
                v[lo:hi],
                vmax[lo:hi],
                scalars[LR],
                beta1,
                beta2,
                eps,
                weight_decay,
                nd,
                decoupled,
                amsgrad,
                step,
                scale,
            )
    return go


@njit(**JIT_EXACT)
def lion_step(loss, norm, scalars, by_value, ranges, partials, params, grads, m, beta1, beta2, weight_decay, n_decay):
    """:func:`~fastnn.kernels.optim.lion_update` on each of ``ranges`` after :func:`step_gate`; arrays (n,)."""
    go, scale = step_gate(loss, norm, scalars, by_value, grads, ranges, partials)
    if go:
        for r in range(ranges.shape[0]):
            lo, hi, nd = range_of(ranges, r, n_decay)
            lion_update(params[lo:hi], grads[lo:hi], m[lo:hi], scalars[LR], beta1, beta2, weight_decay, nd, scale)
    return go


@njit(**JIT_EXACT)
def sgd_rows_step(updated, scalars, params, grads, rows, lo, width):
    """:func:`~fastnn.kernels.sparse_update.sgd_rows_update` of a sparse table's touched rows, with this
    step's learning rate, when the step kernel before it ``updated`` (armed and finite); returns that."""
    if updated:
        sgd_rows_update(params, grads, rows, lo, width, scalars[LR])
    return updated


@njit(**JIT_UPDATE)  # not inlined: one compiled body for the serial and parallel paths
def _adam_share(
    w, workers, params, grads, m, v, vmax, ranges, n_decay, step_size, omb1, b2, omb2, bc2_sqrt, eps,
    coupled_wd, decay, amsgrad, gs, rows, lo, width, row_step,
):  # fmt: skip
    """Worker ``w`` of ``workers``: its contiguous share of the ranges' OPTIM_CHUNK chunks (as
    adam_update splits each range, numbered across the ranges) and of the touched rows. Each worker
    takes a like share of both, where a split by cost gave nearly all of a Dense layer's weights to
    one worker, though both threads had read and written their halves of them in the step's
    products (embed-10k-sparse, 2 threads: 139 -> 133 us after the step's forward and backward,
    121 -> 109 us alone). Which rows or chunks a worker takes never changes their bits."""
    count = max(rows[0], 0)
    chunks = 0  # the ranges' chunks, numbered across the ranges
    for r in range(ranges.shape[0]):
        chunks += n_chunks(ranges[r, 1] - ranges[r, 0], OPTIM_CHUNK)
    a, b = chunks * w // workers, chunks * (w + 1) // workers  # this worker's chunks [a, b)
    first = 0  # chunks before the range
    for r in range(ranges.shape[0]):
        r_lo, r_hi, nd = range_of(ranges, r, n_decay)
        size = r_hi - r_lo
        for c in range(n_chunks(size, OPTIM_CHUNK)):
            if a <= first + c < b:  # adam_update on the range's views, chunk c
                _adam_chunk(params[r_lo:r_hi], grads[r_lo:r_hi], m[r_lo:r_hi], v[r_lo:r_hi], vmax[r_lo:r_hi],
                            c, nd, step_size, omb1, b2, omb2, bc2_sqrt, eps, coupled_wd, decay, amsgrad, gs)  # fmt: skip
        first += n_chunks(size, OPTIM_CHUNK)
    r0, r1 = count * w // workers, count * (w + 1) // workers  # this worker's touched rows
    if r0 < r1 and width > 0:  # one call over the worker's rows: its prefetches run across blocks
        _adam_rows(params, grads, m, v, rows, lo, width, row_step, omb1, b2, omb2, eps, r0, r1)


@njit(**JIT_UPDATE_PARALLEL)
def _adam_ranges_rows(
    params, grads, m, v, vmax, ranges, lr, beta1, beta2, eps, weight_decay, n_decay, decoupled, amsgrad, step,
    grad_scale, rows, lo, width,
):  # fmt: skip
    """adam_update on each of ``ranges`` and adam_rows_update on the touched rows, in one sweep: the
    scalars of each, their element rules on the same elements (the same bits on any split)."""
    step_size = like(lr / (1.0 - beta1**step), params)  # adam_update's scalars
    bc2_sqrt = like(math.sqrt(1.0 - beta2**step), params)
    coupled_wd = like(0.0 if decoupled else weight_decay, params)
    decay = like(1.0 - lr * weight_decay if decoupled else 1.0, params)
    omb1, b2, omb2 = like(1.0 - beta1, params), like(beta2, params), like(1.0 - beta2, params)
    eps_, gs = like(eps, params), like(grad_scale, params)
    row_step = like(lr * math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step), params)  # adam_rows_update's
    elements = max(rows[0], 0) * width
    for r in range(ranges.shape[0]):
        elements += ranges[r, 1] - ranges[r, 0]
    workers = numba_threads()
    if elements < PARALLEL_MIN_ELEMENTS or workers == 1:
        _adam_share(0, 1, params, grads, m, v, vmax, ranges, n_decay, step_size, omb1, b2, omb2, bc2_sqrt, eps_,
                    coupled_wd, decay, amsgrad, gs, rows, lo, width, row_step)  # fmt: skip
    else:
        for w_u in prange(workers):
            _adam_share(np.int64(w_u), workers, params, grads, m, v, vmax, ranges, n_decay, step_size, omb1, b2,
                        omb2, bc2_sqrt, eps_, coupled_wd, decay, amsgrad, gs, rows, lo, width, row_step)  # fmt: skip


@njit(**JIT_EXACT)
def adam_sparse_step(
    loss,
    norm,
    scalars,
    by_value,
    ranges,
    partials,
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
    rows,
    lo,
    width,
):
    """:func:`adam_step` and then, when it updated, :func:`~fastnn.kernels.sparse_update.adam_rows_update`
    of a sparse table's touched rows (``rows``, ``lo``, ``width`` as that takes them; this step's
    learning rate and number), the same bits, in one parallel sweep over the dense ranges' chunks and
    the blocks of rows."""
    go, scale = step_gate(loss, norm, scalars, by_value, grads, ranges, partials)
    if go:
        _adam_ranges_rows(params, grads, m, v, vmax, ranges, scalars[LR], beta1, beta2, eps, weight_decay, n_decay,
                          decoupled, amsgrad, np.int64(scalars[STEP]), scale, rows, lo, width)  # fmt: skip
    return go


__all__ = [
    "adam_sparse_step",
    "sgd_rows_step",
    "ARMED",
    "CLIP_NORM",
    "CLIP_VALUE",
    "LR",
    "N_SCALARS",
    "STEP",
    "USED_NORM",
    "adagrad_step",
    "adam_step",
    "covers_all",
    "lion_step",
    "range_of",
    "rmsprop_step",
    "sgd_step",
    "step_gate",
    "trainable_norm",
]
