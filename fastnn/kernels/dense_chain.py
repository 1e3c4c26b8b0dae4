"""A chain of Dense layers and its loss as one training step whose batch is split by rows over
the threads: each thread runs the forward, the loss and the backward of its own rows, and the
weight and bias gradients are its partial sums, added in thread order at the end.

Per layer, the kernels of :mod:`.dense` run a product at a time, each its own parallel region
(or on one thread, below ``THREAD_MIN_MACS``): between two products every activation crosses
from the cores that wrote it to the ones that read it, and a small product's region does not
pay for itself. Split by rows, a thread's activations, loss gradient and input gradients stay in
its own core's cache for the whole step; only the weights are read by every thread, and the
partial weight gradients are added once (``fastnn._dense_chain`` records these calls in a
step plan where they pay).

The batch can be gathered by the same tasks, each its own rows (``x_all``, ``y_all``, ``order``,
``lo``, ``hi``: :func:`.step_feed.gather_batch`'s arguments, its copy into ``x`` and ``y_rows``): fit's
shuffled batch then lands in the core that computes on it. An empty ``order`` gathers nothing (the
batch is in ``x`` and ``y_rows`` already; then ``x_all`` and ``y_all`` are any arrays of their types:
``x`` and ``y_rows`` themselves).

Shapes, one float dtype throughout: x (batch, in_0); tuples over the L layers in layer order:
ws (in_l, out_l), bs (out_l,), zs and ys (batch, out_l) (``ys[l]`` is ``zs[l]`` for an identity
layer), gys (batch, out_l) the upstream gradient (the last layer's is the loss gradient, layer
l's is ``gxs[l + 1]``), gzs (batch, out_l) (``gys[l]`` for identity), gxs (batch, in_l) (layer 0's
is not written: any array of the tuple's type), gws (in_l, out_l), gbs (out_l,), parts_w (tasks,
in_l, out_l) and parts_b (tasks, out_l) scratch; codes (L,) int64 elementwise activation codes,
alphas (L,) float64. ``tasks`` (the scratch's first side, at least 1) fixes the row split, so
the results do not depend on the number of threads that run it.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._config import JIT, JIT_PARALLEL
from ._scalar import like
from .batchnorm import sum_partials
from .blas import gemm_block
from .dense import _bias_activate_block, grad_z_rows
from .losses import cross_entropy_grad_rows, elementwise_rows
from .step_feed import gather_rows
from .tiling import numba_threads


@njit(**JIT)
def _forward_rows(x, ws, bs, zs, ys, codes, alphas, r0, r1):
    """z = x @ w + b and y = f(z) of every layer, on rows [r0, r1)."""
    for layer in range(len(ws)):
        z = zs[layer]
        inp = x if layer == 0 else ys[layer - 1]
        gemm_block(False, False, like(1.0, z), inp, ws[layer], like(0.0, z), z, r0, r1, 0, z.shape[1])
        _bias_activate_block(z, ys[layer], bs[layer], codes[layer], like(alphas[layer], z), r0, r1, 0, z.shape[1])


@njit(**JIT)
def _backward_rows(x, ws, zs, ys, gys, gzs, gxs, parts_w, parts_b, codes, alphas, task, r0, r1):
    """Every layer's backward (last first) on rows [r0, r1): grad_z, the rows' bias and weight
    gradient sums into ``parts_b[l][task]`` and ``parts_w[l][task]``, grad_x but for layer 0."""
    for back in range(len(ws)):
        layer = len(ws) - 1 - back
        z, gz = zs[layer], gzs[layer]
        one, zero = like(1.0, z), like(0.0, z)
        grad_z_rows(z, ys[layer], gys[layer], gz, parts_b[layer], codes[layer], like(alphas[layer], z), task, r0, r1)
        inp = x if layer == 0 else ys[layer - 1]
        k, n = inp.shape[1], z.shape[1]
        part = parts_w[layer][task]
        if r1 > r0:
            gemm_block(True, False, one, inp[r0:r1], gz[r0:r1], zero, part, 0, k, 0, n)
        else:  # (a task of no rows: a batch smaller than the tasks; loops, as in _add_parts)
            for i in range(k):
                for j in range(n):
                    part[i, j] = zero
        if layer > 0:
            gemm_block(False, True, one, gz, ws[layer], zero, gxs[layer], r0, r1, 0, k)


@njit(**JIT)
def _add_parts(gws, gbs, parts_w, parts_b):
    """Each layer's weight and bias gradients: its tasks' partial sums added in task order
    (:func:`.batchnorm.sum_partials` over flat views, the task loop outside, so the loop along the
    weights vectorises: 4.9 -> 1.8 us for digits' 7,510)."""
    tasks = parts_b[0].shape[0]
    for layer in range(len(gws)):
        sum_partials(parts_w[layer].reshape(1, tasks, -1), 0, gws[layer].reshape(-1), tasks)
        sum_partials(parts_b[layer].reshape(1, tasks, -1), 0, gbs[layer], tasks)


@njit(**JIT)
def _task_rows(m, task, tasks):
    """Rows [r0, r1) of task ``task`` of ``tasks``: the batch in contiguous runs of near-equal size."""
    return task * m // tasks, (task + 1) * m // tasks


@njit(**JIT)
def _rows_of(x_all, y_all, order, lo, hi, y_rows, x, parts_b, task):
    """Rows [r0, r1) of task ``task`` (:func:`_task_rows`), those below ``hi - lo`` gathered into
    ``x`` and ``y_rows`` first when ``order`` is not empty (module docstring)."""
    r0, r1 = _task_rows(x.shape[0], task, parts_b[0].shape[0])
    if order.shape[0] > 0:
        gather_rows(x_all, y_all, order, lo, x, y_rows, r0, max(r0, min(r1, hi - lo)))
    return r0, r1


@njit(**JIT)
def _cross_entropy_task(
    x_all, y_all, order, lo, hi, y_rows, x, labels, grad, scale, ws, bs, zs, ys, gys, gzs, gxs, parts_w, parts_b, codes,
    alphas, task,
):  # fmt: skip
    """Task ``task``'s rows of :func:`dense_chain_cross_entropy`: gather, forward, loss and backward;
    returns the rows' loss sum (float64)."""
    r0, r1 = _rows_of(x_all, y_all, order, lo, hi, y_rows, x, parts_b, task)
    _forward_rows(x, ws, bs, zs, ys, codes, alphas, r0, r1)
    loss = cross_entropy_grad_rows(ys[len(ys) - 1], labels, grad, scale, r0, r1)
    _backward_rows(x, ws, zs, ys, gys, gzs, gxs, parts_w, parts_b, codes, alphas, task, r0, r1)
    return loss


@njit(**JIT)
def _elementwise_task(
    x_all, y_all, order, lo, hi, x, target, grad, code, delta, scale, ws, bs, zs, ys, gys, gzs, gxs, parts_w, parts_b,
    codes, alphas, task,
):  # fmt: skip
    """Task ``task``'s rows of :func:`dense_chain_elementwise`: gather, forward, loss and backward;
    returns the rows' loss sum (float64)."""
    r0, r1 = _rows_of(x_all, y_all, order, lo, hi, target, x, parts_b, task)
    _forward_rows(x, ws, bs, zs, ys, codes, alphas, r0, r1)
    loss = elementwise_rows(ys[len(ys) - 1], target, grad, code, delta, scale, True, r0, r1)
    _backward_rows(x, ws, zs, ys, gys, gzs, gxs, parts_w, parts_b, codes, alphas, task, r0, r1)
    return loss


@njit(**JIT)
def _finish(partials, gws, gbs, parts_w, parts_b):
    """The weight and bias gradients (:func:`_add_parts`) and the tasks' loss sums added in task order."""
    _add_parts(gws, gbs, parts_w, parts_b)
    total = 0.0
    for t in range(parts_b[0].shape[0]):
        total += partials[t]
    return total


@njit(**JIT_PARALLEL)
def dense_chain_cross_entropy(
    x_all, y_all, order, lo, hi, y_rows, x, labels, grad, partials, mean, ws, bs, zs, ys, gys, gzs, gxs, gws, gbs,
    parts_w, parts_b, codes, alphas,
):  # fmt: skip
    """One training step's forward, softmax cross-entropy and backward of a Dense chain, its rows
    split over the threads (module docstring); returns the loss (float64).

    labels (batch,) int64 in [0, classes) and y_rows (batch, 1) its view (the gather's target),
    grad (batch, classes) the loss gradient (``gys[-1]``),
    partials (>= tasks,) float64 scratch. The loss is the sum over rows of log-sum-exp(logits) -
    logits[label] (logits: the last layer's ``ys``), divided by the batch if ``mean``; its gradient
    is :func:`.losses.cross_entropy_forward_backward`'s.
    """
    m = x.shape[0]
    scale = like(1.0 / m if mean else 1.0, grad)
    if numba_threads() > 1:
        for t_u in prange(parts_b[0].shape[0]):
            t = np.int64(t_u)  # prange indices are uint64
            partials[t] = _cross_entropy_task(
                x_all, y_all, order, lo, hi, y_rows, x, labels, grad, scale, ws, bs, zs, ys, gys, gzs, gxs, parts_w,
                parts_b, codes, alphas, t,
            )  # fmt: skip
    else:  # the same tasks in a loop: one thread gains nothing from a region
        for t in range(parts_b[0].shape[0]):
            partials[t] = _cross_entropy_task(
                x_all, y_all, order, lo, hi, y_rows, x, labels, grad, scale, ws, bs, zs, ys, gys, gzs, gxs, parts_w,
                parts_b, codes, alphas, t,
            )  # fmt: skip
    total = _finish(partials, gws, gbs, parts_w, parts_b)
    return total / m if mean else total


@njit(**JIT_PARALLEL)
def dense_chain_elementwise(
    x_all,
    y_all,
    order,
    lo,
    hi,
    x,
    target,
    grad,
    partials,
    code,
    delta,
    mean,
    ws,
    bs,
    zs,
    ys,
    gys,
    gzs,
    gxs,
    gws,
    gbs,
    parts_w,
    parts_b,
    codes,
    alphas,
):
    """One training step's forward, elementwise loss ``code`` (:func:`.losses.elementwise_loss`'s:
    MSE, MAE, Huber with threshold ``delta``, binary cross-entropy from logits) and backward of a
    Dense chain, its rows split over the threads (module docstring); returns the loss (float64).

    target (batch, out) of the outputs' dtype (the gather's target too), grad (batch, out) the loss
    gradient (``gys[-1]``),
    partials (>= tasks,) float64 scratch; a mean divides by batch * out.
    """
    count = x.shape[0] * grad.shape[1]
    scale = 1.0 / count if mean else 1.0
    d = like(delta, grad)
    if numba_threads() > 1:
        for t_u in prange(parts_b[0].shape[0]):
            t = np.int64(t_u)  # prange indices are uint64
            partials[t] = _elementwise_task(
                x_all, y_all, order, lo, hi, x, target, grad, code, d, scale, ws, bs, zs, ys, gys, gzs, gxs, parts_w,
                parts_b, codes, alphas, t,
            )  # fmt: skip
    else:  # the same tasks in a loop: one thread gains nothing from a region
        for t in range(parts_b[0].shape[0]):
            partials[t] = _elementwise_task(
                x_all, y_all, order, lo, hi, x, target, grad, code, d, scale, ws, bs, zs, ys, gys, gzs, gxs, parts_w,
                parts_b, codes, alphas, t,
            )  # fmt: skip
    total = _finish(partials, gws, gbs, parts_w, parts_b)
    return total / count if mean else total


__all__ = ["dense_chain_cross_entropy", "dense_chain_elementwise"]
