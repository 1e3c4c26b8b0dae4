"""Loss functions: the loss value and its gradient w.r.t. the prediction in one pass.

Each loss's per-element value and derivative is written once as a scalar function
(:func:`loss_value`, :func:`loss_grad`, evaluated in float64 by :func:`loss_term` /
:func:`loss_grad_term`), and cross-entropy's row once as :func:`cross_entropy_row`; the CPU
kernels below and the CUDA kernels call them. The loss is accumulated in float64, in fixed chunks of
``REDUCTION_CHUNK_ROWS`` rows whose partial sums go to a caller-owned ``partials`` buffer of
shape ``(n,)`` float64, ``n >= n_partials(batch)`` (only the first ``n_partials(batch)``
entries are used), and are combined in chunk order, so the value is
bit-identical on any number of threads. Chunks run serially below ``PARALLEL_MIN_ELEMENTS``
elements and over ``prange`` above it.

Reductions follow torch: ``mean`` divides by the batch size for cross-entropy and by the
total element count ``m * k`` for the elementwise losses; ``sum`` does not divide. The
gradient buffer has the prediction's shape and dtype and receives d(loss)/d(prediction) for
the chosen reduction; with ``compute_grad=False`` (evaluation) it is not touched.

Padded steps (Keras' masking): given ``lengths`` (batch,) int64 and ``per_step``, the loss and
count kernels take the rows as a per-step output's (:mod:`fastnn.kernels.masking`: row ``i`` is a
valid step when :func:`~fastnn.kernels.masking.row_is_valid`) and leave the other rows out: they
add nothing, their gradient rows are 0, and ``mean`` divides by the valid rows (times ``k`` for
the elementwise losses), Keras 3's ``sum(mask * loss) / sum(mask)``; a batch without valid rows
gives 0. Without ``lengths`` (the default, None) Numba prunes the test at compile time: the
unmasked kernels are the code they were.

Ignored labels (torch's ``ignore_index``, Keras 3's ``ignore_class``): the cross-entropy kernels and
their counts take ``ignore_index`` (an int; None, the default, pruned at compile time like
``lengths``). A row whose label equals it is left out as a padded row is: it adds nothing, its
gradient row is 0, its label never indexes the logits, and ``mean`` divides by the rows counted
(valid and not ignored; their weights' sum when weighted); a batch with none gives 0 and a zero
gradient (torch gives nan there; Keras 0). Both apply together with ``lengths``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import carray, njit, prange, types
from numba.extending import overload

from .._config import JIT, JIT_EXACT, JIT_INLINE, JIT_PARALLEL, PARALLEL_MIN_ELEMENTS, REDUCTION_CHUNK_ROWS
from ._scalar import halved_difference, is_finite, like, n_chunks, nonneg, sub_shifted, wide
from .activations import sigmoid
from .masking import row_is_valid, valid_rows
from .views import _stack_bytes, pointer

MSE, MAE, HUBER, BCE_LOGITS, CROSS_ENTROPY = range(5)

#: kind of a loss: "elementwise" (prediction and target of the same shape (m, k), float) or
#: "classes" (logits (m, c) and int64 class labels (m,))
ELEMENTWISE, CLASSES = "elementwise", "classes"

#: name -> (code, kind)
LOSSES = {
    "mse": (MSE, ELEMENTWISE),
    "mae": (MAE, ELEMENTWISE),
    "huber": (HUBER, ELEMENTWISE),
    "binary_cross_entropy": (BCE_LOGITS, ELEMENTWISE),
    "cross_entropy": (CROSS_ENTROPY, CLASSES),
}


def n_partials(batch: int) -> int:
    """Length of the float64 ``partials`` scratch buffer the loss kernels need for ``batch`` rows."""
    return max(1, -(-batch // REDUCTION_CHUNK_ROWS))


# ---------------------------------------------------------------------------- scalar rules


@njit(**JIT_INLINE)
def loss_value(code, p, t, delta):
    """Per-element loss of prediction ``p`` against target ``t`` (elementwise losses).

    MSE (p - t)^2; MAE |p - t|; HUBER 0.5 d^2 if |d| < delta else delta (|d| - delta/2);
    BCE_LOGITS (p is a logit) max(p, 0) - p t + log1p(exp(-|p|)), stable for any |p|.
    """
    zero = like(0.0, p)
    half = like(0.5, p)
    if code == BCE_LOGITS:
        return max(p, zero) - p * t + math.log1p(math.exp(-abs(p)))
    d = p - t
    if code == MSE:
        return d * d
    if code == MAE:
        return abs(d)
    ad = abs(d)
    if ad < delta:
        return half * d * d
    return delta * (ad - half * delta)


@njit(**JIT_INLINE)
def loss_grad(code, p, t, delta):
    """d(loss_value)/dp; MAE's derivative at p == t is 0 and Huber's is clamp(d, -delta, delta) (as torch)."""
    zero = like(0.0, p)
    one = like(1.0, p)
    if code == BCE_LOGITS:
        return sigmoid(p) - t
    d = p - t
    if code == MSE:
        return like(2.0, p) * d
    if code == MAE:
        if d > zero:
            return one
        if d < zero:
            return -one
        return zero
    return min(max(d, -delta), delta)


# ---------------------------------------------------------------------------- chunk bodies


@njit(**JIT_INLINE)
def _chunk_rows(m, chunk):
    r0 = chunk * REDUCTION_CHUNK_ROWS
    return r0, min(r0 + REDUCTION_CHUNK_ROWS, m)


@njit(**JIT_INLINE)
def loss_term(code, p, t, delta):
    """loss_value of one element in float64 (float32 differences square past the float32 range).

    Where p - t overflows float64 itself, Huber's linear branch is formed from p/2 - t/2, so it
    stays finite while delta * |p - t| is."""
    wp, wt, wd = wide(p), wide(t), wide(delta)
    value = loss_value(code, wp, wt, wd)
    if code == HUBER and not is_finite(value):
        value = (wd + wd) * (abs(halved_difference(wp, wt)) - 0.25 * wd)
    return value


@njit(**JIT_INLINE)
def loss_grad_term(code, p, t, delta, scale):
    """scale * loss_grad of one element, computed in float64 and returned in ``p``'s dtype.

    ``scale`` is float64 (1 / count for the mean); float64 keeps e.g. 2 (p - t) / count finite for
    float32 p = 3e38, t = -3e38, and MSE's gradient is formed from p/2 - t/2 where p - t overflows
    float64."""
    wp, wt = wide(p), wide(t)
    g = scale * loss_grad(code, wp, wt, wide(delta))
    if code == MSE and not is_finite(g):
        g = (4.0 * scale) * halved_difference(wp, wt)
    return like(g, p)


@njit(**JIT_INLINE)
def cross_entropy_row(logits, labels, grad, scale, compute_grad, i):
    """Row ``i``'s log-sum-exp(row) - row[label] (float64); grad[i] = scale (softmax - onehot).

    The CUDA twin's row rule: its kernel compiles this ``py_func`` as a device function (arrays
    cannot enter @njit code from the simulator). The CPU kernels take their rows in blocks
    (:func:`_cross_entropy_block`: the same rule, with float32's exps vectorised). The loss term is
    formed in float64, so logits near +-3e38 in float32 give a finite loss.
    """
    c = logits.shape[1]
    row_max = logits[i, 0]
    for j in range(1, c):
        row_max = max(row_max, logits[i, j])
    s = like(0.0, logits)
    if compute_grad:
        for j in range(c):
            e = math.exp(logits[i, j] - row_max)
            grad[i, j] = e
            s += e
    else:
        for j in range(c):
            s += math.exp(logits[i, j] - row_max)
    label = labels[i]
    if compute_grad:
        inv = scale / s
        for j in range(c):
            grad[i, j] *= inv
        grad[i, label] -= scale
    return sub_shifted(wide(math.log(s)), wide(logits[i, label]), wide(row_max))


@njit(**JIT_INLINE)
def _left_out(grad, i, compute_grad):
    """A row left out of the loss: its gradient row zeroed (with ``compute_grad``); True."""
    if compute_grad:
        for j in range(grad.shape[1]):
            grad[i, j] = like(0.0, grad)
    return True


@njit(**JIT_INLINE)
def _padded_row(lengths, i, m, per_step, grad, compute_grad):
    """Whether row ``i`` of ``m`` is a padded step (not :func:`row_is_valid`); its gradient row
    zeroed then (with ``compute_grad``)."""
    if row_is_valid(lengths, i, m // lengths.shape[0], per_step):
        return False
    return _left_out(grad, i, compute_grad)


@njit(**JIT_INLINE)
def _rows_counted(m, lengths, per_step):
    """The rows a mean divides by: all ``m``; with ``lengths`` (None: pruned) the valid steps' rows,
    at least 1 (no valid row: the loss and its gradient are 0, Keras' divide_no_nan)."""
    if lengths is None:
        return m
    per_sample = m // lengths.shape[0]
    return max(valid_rows(lengths, per_sample // per_step, per_step), 1)


@njit(**JIT_INLINE)
def _ignored_row(labels, i, ignore_index, grad, compute_grad):
    """Whether row ``i``'s label is ``ignore_index`` (None: never; the test pruned at compile time);
    its gradient row zeroed then (with ``compute_grad``)."""
    if ignore_index is None:
        return False
    if labels[i] != ignore_index:
        return False
    return _left_out(grad, i, compute_grad)


@njit(**JIT_INLINE)
def _labels_counted(m, labels, lengths, per_step, ignore_index):
    """The rows a cross-entropy mean divides by: :func:`_rows_counted`, or with ``ignore_index``
    (None: pruned) the rows (of valid steps, with ``lengths``) whose label is not ``ignore_index``,
    at least 1 (none counted: the loss and its gradient are 0)."""
    if ignore_index is None:
        return _rows_counted(m, lengths, per_step)
    n = 0
    for i in range(m):
        if labels[i] == ignore_index:
            continue
        if lengths is not None:
            if not row_is_valid(lengths, i, m // lengths.shape[0], per_step):
                continue
        n += 1
    return max(n, 1)


_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
#: below this a float32 exp is 0 (its smallest subnormal is 2**-149; e**-104 < 2**-150)
_EXP32_ZERO_BELOW = -104.0


def shifted_exp(v):
    """``exp(v)`` of a logit minus its row's maximum (``v`` <= 0, -inf or NaN), in ``v``'s dtype.

    float32: a polynomial in float64 that LLVM vectorises (libm's ``expf`` is a call per element:
    2,000 of them were half of a 200 x 10 cross-entropy's 11.6 us), within 1 ulp of the correctly
    rounded value (0.02% of float32 inputs in [-104, 0] differ from it, by 1 ulp), 0 below -104, NaN
    for NaN. float64: ``math.exp``. For compiled code (an overload); here in Python, ``math.exp``."""
    return math.exp(v)


@overload(shifted_exp, jit_options=dict(JIT_INLINE))
def _shifted_exp_overload(v):
    if v != types.float32:
        return lambda v: math.exp(v)

    def impl(v):
        t = max(np.float64(v), _EXP32_ZERO_BELOW)
        n = math.floor(t * _LOG2E + 0.5)  # v = n ln2 + r, |r| <= ln2 / 2: exact enough in float64
        r = t - n * _LN2
        # Taylor to r**8: relative error < 2e-10, far below float32's half ulp (6e-8)
        p = 1.0 + r * (
            1.0 + r * (0.5 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r * (1 / 5040 + r / 40320))))))
        )
        e = p * np.int64((np.int64(n) + 1023) << 52).view(np.float64)  # p * 2**n, n in [-150, 0]
        if v != v:
            return v
        if v < _EXP32_ZERO_BELOW:
            return np.float32(0.0)
        return np.float32(e)

    return impl


#: the row maxima of a block of rows (at most REDUCTION_CHUNK_ROWS), on the kernel's stack
_row_max_buffer = _stack_bytes(REDUCTION_CHUNK_ROWS * 8)


@njit(**JIT_INLINE)  # inlined, as _cross_entropy_block: no NRT refcounts on the arrays a call per block
def _exp_rows(buf, lo, hi):
    """buf[lo:hi] = shifted_exp(buf[lo:hi]): one flat loop when the rows are contiguous (a row of 10
    logits is too short for a loop of vectors of its own), else row by row (the same values)."""
    c = buf.shape[1]
    itemsize = buf.itemsize
    if buf.strides[1] == itemsize and buf.strides[0] == c * itemsize:
        flat = carray(pointer(buf.ctypes.data + lo * buf.strides[0]), (hi - lo) * c, buf.dtype)
        for q in range(nonneg(flat.size)):
            flat[q] = shifted_exp(flat[q])
        return
    for i in range(lo, hi):
        for j in range(c):
            buf[i, j] = shifted_exp(buf[i, j])


@njit(**JIT_INLINE)  # inlined into its chunk: a call with these arrays cost NRT refcounts (200 x 10: 3.9 -> 3.6 us)
def _cross_entropy_block(logits, labels, buf, b0, scale, compute_grad, r0, r1, out, lengths, per_step, ignore_index):
    """Rows ``[r0, r1)`` (at most REDUCTION_CHUNK_ROWS) of softmax cross-entropy: the sum in row
    order of the counted rows' log-sum-exp(row) - row[label] (float64), each also in ``out[i]``
    (None: not kept; 0 for a row left out). ``buf`` holds the exps: row ``i`` at ``buf[i - b0]``;
    it is the gradient (``b0`` 0) with ``compute_grad``, which becomes scale (softmax - onehot),
    0 on rows left out (padded with ``lengths``, labelled ``ignore_index``: None, pruned); else scratch.

    The CPU's row rule (the CUDA twin keeps :func:`cross_entropy_row`): the row maxima, every shifted
    logit, their exps in one flat vectorised pass (:func:`shifted_exp`), then per row the sum of its
    exps in ``logits``' dtype, the loss and the gradient. Every CPU kernel takes its rows here, so
    they agree bit for bit (the weighted kernels' base gradient, the values with and without gradient).
    """
    m, c = logits.shape
    row_max = carray(pointer(_row_max_buffer(logits)), REDUCTION_CHUNK_ROWS, logits.dtype)
    for i in range(r0, r1):
        top = logits[i, 0]
        for j in range(1, c):
            top = max(top, logits[i, j])
        row_max[i - r0] = top
    c_u = nonneg(c)
    for i in range(nonneg(r0), nonneg(r1)):  # (unsigned bounds: no wraparound, see dense._bias_activate_block)
        top = row_max[i - r0]
        bi = i - b0
        for j in range(c_u):
            buf[bi, j] = logits[i, j] - top
    _exp_rows(buf, r0 - b0, r1 - b0)
    total = 0.0
    for i in range(r0, r1):
        skip = False
        if lengths is not None:
            skip = _padded_row(lengths, i, m, per_step, buf, compute_grad)  # buf is grad when zeroed
        if not skip:
            skip = _ignored_row(labels, i, ignore_index, buf, compute_grad)
        if skip:
            if out is not None:
                out[i] = 0.0
            continue
        bi = i - b0
        s = like(0.0, logits)
        for j in range(c):
            s += buf[bi, j]
        label = labels[i]
        if compute_grad:
            inv = scale / s
            zero = like(0.0, logits)
            hot = nonneg(label)
            for j in range(c_u):  # the label's scale in the loop: one fused multiply-add wherever it is compiled
                buf[bi, j] = buf[bi, j] * inv - (scale if j == hot else zero)
        loss = sub_shifted(wide(math.log(s)), wide(logits[i, label]), wide(row_max[i - r0]))
        total += loss
        if out is not None:
            out[i] = loss
    return total


@njit(**JIT)
def cross_entropy_grad_rows(logits, labels, grad, scale, r0, r1):
    """Softmax cross-entropy of rows ``[r0, r1)``: the sum of their losses (float64), in blocks of
    at most REDUCTION_CHUNK_ROWS rows from r0, and their gradient rows, scale (softmax - onehot),
    by :func:`_cross_entropy_block`'s row rule (a training step's rows split over threads)."""
    total = 0.0
    for s0 in range(r0, r1, REDUCTION_CHUNK_ROWS):
        s1 = min(s0 + REDUCTION_CHUNK_ROWS, r1)
        total += _cross_entropy_block(logits, labels, grad, 0, scale, True, s0, s1, None, None, 1, None)
    return total


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _cross_entropy_chunk(logits, labels, grad, scale, compute_grad, chunk, lengths, per_step, ignore_index, out=None):
    """Sum over one row chunk of the rows' losses (:func:`_cross_entropy_block`, float64), each also in
    ``out`` (None: not kept); padded rows skipped with ``lengths``, rows labelled ``ignore_index`` with
    it (None: no test, pruned at compile time). Without ``compute_grad`` the exps go to scratch:
    ``grad`` is not touched."""
    r0, r1 = _chunk_rows(logits.shape[0], chunk)
    if compute_grad:
        return _cross_entropy_block(
            logits, labels, grad, r0 - r0, scale, True, r0, r1, out, lengths, per_step, ignore_index
        )
    scratch = np.empty((r1 - r0, logits.shape[1]), logits.dtype)
    return _cross_entropy_block(logits, labels, scratch, r0, scale, False, r0, r1, out, lengths, per_step, ignore_index)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _elementwise_chunk(pred, target, grad, code, delta, scale, compute_grad, chunk, lengths, per_step):
    """Sum over one row chunk of loss_term (float64); grad = loss_grad_term (scale * loss_grad);
    padded rows skipped with ``lengths`` (None: no test, pruned at compile time)."""
    r0, r1 = _chunk_rows(pred.shape[0], chunk)
    return elementwise_rows(pred, target, grad, code, delta, scale, compute_grad, r0, r1, lengths, per_step)


@njit(**JIT_INLINE)
def elementwise_rows(pred, target, grad, code, delta, scale, compute_grad, r0, r1, lengths=None, per_step=1):
    """:func:`_elementwise_chunk` on rows ``[r0, r1)``: their loss_term sum in row order (float64)
    and, with ``compute_grad``, their gradient rows."""
    m = pred.shape[0]
    k = pred.shape[1]
    total = 0.0
    for i in range(r0, r1):
        if lengths is not None:
            if _padded_row(lengths, i, m, per_step, grad, compute_grad):
                continue
        for j in range(k):
            total += loss_term(code, pred[i, j], target[i, j], delta)
        if compute_grad:
            for j in range(k):
                grad[i, j] = loss_grad_term(code, pred[i, j], target[i, j], delta, scale)
    return total


@njit(**JIT_INLINE)
def _combine(partials, chunks):
    """Sum of partials[0:chunks] in chunk order."""
    total = 0.0
    for c in range(chunks):
        total += partials[c]
    return total


# ---------------------------------------------------------------------------- kernels


@njit(**JIT_PARALLEL)
def cross_entropy_forward_backward(
    logits, labels, grad, partials, mean, compute_grad, lengths=None, per_step=1, ignore_index=None
):
    """Softmax cross-entropy from logits; returns the loss (float64) and writes its gradient.

    logits (m, c) float32/float64, labels (m,) int64 in [0, c), grad (m, c) of the logits'
    dtype (ignored when ``compute_grad`` is False), partials (>= n_partials(m),) float64 scratch.
    Loss = sum_i [log sum_j exp(logits[i, j]) - logits[i, labels[i]]], divided by m if
    ``mean``; grad = (softmax(logits) - onehot(labels)) / m (or / 1 for sum). With ``lengths``
    (batch,) int64 and ``per_step``, only the rows of valid steps count (the module's docstring):
    the sum over them, divided by their number if ``mean``; other rows' gradient is 0. With
    ``ignore_index`` (an int), rows labelled with it are left out the same way (the module's docstring).
    """
    m, c = logits.shape
    chunks = n_chunks(m, REDUCTION_CHUNK_ROWS)
    divisor = _labels_counted(m, labels, lengths, per_step, ignore_index)
    scale = like(1.0 / divisor if mean else 1.0, logits)
    if m * c < PARALLEL_MIN_ELEMENTS:
        for ch in range(chunks):
            partials[ch] = _cross_entropy_chunk(
                logits, labels, grad, scale, compute_grad, ch, lengths, per_step, ignore_index
            )
    else:
        for ch_u in prange(chunks):
            ch = np.int64(ch_u)  # prange indices are uint64; int64 like the serial twin
            partials[ch] = _cross_entropy_chunk(
                logits, labels, grad, scale, compute_grad, ch, lengths, per_step, ignore_index
            )
    total = _combine(partials, chunks)
    return total / divisor if mean else total


@njit(**JIT_PARALLEL)
def elementwise_loss(pred, target, grad, partials, code, delta, mean, compute_grad, lengths=None, per_step=1):
    """Elementwise loss ``code`` (MSE, MAE, HUBER, BCE_LOGITS); returns the loss (float64), writes its gradient.

    pred, target, grad (m, k) of one dtype float32/float64 (for BCE_LOGITS pred holds logits
    and target probabilities in [0, 1]); grad is ignored when ``compute_grad`` is False;
    partials (>= n_partials(m),) float64 scratch; ``delta`` is Huber's threshold (unused by
    the others). Mean reduction divides by m * k (torch's convention). With ``lengths`` (batch,)
    int64 and ``per_step``, only the rows of valid steps count (the module's docstring): mean
    divides by their elements (valid rows * k); other rows' gradient is 0.
    """
    m, k = pred.shape
    chunks = n_chunks(m, REDUCTION_CHUNK_ROWS)
    d = like(delta, pred)
    count = _rows_counted(m, lengths, per_step) * k
    scale = 1.0 / count if mean else 1.0
    if m * k < PARALLEL_MIN_ELEMENTS:
        for ch in range(chunks):
            partials[ch] = _elementwise_chunk(pred, target, grad, code, d, scale, compute_grad, ch, lengths, per_step)
    else:
        for ch_u in prange(chunks):
            ch = np.int64(ch_u)  # prange indices are uint64; int64 like the serial twin
            partials[ch] = _elementwise_chunk(pred, target, grad, code, d, scale, compute_grad, ch, lengths, per_step)
    total = _combine(partials, chunks)
    return total / count if mean else total


@njit(**JIT)
def cross_entropy_rows(logits, labels, out):
    """Per-sample softmax cross-entropy: out[i] = log sum_j exp(logits[i, j]) - logits[i, labels[i]].

    logits (m, c) float32/float64, labels (m,) int64 in [0, c), out (m,) float64 (written). The
    row rule of :func:`cross_entropy_forward_backward`, unreduced (sample weights, per-sample
    diagnostics); serial, not a training-step kernel.
    """
    m, c = logits.shape
    scratch = np.empty((min(m, REDUCTION_CHUNK_ROWS), c), logits.dtype)
    zero = like(0.0, logits)
    for r0 in range(0, m, REDUCTION_CHUNK_ROWS):
        r1 = min(r0 + REDUCTION_CHUNK_ROWS, m)
        _cross_entropy_block(logits, labels, scratch, r0, zero, False, r0, r1, out, None, 1, None)


@njit(**JIT)
def elementwise_loss_rows(pred, target, out, code, delta):
    """Per-sample elementwise loss: out[i] = sum_j loss_term(code, pred[i, j], target[i, j], delta).

    pred, target (m, k) of one dtype float32/float64, out (m,) float64 (written); the terms of
    :func:`elementwise_loss`, summed per row instead of over the batch (serial).
    """
    d = like(delta, pred)
    for i in range(pred.shape[0]):
        total = 0.0
        for j in range(pred.shape[1]):
            total += loss_term(code, pred[i, j], target[i, j], d)
        out[i] = total


@njit(**JIT)
def accuracy_count(logits, labels, lengths=None, per_step=1, ignore_index=None):
    """Number of rows i of logits (m, c) whose argmax (first maximum) equals labels[i] (int64);
    with ``lengths`` (batch,) int64 and ``per_step``, of the valid steps' rows only; with
    ``ignore_index``, of the rows not labelled with it (module docstring)."""
    m = logits.shape[0]
    hits = 0
    for i in range(m):
        if lengths is not None:
            if not row_is_valid(lengths, i, m // lengths.shape[0], per_step):
                continue
        if ignore_index is not None:
            if labels[i] == ignore_index:
                continue
        if row_argmax(logits, i) == labels[i]:
            hits += 1
    return hits


@njit(**JIT_INLINE)
def row_argmax(logits, i):
    """The column of row ``i``'s first maximum; NaN entries never win, except a NaN in column 0,
    which gives 0 (the rule of a scan that moves on a strictly greater value only).

    Two branch-free passes (the maximum, then the first column equal to it): the scan's branch on
    each value mispredicted on fresh logits (200 x 10 float32, a new batch each call: 3.8 -> 1.2 us)."""
    c = logits.shape[1]
    top = logits[i, 0]
    for j in range(1, c):
        v = logits[i, j]
        top = v if v > top else top  # NaN never replaces top (maxss)
    first = c
    for j in range(c):
        first = min(first, j if logits[i, j] == top else c)
    return first if first < c else 0  # none equal: top is a NaN from column 0


@njit(**JIT)
def binary_accuracy_count(logits, targets, lengths=None, per_step=1):
    """Number of rows i where (logits[i, j] > 0) equals (targets[i, j] > 0.5) for every j.

    logits, targets (m, k). With k = 1 the samples classified right; with k > 1 the multi-label
    exact-match (subset accuracy) count, sklearn's ``accuracy_score``. With ``lengths`` (batch,)
    int64 and ``per_step``, the valid steps' rows only (module docstring).
    """
    m, k = logits.shape
    zero = like(0.0, logits)
    half = like(0.5, targets)
    hits = 0
    for i in range(m):
        if lengths is not None:
            if not row_is_valid(lengths, i, m // lengths.shape[0], per_step):
                continue
        j = 0
        while j < k and (logits[i, j] > zero) == (targets[i, j] > half):
            j += 1
        if j == k:
            hits += 1
    return hits


# ---------------------------------------------------------------------------- sample weights
# Weighted targets are float64 rows (m, t + 1): the base target (a label, or k values), then the
# row's weight (fastnn.losses.weighted_targets; a row is a sample, or one position of a per-step
# output). "mean" is sum_i w_i l_i / (sum_i w_i * per_sample) (per_sample: 1 for cross-entropy, k for
# elementwise losses); the gradient is the base kernel's (mean: scale 1 / m, or 1 / (m k)) times
# w_i m / sum_i w_i per row, cast to the gradient's dtype; "sum": the base's "sum" gradient times
# w_i. A batch of zero weights contributes 0. With ``lengths`` (batch,) int64 and ``per_step`` (the
# masked kernels above) the sums run over the rows of valid steps only and m is their number: a
# padded row's target is not read, its weight not summed, its gradient row is 0 (torch's weighted
# mean over the counted targets, which the unweighted masked mean is at unit weights, bit for bit).


@njit(**JIT_EXACT)  # no reassoc: the order of the additions is the point
def _block_sum(target, lo, n):
    """NumPy's pairwise-sum leaf: target[lo:lo + n, -1] (n <= 128) by 8 accumulators (n >= 8)."""
    if n < 8:
        total = 0.0
        for i in range(lo, lo + n):
            total += target[i, -1]
        return total
    w = target.shape[1] - 1
    r0, r1, r2, r3 = target[lo, w], target[lo + 1, w], target[lo + 2, w], target[lo + 3, w]
    r4, r5, r6, r7 = target[lo + 4, w], target[lo + 5, w], target[lo + 6, w], target[lo + 7, w]
    i = 8
    while i < n - n % 8:
        r0 += target[lo + i, w]
        r1 += target[lo + i + 1, w]
        r2 += target[lo + i + 2, w]
        r3 += target[lo + i + 3, w]
        r4 += target[lo + i + 4, w]
        r5 += target[lo + i + 5, w]
        r6 += target[lo + i + 6, w]
        r7 += target[lo + i + 7, w]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        total += target[lo + i, w]
        i += 1
    return total


@njit(**JIT_EXACT)
def _pairwise_half(n):
    """Where NumPy's pairwise sum splits n > 128 values: half of n, down to a multiple of 8."""
    half = n // 2
    return half - half % 8


@njit(**JIT_EXACT)
def weight_sum(target, lo, n):
    """NumPy's pairwise sum of the weights target[lo:lo + n, -1] (float64), bit for bit what
    ``target[lo:lo + n, -1].sum()`` gives: blocks of <= 128 summed by :func:`_block_sum`, the two
    halves of a larger range added (left + right). Walked with an explicit stack: a recursive
    kernel, cached, left its callers an unresolved symbol ("LLVM ERROR: Symbol not found")."""
    if n <= 128:
        return _block_sum(target, lo, n)
    starts, counts = np.empty(64, np.int64), np.empty(64, np.int64)  # depth <= log2(n)
    stage, left = np.zeros(64, np.int64), np.empty(64)  # stage 1: left half pending, 2: right half
    depth = 0
    starts[0], counts[0] = lo, n
    while True:
        if counts[depth] > 128:  # descend into the left half
            stage[depth] = 1
            starts[depth + 1], counts[depth + 1] = starts[depth], _pairwise_half(counts[depth])
            depth += 1
            continue
        value = _block_sum(target, starts[depth], counts[depth])
        depth -= 1
        while depth >= 0 and stage[depth] == 2:  # a right half done: its range's sum, upwards
            value = left[depth] + value
            depth -= 1
        if depth < 0:
            return value
        left[depth], stage[depth] = value, 2  # a left half done: the right half next
        half = _pairwise_half(counts[depth])
        starts[depth + 1], counts[depth + 1] = starts[depth] + half, counts[depth] - half
        depth += 1


@njit(**JIT_EXACT)
def _weigh(m, target, grad, rows, per_sample, mean, compute_grad):
    """The weighted loss of ``m`` rows from their losses ``rows`` (>= m,) float64; with
    ``compute_grad``, each row of the base gradient ``grad`` (m, c) scaled by its weight (see above)."""
    w = target.shape[1] - 1
    value = 0.0
    for i in range(m):
        value += rows[i] * target[i, w]
    factor, divisor = 1.0, 1.0
    if mean:
        total = 0.0 + weight_sum(target, 0, m)  # 0.0 +: NumPy's reduction starts from its identity
        if total == 0.0:
            total = np.inf  # a batch of zero weights contributes nothing
        factor, divisor = m / total, total * per_sample
    if compute_grad:
        for i in range(m):
            scale = like(target[i, w] * factor, grad)
            for j in range(grad.shape[1]):
                grad[i, j] *= scale
    return value / divisor


@njit(**JIT_INLINE)
def _row_counted(i, m, lengths, per_step, labels, ignore_index):
    """Whether row ``i`` of ``m`` counts: a valid step (``lengths`` None: every row) whose label is not
    ``ignore_index`` (None: every label; both tests pruned at compile time when None)."""
    if lengths is not None:
        if not row_is_valid(lengths, i, m // lengths.shape[0], per_step):
            return False
    if ignore_index is not None:
        if labels[i] == ignore_index:
            return False
    return True


@njit(**JIT_EXACT)
def _weigh_valid(
    m, target, grad, rows, per_sample, mean, compute_grad, lengths, per_step, labels=None, ignore_index=None
):
    """:func:`_weigh` over the rows of valid steps only (padded rows: loss 0, gradient row 0 already);
    with ``ignore_index`` (``lengths`` may then be None), also only over the rows whose ``labels`` are
    not ``ignore_index`` (their loss 0, gradient row 0 already, weight not summed).

    The valid rows' weights are gathered into ``rows`` in place once their losses are read (row n of
    the gathered ones <= row i being read), so their sum is NumPy's pairwise sum of exactly them:
    the value :func:`_weigh` gives for the valid rows taken out of the batch (``evaluate``'s way)."""
    w = target.shape[1] - 1
    value = 0.0
    n = 0
    for i in range(m):
        if _row_counted(i, m, lengths, per_step, labels, ignore_index):
            value += rows[i] * target[i, w]
            rows[n] = target[i, w]
            n += 1
    factor, divisor = 1.0, 1.0
    if mean:
        total = 0.0 + weight_sum(rows[:n].reshape((n, 1)), 0, n)
        if total == 0.0:
            total = np.inf  # no valid row, or all their weights zero: contributes nothing
        factor, divisor = max(n, 1) / total, total * per_sample
    if compute_grad:
        for i in range(m):
            if _row_counted(i, m, lengths, per_step, labels, ignore_index):
                scale = like(target[i, w] * factor, grad)
                for j in range(grad.shape[1]):
                    grad[i, j] *= scale
    return value / divisor


@njit(**JIT_PARALLEL)
def weighted_cross_entropy(
    logits, target, grad, labels, rows, mean, compute_grad, lengths=None, per_step=1, ignore_index=None
):
    """Softmax cross-entropy with a weight per sample; returns the loss (float64), writes its gradient.

    logits (m, c) float32/float64, target (m, 2) float64 rows (label, weight), grad (m, c) of the
    logits' dtype (ignored when ``compute_grad`` is False), labels (>= m,) int64 and rows (>= m,)
    float64 scratch (written). :func:`_cross_entropy_block` gives each row's loss and the base
    gradient (:func:`cross_entropy_forward_backward`'s, bit for bit); row chunks in parallel only
    for a large batch (each row its own, so any thread count gives the same bits). With ``lengths``
    (batch,) int64 and ``per_step``, only the rows of valid steps count (the comment above; the labels
    of the others are not read); with ``ignore_index``, only the rows not labelled with it.
    """
    m, c = logits.shape
    for i in range(m):
        labels[i] = np.int64(target[i, 0])
    scale = like(1.0 / _labels_counted(m, labels, lengths, per_step, ignore_index) if mean else 1.0, logits)
    chunks = n_chunks(m, REDUCTION_CHUNK_ROWS)
    if m * c < PARALLEL_MIN_ELEMENTS:
        for ch in range(chunks):
            _cross_entropy_chunk(logits, labels, grad, scale, compute_grad, ch, lengths, per_step, ignore_index, rows)
    else:
        for ch_u in prange(chunks):
            _cross_entropy_chunk(
                logits, labels, grad, scale, compute_grad, np.int64(ch_u), lengths, per_step, ignore_index, rows
            )
    if lengths is None and ignore_index is None:
        return _weigh(m, target, grad, rows, 1, mean, compute_grad)
    return _weigh_valid(m, target, grad, rows, 1, mean, compute_grad, lengths, per_step, labels, ignore_index)


@njit(**JIT_INLINE)
def _weighted_elementwise_row(pred, base, grad, code, delta, scale, compute_grad, i, lengths, per_step):
    """Row ``i``'s loss (float64 sum of loss_term); grad[i] = loss_grad_term (elementwise_loss's rule);
    0 (gradient row 0) for a padded row with ``lengths`` (None: no test, pruned at compile time)."""
    if lengths is not None:
        if _padded_row(lengths, i, pred.shape[0], per_step, grad, compute_grad):
            return 0.0
    total = 0.0
    for j in range(pred.shape[1]):
        total += loss_term(code, pred[i, j], base[i, j], delta)
    if compute_grad:
        for j in range(pred.shape[1]):
            grad[i, j] = loss_grad_term(code, pred[i, j], base[i, j], delta, scale)
    return total


@njit(**JIT_PARALLEL)
def weighted_elementwise_loss(
    pred, target, grad, base, rows, code, delta, mean, compute_grad, lengths=None, per_step=1
):
    """Elementwise loss ``code`` with a weight per sample; returns the loss (float64), writes its gradient.

    pred, grad (m, k) float32/float64 (grad ignored when ``compute_grad`` is False), target (m, k + 1)
    float64 rows (k targets, weight), base (m, k) of pred's dtype and rows (>= m,) float64 scratch
    (written); ``delta`` is Huber's threshold. One pass per row gives the row's loss
    (:func:`elementwise_loss_rows`'s) and the base gradient (:func:`elementwise_loss`'s, bit for bit).
    With ``lengths`` (batch,) int64 and ``per_step``, only the rows of valid steps count (the comment
    above).
    """
    m, k = pred.shape
    for i in range(m):
        for j in range(k):
            base[i, j] = target[i, j]
    d = like(delta, pred)
    scale = 1.0 / (_rows_counted(m, lengths, per_step) * k) if mean else 1.0
    if m * k < PARALLEL_MIN_ELEMENTS:
        for i in range(m):
            rows[i] = _weighted_elementwise_row(pred, base, grad, code, d, scale, compute_grad, i, lengths, per_step)
    else:
        for i in prange(m):
            rows[i] = _weighted_elementwise_row(pred, base, grad, code, d, scale, compute_grad, i, lengths, per_step)
    if lengths is None:
        return _weigh(m, target, grad, rows, k, mean, compute_grad)
    return _weigh_valid(m, target, grad, rows, k, mean, compute_grad, lengths, per_step)


@njit(**JIT)
def weighted_accuracy_count(logits, target, lengths=None, per_step=1, ignore_index=None):
    """Number of rows i of logits (m, c) whose argmax (first maximum) equals the label target[i, 0]
    (weighted targets (m, 2) float64: label, weight); with ``lengths`` (batch,) int64 and
    ``per_step``, of the valid steps' rows only; with ``ignore_index``, of the rows not labelled
    with it (module docstring)."""
    m = logits.shape[0]
    hits = 0
    for i in range(m):
        if lengths is not None:
            if not row_is_valid(lengths, i, m // lengths.shape[0], per_step):
                continue
        if ignore_index is not None:
            if np.int64(target[i, 0]) == ignore_index:
                continue
        if row_argmax(logits, i) == np.int64(target[i, 0]):
            hits += 1
    return hits


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
    "cross_entropy_row",
    "cross_entropy_rows",
    "elementwise_loss",
    "elementwise_loss_rows",
    "loss_grad",
    "loss_grad_term",
    "loss_term",
    "loss_value",
    "n_partials",
    "weight_sum",
    "weighted_accuracy_count",
    "weighted_cross_entropy",
    "weighted_elementwise_loss",
]

#: the functions the object layer calls (fastnn.backend.kernels); the CUDA twin module has them too
DEVICE_API = (
    "cross_entropy_forward_backward",
    "elementwise_loss",
    "accuracy_count",
    "binary_accuracy_count",
    "n_partials",
)
