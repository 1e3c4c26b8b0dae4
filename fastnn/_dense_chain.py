"""A training step of Dense layers and their loss as one call whose batch rows are split over the threads.

A step plan (``Sequential.step_plan``) records each layer's kernel calls. Where every layer recorded
one CPU ``dense_forward`` with an elementwise activation, each reading the previous one's output,
the loss recorded softmax cross-entropy or an elementwise loss (MSE, MAE, Huber, binary
cross-entropy from logits) on the last output, unweighted and unmasked, and every layer one
``dense_backward``, :func:`chain_call` replaces the forward, loss and backward calls by one call of
:mod:`fastnn.kernels.dense_chain`'s kernel on the same buffers: each thread runs the whole step on its
own rows of the batch, so a thread's activations and gradients never leave its core, and the
weight and bias gradients are its partial sums added in a fixed order.

Only where it pays: this process runs its GEMMs on more than one thread (``GEMM_TILES``), each of
those row runs has at least :data:`MIN_TASK_ROWS` rows, the step has at least :data:`MIN_MACS`
multiply-adds and its layers at most :data:`MAX_WEIGHTS` weights, and :data:`MAX_WEIGHTS_PER_ROW` a
row of the batch: a small network on a large batch, whose layer-by-layer products do not pay for a
parallel region each, or pay less than the split (scikit-learn's MLPClassifier on digits). The choice
depends on the shapes and ``GEMM_TILES`` alone, never on the threads running, so a plan's results
do not change with ``set_num_threads``; its sums are grouped otherwise than the layer-by-layer
calls', so the two differ within float rounding (benchmarks/RESULTS.md, session 37, has the
measurements). Set :data:`ENABLED` to False (then ``model.clear_plans()``) for the layer-by-layer plan.
"""

from __future__ import annotations

import numpy as np

from . import _config, backend
from ._fused import Given, only_call, same_array
from .kernels.activations import ROWWISE_CODES
from .kernels.dense_chain import dense_chain_cross_entropy, dense_chain_elementwise

#: whether step plans take the row-split chain where it applies (tests compare against False)
ENABLED = True
#: the fewest multiply-adds of a step (its forward and backward products) that takes the chain:
#: below, the parallel region's start and the partial sums cost more than the split saves (32-64-10 at
#: batch 128, 0.8M: 1.9x slower; 64-100-10 at batch 200, 3.2M: 0.87 of the layer-by-layer step)
MIN_MACS = 1 << 21
#: the most weights (all layers) of a chain: each thread sums a partial gradient of every weight,
#: which with large layers streams more than the split saves (784-256-128-10 at batch 128, 234k
#: weights: 1.13x slower; 256-256-10, 68k: even)
MAX_WEIGHTS = 1 << 15
#: the most weights per batch row: each thread's partial weight gradient comes from its m / threads
#: rows alone, a short inner size for a product of the weights' size (train_step, 2 threads, to the
#: layer-by-layer step: 64-100-10 at batch 200, 37 a row, 0.77-0.87; 64-64-64-10 at 128, 69, 0.88;
#: 128-128-10 at 256, 69, 0.81; at 128, 138, 1.05; at 64, 276, 1.39)
MAX_WEIGHTS_PER_ROW = 96
#: the fewest batch rows of each thread's run
MIN_TASK_ROWS = 32

Calls = list  # [(kernel, args), ...] of one layer

#: a chain call's empty order: nothing to gather (the batch is in its buffers)
NO_ORDER = np.zeros(0, np.int64)
#: the chain kernels' leading gather arguments (x_all, y_all, order, lo, hi: gather_batch's, and fit's
#: gathering runner's first Given arguments); the two after them are the batch's buffers, the
#: elementwise kernel's (x, target), the cross-entropy one's (y_rows, x)
GATHER_ARGS = 5


def _steps_macs(forwards: list[tuple]) -> int:
    """Multiply-adds of a step: each layer's forward product, its weight gradient and, but for the first, its input gradient."""
    total = 0
    for layer, (x, w, *_) in enumerate(forwards):
        total += x.shape[0] * w.size * (3 if layer else 2)
    return total


def _loss_parts(loss_call: tuple, logits, grad, m: int):
    """(kernel, the gather's target rows, loss arguments, the loss's outputs, whether it computes its
    gradient) of the chain for the recorded loss call, or None when it does not apply."""
    K = backend.kernels("cpu")
    fn, args = loss_call
    if fn is K.cross_entropy_forward_backward and len(args) == 6:
        out, labels, g, _, mean, compute_grad = args
        if labels.ndim == 1 and labels.dtype == np.int64 and labels.shape[0] == m and labels.flags.c_contiguous:
            rows = labels.reshape(m, 1)  # the gather's target
            return dense_chain_cross_entropy, rows, (labels, g, None, bool(mean)), out, compute_grad
    if fn is K.elementwise_loss and len(args) == 8:
        out, target, g, _, code, delta, mean, compute_grad = args
        if target.ndim == 2 and target.dtype == logits.dtype and target.shape == logits.shape:
            return dense_chain_elementwise, target, (target, g, None, code, delta, bool(mean)), out, compute_grad
    return None


def chain_call(forward: list[Calls], loss_call: tuple, backward: list[Calls], m: int) -> tuple | None:
    """The chain's one call ``(kernel, args)`` for a step plan's per-layer ``forward`` and
    ``backward`` calls (``backward[i]``: layer i's) and its ``loss_call``, at batch ``m``; None
    when the step is not such a chain or the split would not pay (module docstring)."""
    tasks = _config.GEMM_TILES
    if not ENABLED or tasks < 2 or m < tasks * MIN_TASK_ROWS or not forward or len(forward) != len(backward):
        return None
    K = backend.kernels("cpu")
    found = [only_call(calls, K.dense_forward) for calls in forward] + [
        only_call(calls, K.dense_backward) for calls in backward
    ]
    if any(args is None for args in found):
        return None
    forwards: list[tuple] = [args for args in found[: len(forward)] if args is not None]
    backwards: list[tuple] = [args for args in found[len(forward) :] if args is not None]
    weights = sum(f[1].size for f in forwards)
    if _steps_macs(forwards) < MIN_MACS or weights > min(MAX_WEIGHTS, MAX_WEIGHTS_PER_ROW * m):
        return None
    x = forwards[0][0]
    dtype = x.dtype
    if dtype not in (np.float32, np.float64):
        return None
    for layer, (f, b) in enumerate(zip(forwards, backwards)):
        fx, w, bias, z, y, code, _ = f
        bx, bw, bz, by, _, gz, gx, gw, gb, _, bcode, _, need_grad_x = b
        inp = x if layer == 0 else forwards[layer - 1][4]
        if code >= ROWWISE_CODES or bcode != code or bool(need_grad_x) != (layer > 0):
            return None
        if not all(same_array(a, b) for a, b in ((fx, inp), (bx, fx), (bw, w), (bz, z), (by, y))):
            return None
        arrays = (fx, w, bias, z, y, gz, gx, gw, gb)
        if any(not a.flags.c_contiguous or a.dtype != dtype for a in arrays) or z.shape[0] != m:
            return None
    for layer in range(1, len(backwards)):  # layer l's upstream gradient is layer l + 1's grad_x
        if not same_array(backwards[layer - 1][4], backwards[layer][6]):
            return None
    logits, grad = forwards[-1][4], backwards[-1][4]
    parts = _loss_parts(loss_call, logits, grad, m)
    if parts is None:
        return None
    kernel, y_rows, loss_args, out, compute_grad = parts
    if not (same_array(out, logits) and same_array(loss_args[1], grad) and compute_grad):
        return None
    partials = np.zeros(tasks, np.float64)  # the tasks' loss sums
    loss_args = (loss_args[0], loss_args[1], partials, *loss_args[3:])
    gather = (x, y_rows, NO_ORDER, 0, 0)  # (GATHER_ARGS) the batch as the data set: nothing gathered
    batch = gather if kernel is dense_chain_elementwise else (*gather, y_rows)
    layers = (
        tuple(f[1] for f in forwards),  # ws
        tuple(f[2] for f in forwards),  # bs
        tuple(f[3] for f in forwards),  # zs
        tuple(f[4] for f in forwards),  # ys
        tuple(b[4] for b in backwards),  # gys
        tuple(b[5] for b in backwards),  # gzs
        tuple(b[6] for b in backwards),  # gxs (layer 0's: a placeholder)
        tuple(b[7] for b in backwards),  # gws
        tuple(b[8] for b in backwards),  # gbs
        tuple(np.zeros((tasks, *f[1].shape), dtype) for f in forwards),  # parts_w
        tuple(np.zeros((tasks, *f[2].shape), dtype) for f in forwards),  # parts_b
        np.array([f[5] for f in forwards], np.int64),  # codes
        np.array([f[6] for f in forwards], np.float64),  # alphas
    )
    return kernel, (*batch, x, *loss_args, *layers)


def gathering_call(call: tuple, x: np.ndarray, y: np.ndarray) -> tuple | None:
    """``call`` (a step plan's first) made to gather its batch itself, each thread its own rows,
    when it is a chain call on the plan's input rows ``x`` (batch, features) and target rows ``y``
    (batch, targets): its gather arguments become fit's (:class:`~fastnn._fused.Given` 0 to 4, the
    data set, its targets, the epoch's order and the batch's positions, as
    :func:`~fastnn.kernels.step_feed.gather_batch` takes them); None for any other call. The same
    rows as gather_batch's copy, so the same bits."""
    fn, args = call
    if fn is dense_chain_elementwise:
        inputs, targets = args[GATHER_ARGS], args[GATHER_ARGS + 1]
    elif fn is dense_chain_cross_entropy:
        targets, inputs = args[GATHER_ARGS], args[GATHER_ARGS + 1]
    else:
        return None
    if not (same_array(inputs, x) and same_array(targets, y)):
        return None
    return fn, (*(Given(i) for i in range(GATHER_ARGS)), *args[GATHER_ARGS:])


__all__ = [
    "ENABLED",
    "GATHER_ARGS",
    "MAX_WEIGHTS",
    "MAX_WEIGHTS_PER_ROW",
    "MIN_MACS",
    "MIN_TASK_ROWS",
    "NO_ORDER",
    "chain_call",
    "gathering_call",
]
