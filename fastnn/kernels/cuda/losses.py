"""CUDA twins of kernels/losses.py: loss value and gradient in one pass, block reductions.

Stage 1 runs one thread per row (cross-entropy, softmax fused: the CPU's
:func:`cross_entropy_row` compiled as a device function) or per element (the elementwise losses,
which call the CPU module's scalar :func:`loss_term` / :func:`loss_grad_term`); each thread
accumulates its loss terms in float64, each block sums its threads in shared memory and writes
``partials[block]``. Stage 2 is one block that sums the block partials in a fixed order into
``partials[0]`` (divided for ``mean``). No atomics: the value is reproducible run to run.

``partials`` is float64 device scratch of at least :func:`n_partials` ``(batch)`` entries (the
same size as on the CPU: the grid is bounded by it). Launchers return the loss as a float (one 8-byte copy
to the host), or, with ``sync=False``, return None and leave it in ``partials[0]`` on the device.

Padded steps: with ``lengths`` (batch,) int64 on the device and ``per_step``, as on the CPU, rows
that are not :func:`~fastnn.kernels.masking.row_is_valid` add nothing and get a zero gradient, and
the mean divides by the valid rows; the launcher reads the lengths back to count them (one small
copy). Each stage-1 kernel is built twice by a factory, with and without the test (``masked`` is a
compile-time constant there), so the unmasked launches run the code they ran before.

Ignored labels: cross-entropy and its count take ``ignore_index`` as on the CPU (rows labelled with
it add nothing, get a zero gradient and are not counted; the mean divides by the rows counted, at
least 1). The stage-1 kernel is built a third way for it (``ignoring``, a compile-time constant);
the launcher reads the labels back to count the rows (one small copy, as for ``lengths``).
"""

from __future__ import annotations

import functools
import threading

import numba
import numpy as np
from numba import cuda

from .._scalar import like
from ..losses import (
    BCE_LOGITS,
    CLASSES,
    CROSS_ENTROPY,
    ELEMENTWISE,
    HUBER,
    LOSSES,
    MAE,
    MSE,
    cross_entropy_row,
    loss_grad_term,
    loss_term,
)
from ..losses import n_partials as _cpu_n_partials
from ..masking import row_is_valid, valid_rows
from ._common import BLOCK, block_sum, blocks_for, no_lengths, reduce_partials, typed


def n_partials(batch: int) -> int:
    """Length of the float64 ``partials`` scratch for ``batch`` rows (the CPU's size, which bounds the grid)."""
    return _cpu_n_partials(batch)


def _blocks(batch: int, count: int) -> int:
    """Blocks of a loss launch over ``count`` items of ``batch`` rows: never more than n_partials(batch)."""
    return min(blocks_for(count), _cpu_n_partials(batch))


# The CPU's row rule compiled as a device function: one source for both backends.
_cross_entropy_row = cuda.jit(device=True)(cross_entropy_row.py_func)
_row_is_valid = cuda.jit(device=True)(row_is_valid.py_func)


@functools.cache
def _stage_one(masked: bool, ignoring: bool = False):
    """(cross-entropy rows, elementwise elements) stage-1 kernels; ``masked`` (a compile-time
    constant) skips the rows of padded steps (``lengths``, ``per_step``: see the module's docstring),
    ``ignoring`` (one too) the cross-entropy rows labelled ``ignore_index``."""

    @cuda.jit
    def cross_entropy_rows(logits, labels, grad, partials, scale, compute_grad, lengths, per_step, ignore_index):
        buf = cuda.shared.array(BLOCK, numba.float64)
        tid = cuda.threadIdx.x
        m = logits.shape[0]
        acc = 0.0
        for i in range(cuda.grid(1), m, cuda.gridsize(1)):
            skip = masked and not _row_is_valid(lengths, i, m // lengths.shape[0], per_step)
            if ignoring and labels[i] == ignore_index:
                skip = True
            if skip:
                if compute_grad:
                    for j in range(logits.shape[1]):
                        grad[i, j] = 0.0
            else:
                acc += _cross_entropy_row(logits, labels, grad, scale, compute_grad, i)
        buf[tid] = acc
        total = block_sum(buf, tid)
        if tid == 0:
            partials[cuda.blockIdx.x] = total

    @cuda.jit
    def elementwise_elements(pred, target, grad, partials, code, delta, scale, compute_grad, lengths, per_step):
        buf = cuda.shared.array(BLOCK, numba.float64)
        tid = cuda.threadIdx.x
        m = pred.shape[0]
        k = pred.shape[1]
        acc = 0.0
        for e in range(cuda.grid(1), m * k, cuda.gridsize(1)):
            i = e // k
            j = e - i * k
            if masked and not _row_is_valid(lengths, i, m // lengths.shape[0], per_step):
                if compute_grad:
                    grad[i, j] = 0.0
            else:
                p = pred[i, j]
                t = target[i, j]
                acc += loss_term(code, p, t, delta)
                if compute_grad:
                    grad[i, j] = loss_grad_term(code, p, t, delta, scale)
        buf[tid] = acc
        total = block_sum(buf, tid)
        if tid == 0:
            partials[cuda.blockIdx.x] = total

    return cross_entropy_rows, elementwise_elements


def _rows_counted(m: int, lengths, per_step: int) -> int:
    """The rows a mean divides by: ``m``, or with ``lengths`` (device) the valid steps' rows (at least 1)."""
    if lengths is None:
        return m
    host = lengths.copy_to_host() if hasattr(lengths, "copy_to_host") else lengths
    return max(int(valid_rows(host, m // host.shape[0] // per_step, per_step)), 1)


def _labels_counted(labels, lengths, per_step: int, ignore_index) -> int:
    """The rows a cross-entropy mean divides by: :func:`_rows_counted`, or with ``ignore_index`` the
    rows (of valid steps, with ``lengths``) not labelled with it, at least 1 (labels read back)."""
    m = labels.shape[0]
    if ignore_index is None:
        return _rows_counted(m, lengths, per_step)
    counted = (labels.copy_to_host() if hasattr(labels, "copy_to_host") else np.asarray(labels)) != ignore_index
    if lengths is not None:
        host = lengths.copy_to_host() if hasattr(lengths, "copy_to_host") else np.asarray(lengths)
        per_sample = m // host.shape[0]
        steps = (np.arange(per_sample) // per_step)[None, :]
        counted &= (steps < host[:, None]).reshape(m)
    return max(int(np.count_nonzero(counted)), 1)


def _lengths_arg(lengths):
    """What a launch passes for ``lengths``: the array, or a 1-element placeholder (unmasked kernels)."""
    return no_lengths() if lengths is None else lengths


def cross_entropy_forward_backward(
    logits,
    labels,
    grad,
    partials,
    mean,
    compute_grad,
    lengths=None,
    per_step=1,
    ignore_index=None,
    *,
    sync=True,
    into=None,
):
    """Softmax cross-entropy from logits (m, c) and int64 labels (m,); returns the loss (float64).

    Writes grad = (softmax - onehot) / m (or / 1 for sum) when ``compute_grad``. With ``lengths``
    (batch,) int64 and ``per_step`` only the valid steps' rows count (the module's docstring); with
    ``ignore_index`` (an int) only the rows not labelled with it.
    ``into=(scalars, slot)``: the sum is finished later with a step's other scalars
    (:class:`~fastnn.kernels.cuda._common.StepScalars`); returns None.
    """
    m = logits.shape[0]
    blocks = _blocks(m, m)
    divisor = _labels_counted(labels, lengths, per_step, ignore_index)
    scale = typed(1.0 / divisor if mean else 1.0, logits)
    kernel = _stage_one(lengths is not None, ignore_index is not None)[0]
    ignored = -1 if ignore_index is None else int(ignore_index)  # (not read unless ignoring)
    kernel[blocks, BLOCK](logits, labels, grad, partials, scale, compute_grad, _lengths_arg(lengths), per_step, ignored)
    return reduce_partials(partials, blocks, 1.0 / divisor if mean else 1.0, sync=sync, into=into)


def elementwise_loss(
    pred, target, grad, partials, code, delta, mean, compute_grad, lengths=None, per_step=1, *, sync=True, into=None
):
    """Elementwise loss ``code`` (MSE, MAE, HUBER, BCE_LOGITS) of pred/target (m, k); returns it.

    Mean divides by m * k (torch's convention); grad receives d(loss)/d(pred) when ``compute_grad``.
    With ``lengths`` (batch,) int64 and ``per_step`` only the valid steps' rows count (mean: / their
    elements). ``into``: as :func:`cross_entropy_forward_backward`'s.
    """
    m, k = pred.shape[0], pred.shape[1]
    blocks = _blocks(m, m * k)
    count = _rows_counted(m, lengths, per_step) * k
    scale = 1.0 / count if mean else 1.0  # float64, as on the CPU
    kernel = _stage_one(lengths is not None)[1]
    kernel[blocks, BLOCK](
        pred, target, grad, partials, code, typed(delta, pred), scale, compute_grad, _lengths_arg(lengths), per_step
    )
    return reduce_partials(partials, blocks, 1.0 / count if mean else 1.0, sync=sync, into=into)


@cuda.jit
def _accuracy_rows(logits, labels, targets, partials, binary, lengths, per_step, ignoring, ignore_index):
    """Per-block counts (as float64, exact below 2**53) of rows whose argmax == label, or (binary)
    whose every element has (logit > 0) == (target > 0.5); with ``per_step`` > 0 the valid steps'
    rows only (``lengths``; per_step 0: every row, the test once per launch in effect); with
    ``ignoring``, the rows not labelled ``ignore_index`` only."""
    buf = cuda.shared.array(BLOCK, numba.float64)
    tid = cuda.threadIdx.x
    m = logits.shape[0]
    c = logits.shape[1]
    acc = 0.0
    if binary:
        zero = like(0.0, logits)
        half = like(0.5, targets)
        for i in range(cuda.grid(1), m, cuda.gridsize(1)):
            if per_step > 0 and not _row_is_valid(lengths, i, m // lengths.shape[0], per_step):
                continue
            j = 0
            while j < c and (logits[i, j] > zero) == (targets[i, j] > half):
                j += 1
            if j == c:
                acc += 1.0
    else:
        for i in range(cuda.grid(1), m, cuda.gridsize(1)):
            if per_step > 0 and not _row_is_valid(lengths, i, m // lengths.shape[0], per_step):
                continue
            if ignoring and labels[i] == ignore_index:
                continue
            best = 0
            for j in range(1, c):
                if logits[i, j] > logits[i, best]:
                    best = j
            if best == labels[i]:
                acc += 1.0
    buf[tid] = acc
    total = block_sum(buf, tid)
    if tid == 0:
        partials[cuda.blockIdx.x] = total


_SCRATCH = threading.local()


def _scratch(name: str, size: int, dtype: str):
    """Device scratch of at least ``size`` elements, kept per thread and device: the counts
    below sync before they return, so one buffer serves every call (a fit counted its accuracy
    with an allocation per step)."""
    key = (name, getattr(cuda.get_current_device(), "id", 0))  # the simulator's device has no id
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    buf = buffers.get(key)
    if buf is None or buf.shape[0] < size:
        buf = buffers[key] = cuda.device_array(max(size, 1), dtype=dtype)
    return buf


def _counted(partials, blocks: int, into):
    """The count of an accuracy launch's ``blocks`` partials: an int (one copy, which waits), or
    None with its second stage queued into ``into=(scalars, slot)`` (read with the step's scalars)."""
    if into is not None:
        reduce_partials(partials, blocks, into=into)
        return None
    return int(reduce_partials(partials, blocks))


def _count_partials(blocks: int, partials, into):
    """The partials scratch of a count: ``partials`` when given; else a per-thread buffer, its own
    for a queued count (``into``: read later, with the step's scalars, so no other count may reuse it)."""
    if partials is not None:
        return partials
    return _scratch("partials" if into is None else "queued_partials", blocks, "float64")


def accuracy_count(logits, labels, lengths=None, per_step=1, ignore_index=None, *, partials=None, into=None):
    """Rows of logits (m, c) whose argmax (first maximum) equals labels[i]; an int (syncs).

    With ``lengths`` (batch,) int64 and ``per_step``, the valid steps' rows only; with
    ``ignore_index`` (an int), the rows not labelled with it only. ``partials``:
    float64 device scratch of at least blocks_for(m) elements, one per block of the launch (a
    per-thread buffer when omitted). ``into=(scalars, slot)`` (a ``_common.StepScalars``): nothing
    is copied or waited for, the count's second stage is queued into that slot, read (as a float64,
    exact) with the step's other scalars; returns None.
    """
    m = logits.shape[0]
    blocks = blocks_for(m)
    partials = _count_partials(blocks, partials, into)
    steps = 0 if lengths is None else per_step
    ignoring, ignored = ignore_index is not None, -1 if ignore_index is None else int(ignore_index)
    _accuracy_rows[blocks, BLOCK](
        logits, labels, logits, partials, False, _lengths_arg(lengths), steps, ignoring, ignored
    )
    return _counted(partials, blocks, into)


def binary_accuracy_count(logits, targets, lengths=None, per_step=1, *, partials=None, into=None):
    """Rows of logits, targets (m, k) whose every (logit > 0) equals (target > 0.5); an int (syncs).

    ``lengths``, ``per_step``, ``partials`` and ``into``: as :func:`accuracy_count`'s.
    """
    blocks = blocks_for(logits.shape[0])
    partials = _count_partials(blocks, partials, into)
    steps = 0 if lengths is None else per_step
    no_labels = _scratch("no_labels", 1, "int64")
    _accuracy_rows[blocks, BLOCK](logits, no_labels, targets, partials, True, _lengths_arg(lengths), steps, False, -1)
    return _counted(partials, blocks, into)


__all__ = [
    "BCE_LOGITS",
    "CLASSES",
    "CROSS_ENTROPY",
    "ELEMENTWISE",
    "HUBER",
    "LOSSES",
    "MAE",
    "MSE",
    "accuracy_count",
    "binary_accuracy_count",
    "cross_entropy_forward_backward",
    "elementwise_loss",
    "n_partials",
]
